"""Binance's intervals in Python: the grid, close times and ``timeZone`` offsets, checked against
calendar arithmetic (tests/support/oracle.py) and against Binance's own klines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.intervals import INTERVALS, format_offset, parse_offset
from tests.support.oracle import INTERVAL_UNITS, reference_open_time

#: 2017-07-01 to 2035-01-01: Binance's history and then some.
TIMES = st.integers(1_498_867_200_000, 2_051_222_400_000)
#: Every offset Binance takes is whole minutes from -12:00 to +14:00.
OFFSETS = st.integers(-12 * 60, 14 * 60).map(lambda minutes: minutes * 60_000)


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_every_binance_interval_is_there_in_binance_order() -> None:
    assert list(INTERVALS) == list(INTERVAL_UNITS) == [
        "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h",
        "1d", "3d", "1w", "1M",
    ]  # fmt: skip


@given(time_ms=TIMES, offset_ms=OFFSETS, name=st.sampled_from(list(INTERVALS)))
def test_open_and_close_times_agree_with_the_calendar(
    time_ms: int, offset_ms: int, name: str
) -> None:
    interval = INTERVALS[name]
    opened = interval.open_time_ms(time_ms, offset_ms)
    assert opened == reference_open_time(time_ms, name, offset_ms)
    closed = interval.close_time_ms(opened, offset_ms)
    assert opened <= time_ms <= closed
    # The next kline opens 1 ms after this one closes.
    assert reference_open_time(closed + 1, name, offset_ms) == closed + 1


@pytest.mark.parametrize(
    ("name", "time", "opens", "closes"),
    [
        # BTCUSDT's first 3d kline (2017-08-17) and a 3d kline of 2026 (2026-07-01): Binance's.
        ("3d", "2017-08-18T12:00", "2017-08-17T00:00", 1_503_187_199_999),
        ("3d", "2026-07-02T00:00", "2026-07-01T00:00", _ms("2026-07-04T00:00") - 1),
        # BTCUSDT's first 1w kline opens on Monday 2017-08-14.
        ("1w", "2017-08-17T04:00", "2017-08-14T00:00", _ms("2017-08-21T00:00") - 1),
        ("1M", "2024-02-29T23:59", "2024-02-01T00:00", _ms("2024-03-01T00:00") - 1),
        ("1M", "2024-12-31T23:59", "2024-12-01T00:00", _ms("2025-01-01T00:00") - 1),
        # data.binance.vision's kline example: 1m closes at open + 59,999 ms.
        ("1m", "2020-01-01T00:00:30", "2020-01-01T00:00", 1_577_836_859_999),
    ],
)
def test_anchors_as_binance_klines_show_them(name: str, time: str, opens: str, closes: int) -> None:
    interval = INTERVALS[name]
    assert interval.open_time_ms(_ms(time)) == _ms(opens)
    assert interval.close_time_ms(_ms(opens)) == closes


def test_an_offset_moves_the_day_into_local_time() -> None:
    # The 1d kline of +08:00 opens at 16:00 UTC (ccxt's report of Binance's timeZone=8 klines:
    # 1722268800000 = 2024-07-29T16:00Z), and a +05:45 hour starts at a quarter past.
    assert INTERVALS["1d"].open_time_ms(_ms("2024-07-30T03:00"), 8 * 3_600_000) == 1722268800000
    assert INTERVALS["1h"].open_time_ms(_ms("2024-07-30T03:00"), parse_offset("+05:45")) == (
        _ms("2024-07-30T02:15")
    )


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("+08:00", 480), ("8", 480), ("-1:00", -60), ("05:45", 345), ("+05:45", 345),
     ("-03:30", -210), ("0", 0), ("-12:00", -720), ("+14:00", 840)],
)  # fmt: skip
def test_offsets_take_binances_forms(text: str, minutes: int) -> None:
    assert parse_offset(text) == minutes * 60_000
    assert parse_offset(format_offset(minutes * 60_000)) == minutes * 60_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+14:01", "outside Binance's range of offsets, -12:00 to +14:00"),
        ("-12:30", "outside Binance's range of offsets"),
        ("+5:60", "is not a UTC offset like +08:00"),
        ("UTC+8", "is not a UTC offset like +08:00"),
        ("", "is not a UTC offset"),
    ],
)
def test_bad_offsets_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        parse_offset(text)
