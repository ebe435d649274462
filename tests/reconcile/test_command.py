"""``binance-metrics reconcile`` after a replay of 48 hours of real XRPETH aggTrades: against
Binance's own klines of those minutes (a file), and against REST klines of the local exchange
(three pages, a 429 on the way)."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from binance_metrics.cli import main
from binance_metrics.reconcile.compare import FIELDS, Kline
from binance_metrics.reconcile.files import read_klines
from binance_metrics.recordings import read_recording
from binance_metrics.store.clickhouse import Store
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.klines import read_kline_rows
from binance_metrics.trades import TradeMessage
from tests.cli.support import error_line, run_cli
from tests.reconcile.support import store_klines
from tests.support.data import BTCUSDT_KLINES, XRPETH_AGG_TRADES, XRPETH_KLINES
from tests.support.oracle import reference_klines

START, END = "2019-10-11T00:00:00Z", "2019-10-13T00:00:00Z"
#: A busy minute (trades in it) of the recording: 2019-10-11T05:15Z.
MINUTE = 1570770900000
#: A minute without trades (it repeats the previous close).
QUIET = 1570752240000


def reconcile(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["reconcile", "--symbol", "xrpeth", "--format", "json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_replayed_bars_equal_binance_klines_file(
    xrpeth_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = reconcile(capsys, "--against", str(XRPETH_KLINES))
    assert (code, report["matched"]) == (0, 2880)
    assert report["fields"] == ["open", "high", "low", "close", "volume"]
    assert report["mismatched"] == report["missing_here"] == report["missing_there"] == []
    assert (report["start"], report["end"]) == (1570752000000, 1570752000000 + 2880 * 60_000)


def test_an_altered_bar_is_reported_with_its_minute_and_field(
    xrpeth_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    # A row of the same version written later wins (ReplacingMergeTree): one more unit of volume.
    xrpeth_store.command(
        "INSERT INTO binance.ohlcv (market, symbol, window_start, open, high, low, close, volume, "
        "quote_volume, trade_count, taker_buy_volume, taker_buy_quote_volume, first_trade_id, "
        "last_trade_id, trade_ids) SELECT market, symbol, window_start, open, high, low, close, "
        "volume + 1, quote_volume, trade_count, taker_buy_volume, taker_buy_quote_volume, "
        "first_trade_id, last_trade_id, trade_ids FROM binance.ohlcv FINAL "
        f"WHERE symbol = 'XRPETH' AND window_start = fromUnixTimestamp64Milli({MINUTE})"
    )
    binance = _binance_klines()[MINUTE]["volume"]
    code, report = reconcile(capsys, "--against", str(XRPETH_KLINES))
    assert code == 1
    assert report["mismatched"] == [
        {"open_time": MINUTE, "field": "volume", "ours": f"{Decimal(binance) + 1:.8f}",
         "binance": binance},
    ]  # fmt: skip
    assert (report["matched"], report["missing_here"], report["missing_there"]) == (2879, [], [])

    assert main(["reconcile", "--symbol", "XRPETH", "--against", str(XRPETH_KLINES)]) == 1
    table = capsys.readouterr().out
    assert "2879 equal, 1 differ (1 fields), 0 missing here" in table
    (row,) = [line for line in table.splitlines() if str(MINUTE) in line]
    assert row.split() == ["2019-10-11T05:15:00Z", str(MINUTE), "volume",
                           f"{Decimal(binance) + 1:.8f}", binance]  # fmt: skip


def test_a_deleted_bar_is_missing_here(
    xrpeth_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    xrpeth_store.command(
        "DELETE FROM binance.ohlcv WHERE symbol = 'XRPETH' "
        f"AND window_start = fromUnixTimestamp64Milli({QUIET})"
    )
    code, report = reconcile(capsys, "--against", str(XRPETH_KLINES))
    assert code == 1
    assert (report["matched"], report["mismatched"], report["missing_here"]) == (2879, [], [QUIET])
    assert report["missing_there"] == []


def test_rest_klines_paged_over_2880_minutes_with_a_429_honoured(
    xrpeth_store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _kline_rows_of_the_trades()
    with LocalExchange([], klines={"XRPETH": rows}, rest_errors=[(429, 0.5)]) as exchange:
        monkeypatch.setenv("BINANCE_REST_URL", exchange.rest_url)
        code, report = reconcile(capsys, "--start", START, "--end", END, "--against", "rest")
    assert (code, report["matched"], report["fields"]) == (0, 2880, list(FIELDS))
    assert report["mismatched"] == report["missing_here"] == report["missing_there"] == []
    calls = exchange.log.klines_calls
    assert [call.status for call in calls] == [429, 200, 200, 200]
    assert calls[1].time - calls[0].time >= 0.5, "Retry-After was not honoured"
    queries = [parse_qs(call.query) for call in calls[1:]]
    # Each page starts just after the last open time of the one before.
    first = 1570752000000
    assert [int(q["startTime"][0]) for q in queries] == [
        first,
        first + 999 * 60_000 + 1,
        first + 1999 * 60_000 + 1,
    ]
    assert all(q["limit"] == ["1000"] and q["endTime"] == ["1570924799999"] for q in queries)


@pytest.mark.parametrize(
    ("market", "path", "fields"),
    [
        ("um", "/fapi/v1/klines", FIELDS),
        # COIN-M's "quote" columns are base-asset volumes: compared with the bars' own.
        ("cm", "/dapi/v1/klines", FIELDS),
    ],
)
def test_futures_markets_ask_their_path_and_compare_their_fields(
    empty_store: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    market: str, path: str, fields: tuple[str, ...],
) -> None:  # fmt: skip
    monkeypatch.setenv("CLICKHOUSE_URL", empty_store.dsn)
    klines = read_klines([BTCUSDT_KLINES])
    if market == "cm":  # the bars' base-asset volumes are what COIN-M's "quote" columns hold
        klines = [
            Kline(k.open_time_ms, {**k.values, "quote_volume": 0, "taker_buy_quote_volume": 0,
                                   "base_volume": k.values["quote_volume"],
                                   "taker_buy_base_volume": k.values["taker_buy_quote_volume"]})
            for k in klines
        ]  # fmt: skip
    store_klines(empty_store.in_market(market), "BTCUSDT", klines)  # type: ignore[arg-type]
    with LocalExchange([], klines={"BTCUSDT": read_kline_rows(BTCUSDT_KLINES)}) as exchange:
        code = main(["reconcile", "--symbol", "BTCUSDT", "--market", market, "--rest-url",
                     exchange.rest_url, "--start", "2020-01-01", "--end", "2020-01-02",
                     "--format", "json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert (code, report["matched"], tuple(report["fields"])) == (0, 1440, fields)
    assert report["against"] == exchange.rest_url + path
    assert {call.path for call in exchange.log.klines_calls} == {path}


def _binance_klines() -> dict[int, dict[str, str]]:
    with XRPETH_KLINES.open() as f:
        return {int(row["open_time"]): row for row in csv.DictReader(f)}


def _kline_rows_of_the_trades() -> list[list[str]]:
    """12-column kline rows of the XRPETH trades, from the tests' plain Decimal reference (not
    from the project's bars), each checked against Binance's own klines where those have the
    field, and printed with Binance's 8 decimals (exact: no XRPETH value has more)."""
    trades = [r for r in read_recording(XRPETH_AGG_TRADES) if isinstance(r, TradeMessage)]
    binance = _binance_klines()
    rows = []
    for (_, start), fields in sorted(reference_klines(trades).items()):
        for name in ("open", "high", "low", "close", "volume"):
            assert fields[name] == Decimal(binance[start][name])
        text = {
            name: str(value) if name == "trade_count" else f"{value:.8f}"
            for name, value in fields.items()
        }
        assert all(Decimal(text[name]) == fields[name] for name in text)
        rows.append(
            [str(start), text["open"], text["high"], text["low"], text["close"], text["volume"],
             str(start + 59_999), text["quote_volume"], text["trade_count"],
             text["taker_buy_volume"], text["taker_buy_quote_volume"], "0"]
        )  # fmt: skip
    assert len(rows) == 2880
    return rows


def test_usage_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    other = tmp_path / "BTCUSDT-1m-2020-01-01.csv"
    other.write_text("1577836800000,1,1,1,1,1,1577836859999,1,1,1,1,0\n")
    cases = {
        ("--symbol", "XRPETH"): "--against rest needs --start and --end",
        ("--symbol", "XRPETH", "--against", str(tmp_path / "nope.csv")): "no such file",
        ("--symbol", "XRPETH", "--against", str(other)): "its name says BTCUSDT 1m",
        ("--symbol", "XRPETH", "--against", "rest", str(other)): "not both",
        ("--symbol", "XRPETH", "--start", END, "--end", START): "must be before --end",
        ("--symbol", "XRPETH", "--format", "csv"): "invalid choice",
        (
            "--symbol",
            "XRPETH",
            "--start",
            START,
            "--end",
            END,
            "--rest-url",
            "fapi.binance.com",
        ): "--rest-url must start with",
    }
    for args, words in cases.items():
        line = error_line(run_cli(tmp_path, "reconcile", *args), 2)
        assert words in line, (args, line)


@pytest.mark.usefixtures("xrpeth_store")
def test_bars_in_binance_format_read_back_by_reconcile_are_equal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``bars --format binance`` round-trips: written, read back by ``reconcile``, equal."""
    written = tmp_path / "XRPETH-1m-2019-10-11.csv"
    bars = ["bars", "--symbol", "XRPETH", "--format", "binance", "--output", str(written)]
    assert main(bars) == 0
    capsys.readouterr()
    code, report = reconcile(capsys, "--start", START, "--end", END, "--against", str(written))
    assert code == 0, report
    assert (report["matched"], report["mismatched"]) == (2880, [])
    assert (report["missing_here"], report["missing_there"]) == ([], [])
