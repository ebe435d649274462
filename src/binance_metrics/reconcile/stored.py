"""Stored bars as :class:`~binance_metrics.reconcile.compare.Kline`, read as ``bars`` reads them
(:func:`~binance_metrics.store.queries.fetch_bars`), so every interval ``bars`` has reconciles;
in the columns of the store's market's klines (COIN-M: base-asset volumes for quote volumes)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from binance_metrics.arguments import EPOCH
from binance_metrics.reconcile.compare import FIELDS, Kline
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import as_binance, fetch_bars

#: fetch_bars returns at most this many bars a call; longer ranges are read in pieces.
_PIECE: Final = 100_000


def stored_klines(
    store: Store, symbol: str, interval: str, start_ms: int, end_ms: int
) -> list[Kline]:
    """The stored bars of ``symbol`` with ``start_ms <= open time < end_ms``, oldest first."""
    found: list[Kline] = []
    end = utc(end_ms)
    while True:
        bars = fetch_bars(store, symbol, interval=interval, start=utc(start_ms), end=end,
                          limit=_PIECE)  # fmt: skip
        found[:0] = [
            Kline(bar.open_time_ms, {name: getattr(bar, name) for name in FIELDS})
            for bar in as_binance(bars, store.market)
        ]
        if len(bars) < _PIECE:
            return found
        end = bars[0].open_time  # the most recent _PIECE came back: read on before them


def utc(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)
