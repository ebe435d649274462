"""Reading bars back: the stored bars and klines of every Binance interval, as exact decimals.

The stored bars (1 minute, or 1 second with ``WINDOW_SECONDS=1``) are read from their table; every
other interval from the parameterized view over it (``binance.ohlcv_klines`` or
``binance.ohlcv_1s_klines``), anchored as Binance anchors it (:mod:`binance_metrics.intervals`).
Every value that comes from a caller is bound as a query parameter, never formatted into SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

from binance_metrics.intervals import INTERVALS as INTERVALS
from binance_metrics.store.clickhouse import BARS_1S_TABLE, BARS_TABLE, Store

#: Per stored bar length (seconds): its table, the klines view over it, and its interval name.
_SOURCES: Final = {
    60: (BARS_TABLE, "binance.ohlcv_klines", "1m"),
    1: (BARS_1S_TABLE, "binance.ohlcv_1s_klines", "1s"),
}

_COLUMNS: Final = (
    "window_start, open, high, low, close, volume, quote_volume, trade_count, "
    "taker_buy_volume, taker_buy_quote_volume"
)
_MAX_LIMIT: Final = 100_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StoredBar:
    open_time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trade_count: int
    taker_buy_volume: Decimal
    taker_buy_quote_volume: Decimal

    @property
    def open_time_ms(self) -> int:
        # Integer arithmetic: exact to the millisecond, unlike a float timestamp.
        return (self.open_time - _EPOCH) // timedelta(milliseconds=1)


def intervals_for(bar_seconds: int = 60) -> list[str]:
    """The intervals readable from the bars stored ``bar_seconds`` long: 1s only from 1s bars."""
    return [name for name in INTERVALS if name != "1s" or bar_seconds == 1]


def _source(interval: str, bar_seconds: int) -> str:
    if bar_seconds not in _SOURCES:
        raise ValueError(f"bars are stored 1 or 60 seconds long, not {bar_seconds}")
    table, view, base = _SOURCES[bar_seconds]
    if interval not in intervals_for(bar_seconds):
        raise ValueError(
            f"unknown interval {interval!r}; use one of {', '.join(intervals_for(bar_seconds))}"
            + (" (1s bars need WINDOW_SECONDS=1)" if interval == "1s" else "")
        )
    if interval == base:
        # The stored bars themselves: every time-zone offset is whole minutes, so it moves no
        # 1s or 1m bar.
        return f"{table} FINAL"
    return (
        f"{view}(symbol={{symbol:String}}, interval={{interval:String}}, "
        "tz_offset_ms={tz_offset_ms:Int64}, from_ms={from_ms:Int64}, to_ms={to_ms:Int64})"
    )


def fetch_bars(
    store: Store,
    symbol: str,
    *,
    interval: str = "1m",
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
    tz_offset_ms: int = 0,
    bar_seconds: int = 60,
) -> list[StoredBar]:
    """Bars of ``symbol`` with ``start <= open_time < end``, oldest first.

    With a ``limit`` and no ``start``, the most recent ``limit`` bars are returned.
    ``tz_offset_ms`` is Binance's ``timeZone`` (:func:`binance_metrics.intervals.parse_offset`);
    ``bar_seconds`` says which bars the store holds (``WINDOW_SECONDS``: 60 or 1).
    """
    limit = min(limit or _MAX_LIMIT, _MAX_LIMIT)
    source = _source(interval, bar_seconds)
    upper = end or _LATEST
    if start is None and limit < _MAX_LIMIT and "(" in source:
        # The most recent bars of a rollup: first from the stretch that holds them if the
        # history has no holes (the page's case: a rollup over a year of minutes costs seconds),
        # then, if that is not enough, from the whole history.
        bound = _recent_bound(store, symbol, interval, upper, limit, bar_seconds)
        if bound is not None:
            bars = _query(store, source, symbol, interval, bound, upper, limit, tz_offset_ms)
            if len(bars) == limit:
                return bars
    return _query(store, source, symbol, interval, start or _EPOCH, upper, limit, tz_offset_ms)


def _recent_bound(
    store: Store, symbol: str, interval: str, end: datetime, limit: int, bar_seconds: int
) -> datetime | None:
    """A start holding the last ``limit`` bars before ``end`` when the bars have no holes."""
    table = _SOURCES[bar_seconds][0]
    rows = store.query(
        f"SELECT min(window_start), max(window_start) FROM {table} "
        "WHERE symbol = {symbol:String} AND window_start < {end:DateTime64(3, 'UTC')} "
        "HAVING count() > 0",
        {"symbol": symbol.upper(), "end": end},
    )
    if not rows:
        return None
    first, last = _utc(rows[0][0]), _utc(rows[0][1])
    length_ms = INTERVALS[interval].length_ms or 31 * 86_400_000  # a month at most
    bound = last - timedelta(milliseconds=(limit + 1) * length_ms)
    return bound if bound > first else None  # else the whole history is the stretch


def _query(
    store: Store,
    source: str,
    symbol: str,
    interval: str,
    start: datetime,
    end: datetime,
    limit: int,
    tz_offset_ms: int,
) -> list[StoredBar]:
    sql = (
        f"SELECT {_COLUMNS} FROM {source} "
        "WHERE symbol = {symbol:String} "
        "AND window_start >= {start:DateTime64(3, 'UTC')} "
        "AND window_start < {end:DateTime64(3, 'UTC')} "
        "ORDER BY window_start DESC LIMIT {limit:UInt32}"
    )
    rows = store.query(
        sql,
        {
            "symbol": symbol.upper(),
            "start": start,
            "end": end,
            "limit": limit,
            "interval": interval,
            "tz_offset_ms": tz_offset_ms,
            "from_ms": (start - _EPOCH) // timedelta(milliseconds=1),
            "to_ms": (end - _EPOCH) // timedelta(milliseconds=1),
        },
    )
    bars = [StoredBar(_utc(row[0]), *row[1:]) for row in rows]
    bars.reverse()
    return bars


def list_symbols(store: Store, bar_seconds: int = 60) -> list[str]:
    table = _SOURCES[bar_seconds][0]
    return [row[0] for row in store.query(f"SELECT DISTINCT symbol FROM {table} ORDER BY 1")]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
