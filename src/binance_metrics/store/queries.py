"""Reading bars back: 1-minute bars and their rollups, always as exact decimals; with
``include_open``, the forming bar after them (docs/live.md).

Every value that comes from a caller is bound as a query parameter, never formatted into SQL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any, Final

from binance_metrics.errors import StoreError
from binance_metrics.store.clickhouse import Store

log = logging.getLogger(__name__)

#: Interval name -> seconds. ``1m`` is the stored table; the others are rollups of it.
INTERVALS: Final = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}

_COLUMNS: Final = (
    "window_start, open, high, low, close, volume, quote_volume, trade_count, "
    "taker_buy_volume, taker_buy_quote_volume"
)
_MAX_LIMIT: Final = 100_000
#: Of the 1-minute bars, also which trades they hold (the rollup view does not carry them).
_MINUTE_COLUMNS: Final = _COLUMNS + ", first_trade_id, last_trade_id"
#: The forming bar of a symbol, when its window is newer than the symbol's newest closed bar.
_NEWEST_SQL: Final = "SELECT max(window_start) FROM binance.ohlcv WHERE symbol = {symbol:String}"
_FORMING_SQL: Final = (
    f"SELECT {_MINUTE_COLUMNS} FROM binance.ohlcv_forming FINAL "
    "WHERE symbol = {symbol:String} "
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
    #: The lowest and highest trade id of a 1-minute bar (-1 without trades; None for rollups).
    first_trade_id: int | None = None
    last_trade_id: int | None = None
    #: False for the forming bar, and for a rollup whose last minute has not closed yet.
    closed: bool = True

    @property
    def open_time_ms(self) -> int:
        return int(self.open_time.timestamp() * 1000)


def _source(interval: str) -> str:
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; use one of {', '.join(INTERVALS)}")
    if interval == "1m":
        return "binance.ohlcv FINAL"
    return "binance.ohlcv_rollup(interval_seconds={interval_seconds:UInt32})"


def fetch_bars(
    store: Store,
    symbol: str,
    *,
    interval: str = "1m",
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
    include_open: bool = False,
) -> list[StoredBar]:
    """Bars of ``symbol`` with ``start <= open_time < end``, oldest first.

    With a ``limit`` and no ``start``, the most recent ``limit`` bars are returned.
    ``include_open``: the forming bar comes last (``closed=False``) while its minute is newer
    than every closed bar (it counts towards ``limit``); of a rollup, the last bar holds the
    forming minute too, and is ``closed=False`` while any of its minutes is open.
    """
    limit = min(limit or _MAX_LIMIT, _MAX_LIMIT)
    columns = _MINUTE_COLUMNS if interval == "1m" else _COLUMNS
    sql = (
        f"SELECT {columns} FROM {_source(interval)} "
        "WHERE symbol = {symbol:String} "
        "AND window_start >= {start:DateTime64(3, 'UTC')} "
        "AND window_start < {end:DateTime64(3, 'UTC')} "
        "ORDER BY window_start DESC LIMIT {limit:UInt32}"
    )
    parameters = {
        "symbol": symbol.upper(),
        "start": start or datetime(1970, 1, 1, tzinfo=UTC),
        "end": end or datetime(2200, 1, 1, tzinfo=UTC),
        "limit": limit,
        "interval_seconds": INTERVALS.get(interval, 60),
    }
    # The forming bar first: a bar that closes between the two reads is then in the closed
    # ones, and its forming version is dropped below, never shown twice or not at all.
    forming = _forming_row(store, parameters) if include_open else []
    rows = store.query(sql, parameters)
    bars = [StoredBar(_utc(row[0]), *row[1:]) for row in rows]
    bars.reverse()
    if include_open and bars and interval != "1m":
        newest = store.query(_NEWEST_SQL, parameters)
        closed_until = _utc(newest[0][0]) + timedelta(minutes=1)
        last = bars[-1]
        if last.open_time + timedelta(seconds=INTERVALS[interval]) > closed_until:
            bars[-1] = replace(last, closed=False)
    if forming:
        minute = replace(StoredBar(_utc(forming[0][0]), *forming[0][1:]), closed=False)
        if bars and minute.open_time <= bars[-1].open_time and interval == "1m":
            return bars  # closed meanwhile: the closed bar is shown
        if interval != "1m":
            minute = _rolled_up(minute, INTERVALS[interval], bars[-1] if bars else None)
            if bars and minute.open_time == bars[-1].open_time:
                bars = bars[:-1]
            elif bars and minute.open_time < bars[-1].open_time:
                return bars
        bars = [*bars[max(0, len(bars) + 1 - limit) :], minute]
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


def _rolled_up(minute: StoredBar, seconds: int, last: StoredBar | None) -> StoredBar:
    """The rollup bar of ``seconds`` that holds the forming ``minute``: ``last`` (the rollup of
    the closed minutes) with it folded in, by the rules of ``binance.ohlcv_rollup``."""
    length_ms = seconds * 1000
    start = datetime.fromtimestamp(minute.open_time_ms // length_ms * length_ms / 1000, tz=UTC)
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
        closed=False,
    )


def list_symbols(store: Store) -> list[str]:
    return [row[0] for row in store.query("SELECT DISTINCT symbol FROM binance.ohlcv ORDER BY 1")]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
