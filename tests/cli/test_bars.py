"""``binance-metrics bars``: CSV with Binance's columns, plain decimals, JSON and table."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.cli import CSV_HEADER, main
from binance_metrics.store.clickhouse import Store

MINUTE = 60_000
T0 = 1_723_161_600_000


@pytest.fixture
def stored(empty_store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CLICKHOUSE_URL", empty_store.dsn)
    tiny = Bar().add(price=1, qty=10**17, first_id=7, last_id=9, buyer_is_maker=False)
    big = Bar().add(price=6_183_763_000_000, qty=2_000_000, first_id=10, last_id=10,
                    buyer_is_maker=True)  # fmt: skip
    empty_store.insert_bars(
        [
            BarUpdate("SHIBUSDT", T0, tiny),
            BarUpdate("SHIBUSDT", T0 + MINUTE, Bar.filler(1)),
            BarUpdate("SHIBUSDT", T0 + 2 * MINUTE, big),
        ]
    )
    return empty_store


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["bars", "--symbol", "shibusdt", *args]) == 0
    return capsys.readouterr().out


def test_csv_has_binance_columns_and_plain_decimals(
    stored: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = list(csv.reader(io.StringIO(run(capsys))))
    assert tuple(rows[0]) == CSV_HEADER == (
        "open_time", "open", "high", "low", "close", "volume", "quote_volume", "trade_count",
        "taker_buy_volume", "taker_buy_quote_volume",
    )  # fmt: skip
    assert rows[1] == [str(T0), "0.00000001", "0.00000001", "0.00000001", "0.00000001",
                       "1000000000.00000000", "10.00000000", "3", "1000000000.00000000",
                       "10.00000000"]  # fmt: skip
    assert rows[2][1:8] == ["0.00000001"] * 4 + ["0.00000000", "0.00000000", "0"]
    assert rows[3][6] == "1236.75260000"
    assert not any("E" in cell for row in rows[1:] for cell in row)


def test_range_json_and_table(stored: Store, capsys: pytest.CaptureFixture[str]) -> None:
    bars = json.loads(run(capsys, "--format", "json", "--start", "2024-08-09T00:01:00Z"))
    assert [b["open_time"] for b in bars] == [T0 + MINUTE, T0 + 2 * MINUTE]
    table = run(capsys, "--format", "table", "--end", "2024-08-09T00:01")
    assert len(table.splitlines()) == 2 and "open_time" in table
    assert json.loads(run(capsys, "--format", "json", "--interval", "5m"))[0]["trade_count"] == 4


def test_a_store_open_in_another_process_gives_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    env.pop("CLICKHOUSE_URL", None)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from binance_metrics.store.clickhouse import "
         f"open_store; open_store('chdb://{tmp_path / 'clickhouse'}'); print('open', flush=True);"
         " time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        result = subprocess.run(
            [sys.executable, "-m", "binance_metrics.cli", "bars", "--symbol", "BTCUSDT"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert "is open in another process" in result.stderr
    assert "Traceback" not in result.stderr
