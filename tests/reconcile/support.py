"""Binance's own klines written to the store as bars (the store then holds Binance's numbers)."""

from __future__ import annotations

from collections.abc import Iterable

from binance_metrics.bars import BarUpdate, from_decimals
from binance_metrics.reconcile.compare import Kline
from binance_metrics.store.clickhouse import Store


def store_klines(store: Store, symbol: str, klines: Iterable[Kline]) -> None:
    """Each kline (with all nine fields) as the stored bar of its minute."""
    store.insert_bars(
        [
            BarUpdate(symbol, k.open_time_ms, from_decimals(
                # A complete run of trade ids: the bar's version is its trade count.
                {**k.values, "first_trade_id": 1000,
                 "last_trade_id": 999 + int(k.values["trade_count"])}
            ))
            for k in klines
        ]
    )  # fmt: skip
