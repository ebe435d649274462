"""Grafana draws the forming bar: the candle and volume panels end on it while no closed bar of
its minute exists, and never show a forming version of a closed minute (run on chDB)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_support import DASHBOARD, run_chdb
from tests.deploy.test_deploy_grafana import FROM, T0, TO, _insert, expand_macros, expand_variables


def _forming(symbol: str, minute: int, close: str, volume: str) -> str:
    """A forming row, from the bars-table insert of the same values (its columns but the ids
    runs and ``written_at``)."""
    row = _insert(symbol, T0 + timedelta(minutes=minute), Decimal(100), Decimal(close) + 1,
                  Decimal(99), Decimal(close), Decimal(volume), 5, T0)  # fmt: skip
    values = row.removeprefix("INSERT INTO binance.ohlcv VALUES (").removesuffix(")")
    head = values.rsplit(", [", 1)[0]  # drop the trade-id runs and written_at
    return f"INSERT INTO binance.ohlcv_forming (market, symbol, window_start, open, high, low, " \
        f"close, volume, quote_volume, trade_count, taker_buy_volume, taker_buy_quote_volume, " \
        f"base_volume, taker_buy_base_volume, first_trade_id, last_trade_id) " \
        f"VALUES ({head})"  # fmt: skip


def test_candles_and_volume_end_on_the_forming_bar_only_while_its_minute_is_open(
    tmp_path: Path,
) -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    setup = [
        _insert("BTCUSDT", T0 + timedelta(minutes=m), Decimal(100), Decimal(101), Decimal(99),
                Decimal(100), Decimal(1), 3, T0) for m in range(3)
    ]  # fmt: skip
    setup += [
        _forming("BTCUSDT", 3, "123.5", "7.25"),  # newer than the last closed bar: shown
        _forming("ETHUSDT", 0, "9", "1"),  # ETHUSDT has no closed bar: shown for it
    ]
    queries = {}
    for panel in dashboard["panels"]:
        if panel["id"] in (1, 2):
            for symbol in ("BTCUSDT", "ETHUSDT"):
                variables = {"market": ("spot", "spot"), "symbol": (symbol, symbol),
                             "interval": ("1m", "1m")}  # fmt: skip
                sql = expand_variables(panel["targets"][0]["rawSql"], variables)
                queries[f"{panel['id']}:{symbol}"] = expand_macros(sql, FROM, TO)
    results = run_chdb(tmp_path / "store", setup, queries)
    candles = results["1:BTCUSDT"]
    assert "error" not in candles, candles
    assert [row[4] for row in candles["rows"]] == ["100.0", "100.0", "100.0", "123.5"]
    assert [row[1] for row in results["2:BTCUSDT"]["rows"]][-1] == "7.25"  # volume
    assert [row[4] for row in results["1:ETHUSDT"]["rows"]] == ["9.0"]

    # Once the minute has closed, its forming version is gone from the chart.
    closed = _insert("BTCUSDT", T0 + timedelta(minutes=3), Decimal(100), Decimal(130),
                     Decimal(99), Decimal(120), Decimal(8), 9, T0)  # fmt: skip
    again = run_chdb(tmp_path / "again", [*setup, closed], {"1": queries["1:BTCUSDT"]})
    assert [row[4] for row in again["1"]["rows"]] == ["100.0", "100.0", "100.0", "120.0"]


@pytest.mark.parametrize("panel_id", [1, 2])
def test_the_forming_arm_reads_only_minutes(panel_id: int) -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (panel,) = [p for p in dashboard["panels"] if p["id"] == panel_id]
    sql = panel["targets"][0]["rawSql"]
    arm = sql[sql.index("FROM binance.ohlcv_forming FINAL") :]
    assert "${interval:sqlstring} = '1m'" in arm.split("UNION ALL")[0]
