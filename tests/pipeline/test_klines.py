"""Bars equal Binance's klines end to end: recorded trades -> the real broker (Tansu) -> the
dataflow -> the real ClickHouse engine (chDB), read back as 1-minute bars and as rollups."""

from __future__ import annotations

import csv
import functools
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from binance_metrics.intervals import parse_offset
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.recordings import read_recording
from binance_metrics.replay import replay
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars, intervals_for
from binance_metrics.trades import TradeMessage
from tests.support.data import BTCUSDT_CAPTURE, ETHUSDT_CAPTURE, XRPETH_AGG_TRADES, XRPETH_KLINES
from tests.support.oracle import (
    FIELDS,
    reference_klines,
    reference_open_time,
    reference_window_ms,
)
from tests.support.pipeline import pipeline_settings

CAPTURES = [BTCUSDT_CAPTURE, ETHUSDT_CAPTURE]


def table(store: Store, symbol: str) -> list[tuple[object, ...]]:
    return [tuple(vars_of(bar)) for bar in fetch_bars(store, symbol)]


def vars_of(bar: object) -> list[object]:
    return [getattr(bar, name) for name in ("open_time_ms", *FIELDS)]


def test_replay_equals_binance_klines_for_all_2880_minutes(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    summary = replay([XRPETH_AGG_TRADES], pipeline_settings(broker, empty_store, topic_prefix))
    assert (summary.messages, summary.trades, summary.bad_records) == (10_063, 11_884, 0)

    stored = {bar.open_time_ms: bar for bar in fetch_bars(empty_store, "XRPETH")}
    with XRPETH_KLINES.open() as f:
        klines = list(csv.DictReader(f))
    assert len(klines) == len(stored) == 2880
    zero_minutes = 0
    for kline in klines:
        bar = stored[int(kline["open_time"])]
        for name in ("open", "high", "low", "close", "volume"):
            assert getattr(bar, name) == Decimal(kline[name]), (kline["open_time"], name)
        zero_minutes += bar.trade_count == 0
    assert zero_minutes == 885
    # The busiest minute: 230 aggTrades, 246 raw trades.
    busiest = stored[1570770900000]
    assert (busiest.trade_count, busiest.quote_volume, busiest.taker_buy_volume) == (
        246, Decimal("99.11133373"), Decimal("67665"),
    )  # fmt: skip


def test_replay_of_live_capture_matches_reference_on_every_field_and_is_idempotent(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    settings = pipeline_settings(broker, empty_store, topic_prefix)
    first = replay(CAPTURES, settings)
    assert first.trades == 19_904 + 14_515
    after_one = {s: table(empty_store, s) for s in ("BTCUSDT", "ETHUSDT")}

    trades = [r for path in CAPTURES for r in read_recording(path)]
    assert all(isinstance(t, TradeMessage) for t in trades)
    expected = reference_klines(t for t in trades if isinstance(t, TradeMessage))
    for (symbol, start), fields in expected.items():
        (bar,) = fetch_bars(empty_store, symbol, start=_utc(start), end=_utc(start + 60_000))
        assert {name: getattr(bar, name) for name in FIELDS} == fields, (symbol, start)
    assert sum(len(rows) for rows in after_one.values()) == len(expected)

    replay(CAPTURES, settings)
    assert {s: table(empty_store, s) for s in ("BTCUSDT", "ETHUSDT")} == after_one


@functools.cache
def _xrpeth_trades() -> tuple[TradeMessage, ...]:
    return tuple(r for r in read_recording(XRPETH_AGG_TRADES) if isinstance(r, TradeMessage))


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@pytest.mark.parametrize("offset", ["0", "+08:00", "+05:45", "-03:30"])
@pytest.mark.parametrize("interval", intervals_for(60))
def test_rollups_equal_bars_computed_directly_from_the_trades(
    broker: EmbeddedBroker, store: Store, topic_prefix: str, interval: str, offset: str
) -> None:
    if len(fetch_bars(store, "XRPETH")) != 2880:  # one replay serves all the parameters
        store.command("TRUNCATE TABLE binance.ohlcv")
        replay([XRPETH_AGG_TRADES], pipeline_settings(broker, store, topic_prefix))
    offset_ms = parse_offset(offset)
    expected = reference_klines(
        _xrpeth_trades(),
        window_ms=reference_window_ms(interval),
        open_time=lambda t: reference_open_time(t, interval, offset_ms),
    )
    stored = fetch_bars(store, "XRPETH", interval=interval, tz_offset_ms=offset_ms)
    assert [bar.open_time_ms for bar in stored] == sorted(start for _, start in expected)
    for bar in stored:
        fields = expected[("XRPETH", bar.open_time_ms)]
        assert {name: getattr(bar, name) for name in FIELDS} == fields, (interval, bar.open_time)
