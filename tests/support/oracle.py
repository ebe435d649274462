"""A plain-Python reference for Binance klines, written for clarity, not speed.

It groups trades by minute with Decimal arithmetic and fills empty minutes the way Binance does;
the dataflow's output is compared against it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal, localcontext
from typing import Any

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.trades import TradeMessage

MINUTE_MS = 60_000
FIELDS = (
    "open", "high", "low", "close", "volume", "quote_volume", "trade_count",
    "taker_buy_volume", "taker_buy_quote_volume",
)  # fmt: skip


def reference_klines(
    trades: Iterable[TradeMessage], window_ms: int = MINUTE_MS
) -> dict[tuple[str, int], dict[str, Any]]:
    """(symbol, open_time_ms) -> kline fields, including zero-trade minutes."""
    with localcontext() as context:
        context.prec = 200  # exact: the default 28 digits would round large quote volumes
        return _reference_klines(trades, window_ms)


def _reference_klines(
    trades: Iterable[TradeMessage], window_ms: int
) -> dict[tuple[str, int], dict[str, Any]]:
    by_minute: dict[tuple[str, int], list[TradeMessage]] = defaultdict(list)
    for trade in trades:
        by_minute[(trade.symbol, trade.trade_time_ms // window_ms * window_ms)].append(trade)
    klines: dict[tuple[str, int], dict[str, Any]] = {}
    for key, group in by_minute.items():
        group.sort(key=lambda t: t.trade_id)
        prices = [Decimal(t.price) for t in group]
        klines[key] = {
            "open": Decimal(group[0].price),
            "high": max(prices),
            "low": min(prices),
            "close": Decimal(group[-1].price),
            "volume": sum((Decimal(t.quantity) for t in group), Decimal(0)),
            "quote_volume": sum(
                (Decimal(t.price) * Decimal(t.quantity) for t in group), Decimal(0)
            ),
            "trade_count": sum(t.trade_count for t in group),
            "taker_buy_volume": sum(
                (Decimal(t.quantity) for t in group if not t.buyer_is_maker), Decimal(0)
            ),
            "taker_buy_quote_volume": sum(
                (Decimal(t.price) * Decimal(t.quantity) for t in group if not t.buyer_is_maker),
                Decimal(0),
            ),
        }
    for symbol in {symbol for symbol, _ in klines}:
        minutes = sorted(start for s, start in klines if s == symbol)
        close = None
        for start in range(minutes[0], minutes[-1] + window_ms, window_ms):
            kline = klines.get((symbol, start))
            if kline is None:
                klines[(symbol, start)] = {
                    "open": close, "high": close, "low": close, "close": close,
                    "volume": Decimal(0), "quote_volume": Decimal(0), "trade_count": 0,
                    "taker_buy_volume": Decimal(0), "taker_buy_quote_volume": Decimal(0),
                }  # fmt: skip
            else:
                close = kline["close"]
    return klines


def materialize(updates: Iterable[BarUpdate]) -> dict[tuple[str, int], Bar]:
    """What binance.ohlcv reads after these writes: per key the most trades, ties to the last."""
    table: dict[tuple[str, int], Bar] = {}
    for symbol, start_ms, bar in updates:
        key = (symbol, start_ms)
        if key not in table or bar.trade_count >= table[key].trade_count:
            table[key] = bar
    return table


def as_fields(bar: Bar) -> dict[str, Any]:
    values = bar.decimals()
    return {name: values[name] for name in FIELDS}
