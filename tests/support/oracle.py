"""A plain-Python reference for Binance klines, written for clarity, not speed.

It groups trades by minute with Decimal arithmetic and fills empty minutes the way Binance does;
the dataflow's output is compared against it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
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
    trades: Iterable[TradeMessage],
    window_ms: int = MINUTE_MS,
    open_time: Callable[[int], int] | None = None,
) -> dict[tuple[str, int], dict[str, Any]]:
    """(symbol, open_time_ms) -> kline fields, including zero-trade windows.

    Windows are ``window_ms`` long from the epoch, or given by ``open_time`` (a time's window
    start, e.g. :func:`reference_open_time`); then the window after one opening at ``t`` is the
    one holding ``t + window_ms`` (31 days steps from a month to the next).
    """
    with localcontext() as context:
        context.prec = 200  # exact: the default 28 digits would round large quote volumes
        return _reference_klines(
            trades, window_ms, open_time or (lambda t: t // window_ms * window_ms)
        )


def _reference_klines(
    trades: Iterable[TradeMessage], window_ms: int, open_time: Callable[[int], int]
) -> dict[tuple[str, int], dict[str, Any]]:
    by_minute: dict[tuple[str, int], list[TradeMessage]] = defaultdict(list)
    for trade in trades:
        by_minute[(trade.symbol, open_time(trade.trade_time_ms))].append(trade)
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
        start = minutes[0]
        while start <= minutes[-1]:
            kline = klines.get((symbol, start))
            if kline is None:
                klines[(symbol, start)] = {
                    "open": close, "high": close, "low": close, "close": close,
                    "volume": Decimal(0), "quote_volume": Decimal(0), "trade_count": 0,
                    "taker_buy_volume": Decimal(0), "taker_buy_quote_volume": Decimal(0),
                }  # fmt: skip
            else:
                close = kline["close"]
            start = open_time(start + window_ms)
    return klines


#: Binance's interval names -> (unit, count), for the calendar reference below.
INTERVAL_UNITS = {
    "1s": ("s", 1), "1m": ("m", 1), "3m": ("m", 3), "5m": ("m", 5), "15m": ("m", 15),
    "30m": ("m", 30), "1h": ("h", 1), "2h": ("h", 2), "4h": ("h", 4), "6h": ("h", 6),
    "8h": ("h", 8), "12h": ("h", 12), "1d": ("d", 1), "3d": ("d", 3), "1w": ("w", 1),
    "1M": ("M", 1),
}  # fmt: skip
_SPAN_MS = {"s": 1000, "m": 60_000, "h": 3_600_000}
#: Binance's 3-day klines open every third day counted from this one (docs/bars.md).
THREE_DAY_ORIGIN = date(1970, 1, 2)


def reference_open_time(time_ms: int, interval: str, offset_ms: int = 0) -> int:
    """The open time (UTC ms) of the Binance kline of ``interval`` holding ``time_ms``, in the
    time zone ``offset_ms`` east of UTC: calendar arithmetic on the local date, written
    independently of the package's grid arithmetic."""
    unit, count = INTERVAL_UNITS[interval]
    local = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=time_ms + offset_ms)
    if unit in _SPAN_MS:
        span = _SPAN_MS[unit] * count
        day = datetime(local.year, local.month, local.day, tzinfo=UTC)
        into_day = (local - day) // timedelta(milliseconds=1)
        start = day + timedelta(milliseconds=into_day - into_day % span)  # all divide a day
    else:
        today = local.date()
        if unit == "d":
            first = today - timedelta(days=(today - THREE_DAY_ORIGIN).days % count)
        elif unit == "w":
            first = today - timedelta(days=today.weekday())  # Monday
        else:
            first = today.replace(day=1)
        start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    epoch_ms = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return epoch_ms - offset_ms


def reference_window_ms(interval: str) -> int:
    """The step :func:`reference_klines` takes from a window to the next one of ``interval``."""
    unit, count = INTERVAL_UNITS[interval]
    days = {"d": 1, "w": 7, "M": 31}
    return _SPAN_MS[unit] * count if unit in _SPAN_MS else days[unit] * count * 86_400_000


_SUMS = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")


def reference_rollup(
    bars: dict[int, dict[str, Any]], open_time: Callable[[int], int]
) -> dict[int, dict[str, Any]]:
    """Longer bars from shorter ones (open_time_ms -> kline fields), as Binance would build them
    from the same trades: a bar without trades (a filler) lends no price to the open, high or low
    of a longer bar that has trades; the close is the last bar's close."""
    groups: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for start in sorted(bars):
        groups[open_time(start)].append((start, bars[start]))
    rolled: dict[int, dict[str, Any]] = {}
    for start, members in groups.items():
        fields = [f for _, f in members]
        traded = [f for f in fields if f["trade_count"] > 0] or fields
        rolled[start] = {
            "open": traded[0]["open"],
            "high": max(f["high"] for f in traded),
            "low": min(f["low"] for f in traded),
            "close": fields[-1]["close"],
            **{name: sum((f[name] for f in fields), Decimal(0)) for name in _SUMS},
            "trade_count": sum(f["trade_count"] for f in fields),
        }
    return rolled


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
