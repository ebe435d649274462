"""Reading bars back: 1-minute bars and their rollups, always as exact decimals.

Every value that comes from a caller is bound as a query parameter, never formatted into SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from binance_metrics.store.clickhouse import Store

#: Interval name -> seconds. ``1m`` is the stored table; the others are rollups of it.
INTERVALS: Final = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}

_COLUMNS: Final = (
    "window_start, open, high, low, close, volume, quote_volume, trade_count, "
    "taker_buy_volume, taker_buy_quote_volume"
)
_MAX_LIMIT: Final = 100_000


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
) -> list[StoredBar]:
    """Bars of ``symbol`` with ``start <= open_time < end``, oldest first.

    With a ``limit`` and no ``start``, the most recent ``limit`` bars are returned.
    """
    limit = min(limit or _MAX_LIMIT, _MAX_LIMIT)
    sql = (
        f"SELECT {_COLUMNS} FROM {_source(interval)} "
        "WHERE symbol = {symbol:String} "
        "AND window_start >= {start:DateTime64(3, 'UTC')} "
        "AND window_start < {end:DateTime64(3, 'UTC')} "
        "ORDER BY window_start DESC LIMIT {limit:UInt32}"
    )
    rows = store.query(
        sql,
        {
            "symbol": symbol.upper(),
            "start": start or datetime(1970, 1, 1, tzinfo=UTC),
            "end": end or datetime(2200, 1, 1, tzinfo=UTC),
            "limit": limit,
            "interval_seconds": INTERVALS.get(interval, 60),
        },
    )
    bars = [StoredBar(_utc(row[0]), *row[1:]) for row in rows]
    bars.reverse()
    return bars


def list_symbols(store: Store) -> list[str]:
    return [row[0] for row in store.query("SELECT DISTINCT symbol FROM binance.ohlcv ORDER BY 1")]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
