"""Binance's kline intervals, how each is anchored, and the ``timeZone`` offsets that shift them.

Binance's intervals (``/api/v3/klines``): ``1s``, ``1m``, ``3m``, ``5m``, ``15m``, ``30m``,
``1h``, ``2h``, ``4h``, ``6h``, ``8h``, ``12h``, ``1d``, ``3d``, ``1w``, ``1M`` (case-sensitive:
``1M`` is a month). Anchoring, as Binance's klines show it (docs/bars.md):

* up to ``1d``: multiples of the length since the epoch (1970-01-01T00:00 UTC);
* ``3d``: every third day counted from 1970-01-02 (BTCUSDT's 3d klines open on 2017-08-17 and on
  2026-07-01, both such days, never on another);
* ``1w``: weeks starting on Monday 00:00 (the first Monday after the epoch is 1970-01-05);
* ``1M``: calendar months.

A ``timeZone`` offset moves every interval's grid into local time ("kline intervals are
interpreted in that timezone"): the ``1d`` of ``+08:00`` opens at 16:00 UTC. Open and close times
stay epoch milliseconds (UTC), as Binance returns them. The store computes the same grid in SQL
(``binance.ohlcv_klines`` in ``store/schema/init.sql``); this module is its Python side (names,
offsets, close times).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

SECOND_MS: Final = 1000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class Interval:
    """One of Binance's kline intervals: a fixed length on a grid, or a calendar month."""

    name: str
    #: The length in milliseconds; 0 for the calendar month.
    length_ms: int
    #: Where the grid starts, in ms after the epoch (local time with an offset).
    anchor_ms: int = 0

    @property
    def months(self) -> bool:
        return self.length_ms == 0

    def open_time_ms(self, time_ms: int, offset_ms: int = 0) -> int:
        """The open time (UTC epoch ms) of the kline holding ``time_ms``."""
        local = time_ms + offset_ms
        if self.months:
            moment = _utc(local)
            start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            return _ms(start) - offset_ms
        return local - (local - self.anchor_ms) % self.length_ms - offset_ms

    def close_time_ms(self, open_time_ms: int, offset_ms: int = 0) -> int:
        """Binance's close time: the next kline's open time minus 1 ms."""
        if not self.months:
            return open_time_ms + self.length_ms - 1
        start = _utc(open_time_ms + offset_ms)
        year, month = divmod(start.year * 12 + start.month, 12)  # the month after, 1-based
        following = start.replace(year=year, month=month + 1)
        return _ms(following) - offset_ms - 1


INTERVALS: Final[dict[str, Interval]] = {
    interval.name: interval
    for interval in (
        Interval("1s", SECOND_MS),
        Interval("1m", MINUTE_MS),
        Interval("3m", 3 * MINUTE_MS),
        Interval("5m", 5 * MINUTE_MS),
        Interval("15m", 15 * MINUTE_MS),
        Interval("30m", 30 * MINUTE_MS),
        Interval("1h", HOUR_MS),
        Interval("2h", 2 * HOUR_MS),
        Interval("4h", 4 * HOUR_MS),
        Interval("6h", 6 * HOUR_MS),
        Interval("8h", 8 * HOUR_MS),
        Interval("12h", 12 * HOUR_MS),
        Interval("1d", DAY_MS),
        Interval("3d", 3 * DAY_MS, anchor_ms=DAY_MS),
        Interval("1w", 7 * DAY_MS, anchor_ms=4 * DAY_MS),
        Interval("1M", 0),
    )
}

#: Binance's ``timeZone`` values: hours, or hours and minutes, optionally signed (``8``,
#: ``-1:00``, ``05:45``, ``+05:45``); the accepted range is -12:00 to +14:00.
_OFFSET: Final = re.compile(r"(?P<sign>[+-]?)(?P<hours>[0-9]{1,2})(?::(?P<minutes>[0-5][0-9]))?")
MIN_OFFSET_MS: Final = -12 * HOUR_MS
MAX_OFFSET_MS: Final = 14 * HOUR_MS


def parse_offset(text: str) -> int:
    """A ``timeZone`` value as Binance takes it, in milliseconds east of UTC.

    Raises ``ValueError`` with a message fit for a user.
    """
    match = _OFFSET.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a UTC offset like +08:00, -03:30 or +05:45")
    sign = -1 if match["sign"] == "-" else 1
    offset = sign * (int(match["hours"]) * HOUR_MS + int(match["minutes"] or 0) * MINUTE_MS)
    if not MIN_OFFSET_MS <= offset <= MAX_OFFSET_MS:
        raise ValueError(f"{text!r} is outside Binance's range of offsets, -12:00 to +14:00")
    return offset


def format_offset(offset_ms: int) -> str:
    """``+05:45`` for 5 h 45 min east of UTC."""
    sign = "-" if offset_ms < 0 else "+"
    minutes = abs(offset_ms) // MINUTE_MS
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)
