"""``binance-metrics audit`` as a user runs it, on the real recordings replayed into the store.

Each command runs in its own process on the same DATA_DIR (chDB serves a directory to one
process at a time); a test that damages the table works on a copy of the replayed store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from binance_metrics.recordings import read_recording
from binance_metrics.trades import TradeMessage
from tests.cli.support import error_line, on_the_store, run_cli
from tests.support.data import (
    BTCUSDT_CAPTURE,
    BTCUSDT_FUTURES_CAPTURE,
    ETHUSDT_CAPTURE,
    INSURANCE_FUND_TRADE_ID,
    XRPETH_AGG_TRADES,
)

MINUTE_MS = 60_000
#: The busiest XRPETH minute: 230 aggTrades, 246 raw trades.
XRPETH_BUSIEST = 1_570_770_900_000
BTCUSDT_MIDNIGHT = 1_723_161_600_000  # 2024-08-09T00:00Z
HOLE_KEYS = {
    "symbol", "kind", "first_missing_id", "last_missing_id", "missing_trades",
    "first_minute_ms", "last_minute_ms", "first_minute", "last_minute",
}  # fmt: skip


def _trades(path: Path) -> list[TradeMessage]:
    return [r for r in read_recording(path) if isinstance(r, TradeMessage)]


def _minute_of_id(trades: list[TradeMessage], trade_id: int) -> int:
    (trade,) = [t for t in trades if t.trade_id <= trade_id <= t.last_trade_id]
    return trade.trade_time_ms // MINUTE_MS * MINUTE_MS


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DATA_DIR holding the real recordings, replayed: 48 h of XRPETH aggTrades, 11 minutes of
    BTCUSDT and ETHUSDT raw trades."""
    cwd = tmp_path_factory.mktemp("replayed")
    for path in (XRPETH_AGG_TRADES, BTCUSDT_CAPTURE, ETHUSDT_CAPTURE):
        result = run_cli(cwd, "replay", str(path))
        assert result.returncode == 0, result.stderr[-3000:]
    return cwd


def _copy(replayed: Path, tmp_path: Path) -> Path:
    shutil.copytree(replayed / "data", tmp_path / "data", symlinks=True)
    return tmp_path


def _audit_json(cwd: Path, *args: str) -> tuple[int, list[dict[str, object]]]:
    result = run_cli(cwd, "audit", "--format", "json", *args)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    holes: list[dict[str, object]] = json.loads(result.stdout)
    return result.returncode, holes


def test_the_replayed_recordings_are_complete(replayed: Path) -> None:
    result = run_cli(replayed, "audit")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "complete: every trade id between the stored bars is counted once\n"
    assert _audit_json(replayed) == (0, [])


def test_a_deleted_bar_is_reported_as_exactly_its_ids(replayed: Path, tmp_path: Path) -> None:
    cwd = _copy(replayed, tmp_path)
    trades = _trades(XRPETH_AGG_TRADES)
    minute = [t for t in trades if t.trade_time_ms // MINUTE_MS * MINUTE_MS == XRPETH_BUSIEST]
    first, last = minute[0].trade_id, minute[-1].last_trade_id
    assert sum(t.trade_count for t in minute) == last - first + 1 == 246
    on_the_store(
        cwd,
        "DELETE FROM binance.ohlcv WHERE symbol = 'XRPETH' AND window_start = "
        f"fromUnixTimestamp64Milli({XRPETH_BUSIEST})",
    )

    code, holes = _audit_json(cwd)
    before, after = _minute_of_id(trades, first - 1), _minute_of_id(trades, last + 1)
    assert before < XRPETH_BUSIEST < after
    assert code == 1
    assert holes == [
        {
            "symbol": "XRPETH", "kind": "gap", "first_missing_id": first,
            "last_missing_id": last, "missing_trades": 246,
            "first_minute_ms": before, "last_minute_ms": after,
            "first_minute": "2019-10-11T05:14:00Z", "last_minute": "2019-10-11T05:16:00Z",
        }
    ]  # fmt: skip
    assert set(holes[0]) == HOLE_KEYS

    table = run_cli(cwd, "audit")
    assert table.returncode == 1, table.stderr[-3000:]
    header, row, summary = table.stdout.splitlines()
    assert header.split() == [
        "symbol", "kind", "first_missing_id", "last_missing_id", "missing_trades",
        "first_minute", "last_minute",
    ]  # fmt: skip
    assert row.split() == [
        "XRPETH", "gap", str(first), str(last), "246",
        "2019-10-11T05:14:00Z", "2019-10-11T05:16:00Z",
    ]  # fmt: skip
    assert summary == "1 holes: 246 trades missing, 0 counted twice"

    # The other symbols are complete, and so are the minutes around the hole taken alone.
    assert _audit_json(cwd, "--symbol", "btcusdt") == (0, [])
    assert _audit_json(cwd, "--start", "2019-10-11T05:16") == (0, [])
    assert _audit_json(cwd, "--end", "2019-10-11T05:15") == (0, [])
    assert _audit_json(cwd, "--start", "2019-10-11T05:10", "--end", "2019-10-11T05:20")[1] == holes


def test_a_trade_counted_by_two_bars_is_an_overlap(replayed: Path, tmp_path: Path) -> None:
    cwd = _copy(replayed, tmp_path)
    trades = _trades(BTCUSDT_CAPTURE)
    first = min(t.trade_id for t in trades if t.trade_time_ms >= BTCUSDT_MIDNIGHT)
    # The 00:00 bar, written again counting the last trade of 23:59 as well.
    columns = (
        "market, symbol, window_start, open, high, low, close, volume, quote_volume, "
        "trade_count, taker_buy_volume, taker_buy_quote_volume, first_trade_id, last_trade_id, "
        "trade_ids"
    )
    on_the_store(
        cwd,
        f"INSERT INTO binance.ohlcv ({columns}) SELECT market, symbol, window_start, open, high, "
        "low, close, volume, quote_volume, trade_count + 1, taker_buy_volume, "
        "taker_buy_quote_volume, first_trade_id - 1, last_trade_id, "
        "[(first_trade_id - 1, last_trade_id)] FROM binance.ohlcv FINAL WHERE symbol = "
        f"'BTCUSDT' AND window_start = fromUnixTimestamp64Milli({BTCUSDT_MIDNIGHT})",
    )

    code, holes = _audit_json(cwd)
    assert code == 1
    assert holes == [
        {
            "symbol": "BTCUSDT", "kind": "overlap", "first_missing_id": first - 1,
            "last_missing_id": first - 1, "missing_trades": 1,
            "first_minute_ms": BTCUSDT_MIDNIGHT - MINUTE_MS, "last_minute_ms": BTCUSDT_MIDNIGHT,
            "first_minute": "2024-08-08T23:59:00Z", "last_minute": "2024-08-09T00:00:00Z",
        }
    ]  # fmt: skip


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    line = error_line(run_cli(tmp_path, "audit", "--format", "csv"), 2)
    assert "--format" in line and "'csv'" in line, line
    line = error_line(
        run_cli(tmp_path, "audit", "--start", "2024-08-09T01:00", "--end", "2024-08-09"), 2
    )
    assert line.startswith("binance-metrics: --start (2024-08-09T01:00:00+00:00) must be"), line


def test_a_futures_trade_klines_exclude_is_accounted_for_not_missing(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "replay", str(BTCUSDT_FUTURES_CAPTURE))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not a market trade (X=INSURANCE_FUND)" in result.stderr
    assert _audit_json(tmp_path) == (0, [])

    # Without its record in the ledger, the dead-lettered trade's id would be a hole.
    on_the_store(tmp_path, "TRUNCATE TABLE binance.accounted_trades")
    minute = 1_680_652_860_000  # 2023-04-05T00:01Z: the trade and its neighbours
    assert _audit_json(tmp_path) == (
        1,
        [
            {
                "symbol": "BTCUSDT", "kind": "gap",
                "first_missing_id": INSURANCE_FUND_TRADE_ID,
                "last_missing_id": INSURANCE_FUND_TRADE_ID, "missing_trades": 1,
                "first_minute_ms": minute, "last_minute_ms": minute,
                "first_minute": "2023-04-05T00:01:00Z", "last_minute": "2023-04-05T00:01:00Z",
            }
        ],
    )  # fmt: skip
