"""Reading bars back: the stored bars and klines of every Binance interval, as exact decimals;
with ``include_open``, the forming bar after them (docs/live.md).

The stored bars (1 minute, or 1 second with ``WINDOW_SECONDS=1``) are read from their table; every
other interval from the parameterized view over it (``binance.ohlcv_klines`` or
``binance.ohlcv_1s_klines``), anchored as Binance anchors it (:mod:`binance_metrics.intervals`).
Every value that comes from a caller is bound as a query parameter, never formatted into SQL.
Every read is of one market's bars: the store's (``store.market``, :meth:`Store.in_market`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any, Final

from binance_metrics.errors import StoreError
from binance_metrics.intervals import INTERVALS as INTERVALS
from binance_metrics.markets import Market
from binance_metrics.store.clickhouse import BARS_1S_TABLE, BARS_TABLE, Store

log = logging.getLogger(__name__)

#: Per stored bar length (seconds): its table, the klines view over it, and its interval name.
_SOURCES: Final = {
    60: (BARS_TABLE, "binance.ohlcv_klines", "1m"),
    1: (BARS_1S_TABLE, "binance.ohlcv_1s_klines", "1s"),
}

_COLUMNS: Final = (
    "window_start, open, high, low, close, volume, quote_volume, trade_count, "
    "taker_buy_volume, taker_buy_quote_volume, base_volume, taker_buy_base_volume"
)
_MAX_LIMIT: Final = 100_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
#: Of the stored bars, also which trades they hold (the klines views do not carry them).
_MINUTE_COLUMNS: Final = _COLUMNS + ", first_trade_id, last_trade_id"
#: The forming bar of a symbol, when its window is newer than the symbol's newest closed bar.
_MARKET_SYMBOL: Final = "market = {market:String} AND symbol = {symbol:String}"
_NEWEST_SQL: Final = f"SELECT max(window_start) FROM binance.ohlcv WHERE {_MARKET_SYMBOL}"
_FORMING_SQL: Final = (
    f"SELECT {_MINUTE_COLUMNS} FROM binance.ohlcv_forming FINAL "
    f"WHERE {_MARKET_SYMBOL} "
    "AND window_start >= {start:DateTime64(3, 'UTC')} "
    "AND window_start < {end:DateTime64(3, 'UTC')} "
    f"AND window_start > ({_NEWEST_SQL})"
)


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
    #: COIN-M: the base-asset volumes (0 in spot and USDⓈ-M, docs/markets.md).
    base_volume: Decimal
    taker_buy_base_volume: Decimal
    #: The lowest and highest trade id of a stored bar (-1 without trades; None for rollups).
    first_trade_id: int | None = None
    last_trade_id: int | None = None
    #: False for the forming bar, and for a rollup whose last minute has not closed yet.
    closed: bool = True

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
        f"{view}(market={{market:String}}, symbol={{symbol:String}}, interval={{interval:String}}, "
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
    include_open: bool = False,
    tz_offset_ms: int = 0,
    bar_seconds: int = 60,
) -> list[StoredBar]:
    """Bars of ``symbol`` with ``start <= open_time < end``, oldest first.

    With a ``limit`` and no ``start``, the most recent ``limit`` bars are returned.
    ``include_open``: the forming bar comes last (``closed=False``) while its minute is newer
    than every closed bar (it counts towards ``limit``); of a rollup, the last bar holds the
    forming minute too, and is ``closed=False`` while any of its minutes is open (1-minute bars
    only: with 1-second bars nothing is forming). ``tz_offset_ms`` is Binance's ``timeZone``
    (:func:`binance_metrics.intervals.parse_offset`); ``bar_seconds`` says which bars the store
    holds (``WINDOW_SECONDS``: 60 or 1).
    """
    limit = min(limit or _MAX_LIMIT, _MAX_LIMIT)
    source = _source(interval, bar_seconds)
    base = interval == _SOURCES[bar_seconds][2]
    include_open = include_open and bar_seconds == 60
    upper = end or _LATEST
    parameters: dict[str, Any] = {
        "market": store.market,
        "symbol": symbol.upper(),
        "start": start or _EPOCH,
        "end": upper,
        "limit": limit,
        "interval": interval,
        "tz_offset_ms": tz_offset_ms,
    }
    # The forming bar first: a bar that closes between the two reads is then in the closed
    # ones, and its forming version is dropped below, never shown twice or not at all.
    forming = _forming_row(store, parameters) if include_open else []
    bars = _closed_bars(store, source, base, parameters, start is None, bar_seconds)
    grid = INTERVALS[interval]
    if include_open and bars and not base:
        newest = store.query(_NEWEST_SQL, parameters)
        closed_until = _utc(newest[0][0]) + timedelta(minutes=1)
        last = bars[-1]
        ends = _EPOCH + timedelta(milliseconds=grid.close_time_ms(last.open_time_ms, tz_offset_ms))
        if ends >= closed_until:
            bars[-1] = replace(last, closed=False)
    if forming:
        minute = replace(StoredBar(_utc(forming[0][0]), *forming[0][1:]), closed=False)
        if bars and minute.open_time <= bars[-1].open_time and base:
            return bars  # closed meanwhile: the closed bar is shown
        if not base:
            minute = _rolled_up(minute, interval, tz_offset_ms, bars[-1] if bars else None)
            if bars and minute.open_time == bars[-1].open_time:
                bars = bars[:-1]
            elif bars and minute.open_time < bars[-1].open_time:
                return bars
        bars = [*bars[max(0, len(bars) + 1 - limit) :], minute]
    return bars


def _closed_bars(
    store: Store,
    source: str,
    base: bool,
    parameters: dict[str, Any],
    most_recent: bool,
    bar_seconds: int,
) -> list[StoredBar]:
    limit: int = parameters["limit"]
    if most_recent and limit < _MAX_LIMIT and not base:
        # The most recent bars of a rollup: first from the stretch that holds them if the
        # history has no holes (the page's case: a rollup over a year of minutes costs seconds),
        # then, if that is not enough, from the whole history.
        bound = _recent_bound(store, parameters, bar_seconds)
        if bound is not None:
            bars = _query(store, source, base, {**parameters, "start": bound})
            if len(bars) == limit:
                return bars
    return _query(store, source, base, parameters)


def _recent_bound(store: Store, parameters: dict[str, Any], bar_seconds: int) -> datetime | None:
    """A start holding the last ``limit`` bars before ``end`` when the bars have no holes."""
    table = _SOURCES[bar_seconds][0]
    rows = store.query(
        f"SELECT min(window_start), max(window_start) FROM {table} "
        f"WHERE {_MARKET_SYMBOL} AND window_start < {{end:DateTime64(3, 'UTC')}} "
        "HAVING count() > 0",
        parameters,
    )
    if not rows:
        return None
    first, last = _utc(rows[0][0]), _utc(rows[0][1])
    length_ms = INTERVALS[parameters["interval"]].length_ms or 31 * 86_400_000  # a month at most
    bound = last - timedelta(milliseconds=(parameters["limit"] + 1) * length_ms)
    return bound if bound > first else None  # else the whole history is the stretch


def _query(store: Store, source: str, base: bool, parameters: dict[str, Any]) -> list[StoredBar]:
    sql = (
        f"SELECT {_MINUTE_COLUMNS if base else _COLUMNS} FROM {source} "
        f"WHERE {_MARKET_SYMBOL} "
        "AND window_start >= {start:DateTime64(3, 'UTC')} "
        "AND window_start < {end:DateTime64(3, 'UTC')} "
        "ORDER BY window_start DESC LIMIT {limit:UInt32}"
    )
    start: datetime = parameters["start"]
    end: datetime = parameters["end"]
    rows = store.query(
        sql,
        {
            **parameters,
            "from_ms": (start - _EPOCH) // timedelta(milliseconds=1),
            "to_ms": (end - _EPOCH) // timedelta(milliseconds=1),
        },
    )
    bars = [StoredBar(_utc(row[0]), *row[1:]) for row in rows]
    bars.reverse()
    return bars


def _forming_row(store: Store, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The forming row, or none when it cannot be read (a server whose administrator has not
    created ``binance.ohlcv_forming`` yet, docs/operations.md): the closed bars still are."""
    try:
        return store.query(_FORMING_SQL, parameters)
    except StoreError as exc:
        if str(exc) not in _reported:  # once per reason: pages read it several times a second
            _reported.add(str(exc))
            log.warning("no forming bar (closed bars only): %s", exc)
        return []


_reported: set[str] = set()


def _rolled_up(
    minute: StoredBar, interval: str, tz_offset_ms: int, last: StoredBar | None
) -> StoredBar:
    """The bar of ``interval`` that holds the forming ``minute``: ``last`` (the rollup of the
    closed minutes) with it folded in, by the rules of ``binance.ohlcv_klines``."""
    opens = INTERVALS[interval].open_time_ms(minute.open_time_ms, tz_offset_ms)
    start = _EPOCH + timedelta(milliseconds=opens)
    if last is None or last.open_time != start:
        return replace(minute, open_time=start, first_trade_id=None, last_trade_id=None)
    # Open, high and low come from the minutes with trades (a filler repeats a close).
    traded = [bar for bar in (last, minute) if bar.trade_count > 0] or [last, minute]
    with localcontext() as exact:
        exact.prec = 80  # sums of Decimal(38, 16) values: never rounded to 28 digits
        return _folded(last, minute, traded)


def _folded(last: StoredBar, minute: StoredBar, traded: list[StoredBar]) -> StoredBar:
    return replace(
        last,
        open=traded[0].open,
        high=max(bar.high for bar in traded),
        low=min(bar.low for bar in traded),
        close=minute.close,
        volume=last.volume + minute.volume,
        quote_volume=last.quote_volume + minute.quote_volume,
        trade_count=last.trade_count + minute.trade_count,
        taker_buy_volume=last.taker_buy_volume + minute.taker_buy_volume,
        taker_buy_quote_volume=last.taker_buy_quote_volume + minute.taker_buy_quote_volume,
        base_volume=last.base_volume + minute.base_volume,
        taker_buy_base_volume=last.taker_buy_base_volume + minute.taker_buy_base_volume,
        closed=False,
    )


def as_binance(bars: list[StoredBar], market: Market) -> list[StoredBar]:
    """``bars`` in the columns of ``market``'s klines: COIN-M's have the base-asset volumes
    where the others have the quote volumes (docs/markets.md, COIN-M volumes)."""
    if market != "cm":
        return bars
    return [
        replace(bar, quote_volume=bar.base_volume, taker_buy_quote_volume=bar.taker_buy_base_volume)
        for bar in bars
    ]


def list_symbols(store: Store, bar_seconds: int = 60) -> list[str]:
    """The symbols with bars in ``store.market``."""
    table = _SOURCES[bar_seconds][0]
    sql = f"SELECT DISTINCT symbol FROM {table} WHERE market = {{market:String}} ORDER BY 1"
    return [row[0] for row in store.query(sql, {"market": store.market})]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
