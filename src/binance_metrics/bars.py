"""The exact OHLCV accumulator: a commutative monoid over trades.

``Bar.empty()`` is the identity, :meth:`Bar.add_trade` folds one trade in, :func:`merge` combines
two bars. Open and close are the prices of the lowest and highest trade id, never of arrival
order, so the result is the same whatever the order, batching or partitioning of the trades —
which is what lets the dataflow pre-aggregate each input batch and merge late fragments exactly.

All amounts are integers: prices, quantities and volumes scaled by 10**8, quote volumes
(price x quantity) by 10**16. Python integers do not overflow. A COIN-M trade also brings its
base-asset quantity (:mod:`binance_metrics.contracts`), summed in ``base_volume`` and
``taker_buy_base_volume``; elsewhere those stay 0 (the quantity is in the base asset already).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Final, NamedTuple

from binance_metrics.contracts import base_quantity
from binance_metrics.trade_ids import IdRuns
from binance_metrics.trades import SCALE_DIGITS, TradeMessage, parse_scaled

QUOTE_SCALE_DIGITS: Final = 2 * SCALE_DIGITS
_NO_ID: Final = -1


@dataclass(slots=True)
class Bar:
    """OHLCV of a set of trades. ``trade_count == 0`` means empty (the identity)."""

    open: int = 0
    high: int = 0
    low: int = 0
    close: int = 0
    volume: int = 0
    quote_volume: int = 0
    trade_count: int = 0
    taker_buy_volume: int = 0
    taker_buy_quote_volume: int = 0
    first_trade_id: int = _NO_ID
    last_trade_id: int = _NO_ID
    #: COIN-M only: the sum of the trades' base-asset quantities (0 in spot and USDⓈ-M).
    base_volume: int = 0
    taker_buy_base_volume: int = 0
    #: Exactly which trade ids the bar counts, once the dataflow has checked them (None: not
    #: known, e.g. a bar folded straight from trades). Stored, so that a trade arriving after
    #: the dataflow forgot the minute is merged exactly. Not part of the bar's value.
    ids: IdRuns | None = field(default=None, compare=False, repr=False)

    @staticmethod
    def empty() -> Bar:
        return Bar()

    @property
    def is_empty(self) -> bool:
        return self.trade_count == 0

    def add(
        self,
        price: int,
        qty: int,
        first_id: int,
        last_id: int,
        buyer_is_maker: bool,
        base_qty: int = 0,
    ) -> Bar:
        """Fold in one trade (or an aggregate of ``last_id - first_id + 1`` trades), in place;
        ``base_qty``: its base-asset quantity (COIN-M), else 0."""
        quote = price * qty
        if self.trade_count == 0:
            self.open = self.high = self.low = self.close = price
            self.first_trade_id, self.last_trade_id = first_id, last_id
        else:
            if price > self.high:
                self.high = price
            if price < self.low:
                self.low = price
            if first_id < self.first_trade_id:
                self.first_trade_id, self.open = first_id, price
            if last_id > self.last_trade_id:
                self.last_trade_id, self.close = last_id, price
        self.volume += qty
        self.quote_volume += quote
        self.trade_count += last_id - first_id + 1
        self.base_volume += base_qty
        if not buyer_is_maker:
            self.taker_buy_volume += qty
            self.taker_buy_quote_volume += quote
            self.taker_buy_base_volume += base_qty
        return self

    def add_trade(self, trade: TradeMessage) -> Bar:
        """Fold in one decoded trade message, in place."""
        price, qty = parse_scaled(trade.price), parse_scaled(trade.quantity)
        return self.add(
            price,
            qty,
            trade.trade_id,
            trade.last_trade_id,
            trade.buyer_is_maker,
            trade_base_quantity(trade, price, qty),
        )

    @property
    def version(self) -> int:
        """Which version of a minute's bar the store keeps: the most trades, except that a bar
        counting more trades than its id span (a trade counted twice) loses to every other.
        The table computes the same expression (``version`` column of ``binance.ohlcv``)."""
        consistent = self.trade_count <= max(self.last_trade_id - self.first_trade_id + 1, 0)
        return self.trade_count if consistent else 0

    @staticmethod
    def filler(previous_close: int) -> Bar:
        """Binance's bar for a minute without trades: O = H = L = C = previous close."""
        return Bar(previous_close, previous_close, previous_close, previous_close)

    def decimals(self) -> dict[str, Decimal | int]:
        """The bar as exact decimals, keyed by column name."""
        return {
            "open": _dec(self.open),
            "high": _dec(self.high),
            "low": _dec(self.low),
            "close": _dec(self.close),
            "volume": _dec(self.volume),
            "quote_volume": _dec(self.quote_volume, QUOTE_SCALE_DIGITS),
            "trade_count": self.trade_count,
            "taker_buy_volume": _dec(self.taker_buy_volume),
            "taker_buy_quote_volume": _dec(self.taker_buy_quote_volume, QUOTE_SCALE_DIGITS),
            "first_trade_id": self.first_trade_id,
            "last_trade_id": self.last_trade_id,
            "base_volume": _dec(self.base_volume),
            "taker_buy_base_volume": _dec(self.taker_buy_base_volume),
        }


class BarUpdate(NamedTuple):
    """A new, complete version of one symbol's bar: what the dataflow emits, the store writes."""

    symbol: str
    window_start_ms: int
    bar: Bar


def from_decimals(values: Mapping[str, Decimal | int]) -> Bar:
    """Inverse of :meth:`Bar.decimals` (a stored bar read back, exactly)."""
    return Bar(
        open=_scaled(values["open"]),
        high=_scaled(values["high"]),
        low=_scaled(values["low"]),
        close=_scaled(values["close"]),
        volume=_scaled(values["volume"]),
        quote_volume=_scaled(values["quote_volume"], QUOTE_SCALE_DIGITS),
        trade_count=int(values["trade_count"]),
        taker_buy_volume=_scaled(values["taker_buy_volume"]),
        taker_buy_quote_volume=_scaled(values["taker_buy_quote_volume"], QUOTE_SCALE_DIGITS),
        first_trade_id=int(values["first_trade_id"]),
        last_trade_id=int(values["last_trade_id"]),
        base_volume=_scaled(values.get("base_volume", 0)),
        taker_buy_base_volume=_scaled(values.get("taker_buy_base_volume", 0)),
    )


def trade_base_quantity(trade: TradeMessage, price: int, qty: int) -> int:
    """The base-asset quantity of a COIN-M ``trade`` (it carries its contract size), else 0."""
    if trade.contract_size is None:
        return 0
    return base_quantity(price, qty, trade.contract_size)


def _scaled(value: Decimal | int, digits: int = SCALE_DIGITS) -> int:
    # From the digits, not by Decimal arithmetic, which rounds to the context's 28 digits.
    sign, coefficient, exponent = Decimal(value).as_tuple()
    assert isinstance(exponent, int), f"not a finite number: {value}"
    number = int("".join(map(str, coefficient)) or "0")
    shift = exponent + digits
    if shift >= 0:
        number *= 10**shift
    else:
        number, rest = divmod(number, 10**-shift)
        if rest:
            raise ValueError(f"{value} has more than {digits} decimals")
    return int(-number if sign else number)


def _dec(value: int, digits: int = SCALE_DIGITS) -> Decimal:
    # Built from a string: exact at any length, where Decimal arithmetic would round to the
    # context's 28 digits.
    return Decimal(f"{value}E-{digits}")


def merge(a: Bar, b: Bar) -> Bar:
    """Combine two bars of disjoint trade sets into a new bar (associative and commutative)."""
    if a.trade_count == 0:
        return replace(b, ids=b.ids and b.ids.copy())
    if b.trade_count == 0:
        return replace(a, ids=a.ids and a.ids.copy())
    first = a if a.first_trade_id <= b.first_trade_id else b
    last = a if a.last_trade_id >= b.last_trade_id else b
    return Bar(
        open=first.open,
        high=max(a.high, b.high),
        low=min(a.low, b.low),
        close=last.close,
        volume=a.volume + b.volume,
        quote_volume=a.quote_volume + b.quote_volume,
        trade_count=a.trade_count + b.trade_count,
        taker_buy_volume=a.taker_buy_volume + b.taker_buy_volume,
        taker_buy_quote_volume=a.taker_buy_quote_volume + b.taker_buy_quote_volume,
        first_trade_id=first.first_trade_id,
        last_trade_id=last.last_trade_id,
        base_volume=a.base_volume + b.base_volume,
        taker_buy_base_volume=a.taker_buy_base_volume + b.taker_buy_base_volume,
        ids=None if a.ids is None or b.ids is None else a.ids.union(b.ids),
    )
