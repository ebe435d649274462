"""1-second bars (``WINDOW_SECONDS=1``): recorded trades through the real broker, the dataflow and
the real store into ``binance.ohlcv_1s``; the 1s bars, and every interval rolled up from them,
equal bars computed straight from the trades, and their 1m equals the 1-minute table's."""

from __future__ import annotations

import functools
import uuid

import pytest

from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.recordings import read_recording
from binance_metrics.replay import replay
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars, intervals_for, list_symbols
from binance_metrics.trades import TradeMessage
from tests.support.data import BTCUSDT_CAPTURE
from tests.support.oracle import (
    FIELDS,
    reference_klines,
    reference_open_time,
    reference_window_ms,
)
from tests.support.pipeline import pipeline_settings


@functools.cache
def _trades() -> tuple[TradeMessage, ...]:
    return tuple(r for r in read_recording(BTCUSDT_CAPTURE) if isinstance(r, TradeMessage))


def _fields(bar: object) -> dict[str, object]:
    return {name: getattr(bar, name) for name in FIELDS}


@pytest.fixture(scope="module")
def both_tables(store: Store, broker: EmbeddedBroker) -> Store:
    """The capture replayed twice into the session store: as 1-minute and as 1-second bars."""
    store.command("TRUNCATE TABLE binance.ohlcv")
    store.command("TRUNCATE TABLE binance.ohlcv_1s")
    for seconds in (60, 1):
        prefix = f"t{uuid.uuid4().hex[:10]}"
        settings = pipeline_settings(broker, store, prefix, WINDOW_SECONDS=seconds)
        assert replay([BTCUSDT_CAPTURE], settings).trades == 19_904
    return store


def test_1s_bars_equal_the_trades_second_by_second(both_tables: Store) -> None:
    expected = reference_klines(_trades(), window_ms=1000)
    stored = fetch_bars(both_tables, "BTCUSDT", interval="1s", bar_seconds=1)
    assert len(stored) == len(expected) > 600  # 11 minutes, seconds without trades filled
    for bar in stored:
        assert _fields(bar) == expected[("BTCUSDT", bar.open_time_ms)], bar.open_time
    assert list_symbols(both_tables, bar_seconds=1) == ["BTCUSDT"]


def test_1m_from_the_1s_bars_equals_the_1m_table(both_tables: Store) -> None:
    from_seconds = fetch_bars(both_tables, "BTCUSDT", interval="1m", bar_seconds=1)
    from_minutes = fetch_bars(both_tables, "BTCUSDT", interval="1m")
    assert len(from_minutes) == 12
    # Every kline field equal (a rollup carries no trade ids: those stay with the stored bars).
    assert [(b.open_time, _fields(b)) for b in from_seconds] == [
        (b.open_time, _fields(b)) for b in from_minutes
    ]


@pytest.mark.parametrize("interval", [i for i in intervals_for(1) if i not in ("1s", "1m")])
def test_every_interval_from_the_1s_bars_equals_the_trades(
    both_tables: Store, interval: str
) -> None:
    expected = reference_klines(
        _trades(),
        window_ms=reference_window_ms(interval),
        open_time=lambda t: reference_open_time(t, interval, 20_700_000),  # +05:45
    )
    stored = fetch_bars(
        both_tables, "BTCUSDT", interval=interval, bar_seconds=1, tz_offset_ms=20_700_000
    )
    assert {b.open_time_ms: _fields(b) for b in stored} == {
        start: fields for (_, start), fields in expected.items()
    }
