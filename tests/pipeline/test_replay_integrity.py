"""Ordinary mishaps of input never corrupt a stored bar: `replay` into chDB, by both paths.

Each case runs through the history path with chunks of 64 KiB (so that minutes straddle chunks
and a row moved to the end arrives late) and through Tansu and the dataflow
(``through_kafka``). Each is judged by the plain reference (tests/support/oracle.py) on every
field, and the real XRPETH cases by Binance's own klines as well.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from binance_metrics import columnar_reader
from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.recordings import read_recording
from binance_metrics.replay import ReplaySummary, replay
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars
from binance_metrics.trades import TradeMessage, now_ms
from tests.support.data import XRPETH_AGG_TRADES, XRPETH_KLINES
from tests.support.oracle import FIELDS, MINUTE_MS, reference_klines
from tests.support.pipeline import pipeline_settings

ROWS = XRPETH_AGG_TRADES.read_text().splitlines()
TRADES = [r for r in read_recording(XRPETH_AGG_TRADES) if isinstance(r, TradeMessage)]


def write(directory: Path, rows: list[str], name: str = XRPETH_AGG_TRADES.name) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("\n".join(rows) + "\n")
    return path


Run = Callable[[list[Path], EmbeddedBroker, Store, str], ReplaySummary]


@pytest.fixture(params=["history", "kafka"])
def run(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``replay`` through the history path (64 KiB chunks) or through Kafka."""
    through_kafka = request.param == "kafka"
    if not through_kafka:
        monkeypatch.setattr(columnar_reader, "CHUNK_BYTES", 64 * 1024)

    def replay_files(
        paths: list[Path], broker: EmbeddedBroker, store: Store, prefix: str
    ) -> ReplaySummary:
        settings = pipeline_settings(broker, store, prefix)
        return replay(paths, settings, through_kafka=through_kafka)

    return replay_files


def stored(store: Store, symbol: str) -> dict[int, dict[str, Any]]:
    return {
        bar.open_time_ms: {name: getattr(bar, name) for name in FIELDS}
        for bar in fetch_bars(store, symbol)
    }


def expected(trades: list[TradeMessage]) -> dict[int, dict[str, Any]]:
    return {start: kline for (_, start), kline in reference_klines(trades).items()}


def assert_binance_klines(bars: dict[int, dict[str, Any]]) -> None:
    with XRPETH_KLINES.open() as f:
        klines = list(csv.DictReader(f))
    assert len(bars) == len(klines) == 2880
    for kline in klines:
        bar = bars[int(kline["open_time"])]
        for name in ("open", "high", "low", "close", "volume"):
            assert bar[name] == Decimal(kline[name]), (kline["open_time"], name)


def test_the_first_row_moved_to_the_end(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str, run: Run
) -> None:
    # Its minute is 2,879 minutes behind when it arrives: beyond the dataflow's 1,440.
    path = write(tmp_path, [*ROWS[1:], ROWS[0]])
    summary = run([path], broker, empty_store, topic_prefix)
    assert summary.trades == 11_884 and summary.late_trades >= 1
    bars = stored(empty_store, "XRPETH")
    assert bars == expected(TRADES)
    assert_binance_klines(bars)


def test_a_file_twice_and_overlapping_files_count_each_trade_once(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str, run: Run
) -> None:
    twice = run([XRPETH_AGG_TRADES, XRPETH_AGG_TRADES], broker, empty_store, topic_prefix)
    assert twice.duplicate_trades == 11_884
    assert stored(empty_store, "XRPETH") == expected(TRADES)

    empty_store.command("TRUNCATE TABLE binance.ohlcv")
    cut = len(ROWS) * 2 // 10
    first = write(tmp_path / "a", ROWS[: len(ROWS) - cut])  # overlap: 20 % of the rows
    second = write(tmp_path / "b", ROWS[len(ROWS) - 2 * cut :])
    run([first, second], broker, empty_store, topic_prefix)
    bars = stored(empty_store, "XRPETH")
    assert bars == expected(TRADES)
    assert_binance_klines(bars)


def test_a_clean_rerun_repairs_a_bar_that_counted_trades_twice(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str, run: Run
) -> None:
    minute = TRADES[0].trade_time_ms // MINUTE_MS * MINUTE_MS
    doubled = Bar()
    for trade in [t for t in TRADES if t.trade_time_ms // MINUTE_MS * MINUTE_MS == minute] * 2:
        doubled.add_trade(trade)
    empty_store.insert_bars([BarUpdate("XRPETH", minute, doubled)])
    run([XRPETH_AGG_TRADES], broker, empty_store, topic_prefix)
    assert stored(empty_store, "XRPETH") == expected(TRADES)


def trade_row(trade_id: int, time_ms: int, price: str = "1.00000000") -> str:
    """A data.binance.vision ``trades`` row."""
    return f"{trade_id},{price},2.00000000,{price},{time_ms},true,true"


def test_a_late_trade_far_beyond_the_history_merges_into_its_stored_bar(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str, run: Run
) -> None:
    start = 1_723_161_600_000
    rows = [trade_row(2 * i, start + i * MINUTE_MS + 1000) for i in range(3000)]
    rows.append(trade_row(201, start + 100 * MINUTE_MS + 2000, "1.50000000"))
    path = write(tmp_path, rows, "TESTUSDT-trades.csv")
    run([path], broker, empty_store, topic_prefix)
    trades = [r for r in read_recording(path) if isinstance(r, TradeMessage)]
    bars = stored(empty_store, "TESTUSDT")
    assert bars == expected(trades)
    assert bars[start + 100 * MINUTE_MS]["trade_count"] == 2
    assert sum(bar["trade_count"] == 0 for bar in bars.values()) == 0


def test_impossible_values_are_dead_letters_and_the_rest_is_exact(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str, run: Run
) -> None:
    start = 1_723_161_600_000
    good = [trade_row(10 + i, start + i * 20_000) for i in range(30)]
    bad = [
        trade_row(100, 253_402_300_800_000 // 1000 * 1000 - 1),  # the year 10000 (in µs: 1978)
        trade_row(101, start, "10000000000000000000000000.00000000"),  # a price of 1e25
        trade_row(102, now_ms() + 86_400_000),  # a day in the future
        trade_row(103, start - 9 * 365 * 86_400_000),  # nine years back: before Binance
    ]
    path = write(tmp_path, [*good[:10], *bad, *good[10:]], "TESTUSDT-trades.csv")
    summary = run([path], broker, empty_store, topic_prefix)
    assert summary.bad_records + summary.rejected == len(bad)
    trades = [r for r in read_recording(path) if isinstance(r, TradeMessage)]
    assert stored(empty_store, "TESTUSDT") == expected([t for t in trades if t.trade_id < 100])


def test_a_trade_a_year_back_gets_its_bar_and_fills_nothing(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str, run: Run
) -> None:
    start = 1_723_161_600_000
    rows = [trade_row(1000 + i, start + i * 30_000) for i in range(20)]
    year_back = start - 365 * 86_400_000
    rows.append(trade_row(5, year_back))  # its id is older, as it would be
    path = write(tmp_path, rows, "TESTUSDT-trades.csv")
    run([path], broker, empty_store, topic_prefix)
    bars = stored(empty_store, "TESTUSDT")
    trades = [r for r in read_recording(path) if isinstance(r, TradeMessage)]
    recent = expected([t for t in trades if t.trade_time_ms >= start])
    assert {k: v for k, v in bars.items() if k >= start} == recent
    # The old trade's minute has its bar; the year between is not filled (525,600 rows).
    assert {k: v for k, v in bars.items() if k < start} == expected(
        [t for t in trades if t.trade_time_ms < start]
    )
