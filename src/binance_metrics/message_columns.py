"""A batch of trade messages folded as columns: the dataflow's vectorised ``preaggregate``.

The per-trade path (:func:`~binance_metrics.fragments.preaggregate`) costs a few microseconds of
Python per trade: the exact parse of price and quantity, the checks, the fold. Here a whole
Kafka batch is decoded with one msgspec call, its prices and quantities are parsed and checked
in numpy, and its trades are folded per (symbol, window) by
:func:`~binance_metrics.columnar.fold_columns`, which the tests prove equal to the monoid.

The columns vouch only for what they can check exactly; every other record goes to the
per-trade path, unchanged, so the rules and the dead letters are the same as ever:

* a price or quantity in Binance's own shape (``"61837.63000000"``: digits, a point, eight
  digits, at most 18 digits in all) is parsed here (:func:`scaled_column`); any other spelling,
  valid or not, is the per-trade path's to parse or refuse;
* a record that may be a heartbeat, holds a line break, is not a market trade, was backfilled,
  carries a COIN-M contract size, or fails any check (the bounds of
  :func:`~binance_metrics.trades.price_and_quantity`) goes there too, as does the whole batch
  when msgspec cannot decode it as lines.

A fragment folded here keeps its trades as columns (:class:`TradeRows`) until the seen-trades
step asks for them (:meth:`~binance_metrics.seen_trades.SeenTrades.admit`): the live case never
does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import msgspec
import numpy as np

from binance_metrics.columnar import Bools, Int64s, TradeColumns, fold_columns, rows_of
from binance_metrics.fragments import FoldedTrade, Fragment, preaggregate
from binance_metrics.heartbeats import Heartbeat
from binance_metrics.trades import (
    EARLIEST_TRADE_TIME_MS,
    MAX_QUOTE,
    SCALE_DIGITS,
    Rejected,
    TradeMessage,
    trade_decoder,
)

#: Digits of the longest value parsed here: below 10**18, so it fits int64 with room to sum.
MAX_DIGITS: Final = 18
_PLACES: Final = 10 ** np.arange(MAX_DIGITS - 1, -1, -1, dtype=np.int64)
_EVENTS: Final = frozenset({"trade", "aggTrade"})
_MARKET_TYPES: Final = frozenset({None, "MARKET"})
#: A product of two values of ``d1`` and ``d2`` digits is below 10**(d1 + d2).
_QUOTE_DIGITS: Final = len(str(MAX_QUOTE)) - 1
assert 10**_QUOTE_DIGITS == MAX_QUOTE


def scaled_column(texts: Sequence[str]) -> tuple[Int64s, Bools]:
    """:func:`~binance_metrics.trades.parse_scaled` of each text in Binance's own shape.

    Returns ``(values, exact)``: ``values[i] == parse_scaled(texts[i])`` wherever ``exact[i]``;
    ``exact`` is False for every other text (another spelling, more than
    :data:`MAX_DIGITS` digits, not a number), which the caller parses one at a time.
    """
    n = len(texts)
    none = np.zeros(n, np.bool_)
    try:
        raw = np.array(texts, dtype=np.bytes_)
    except UnicodeEncodeError:  # not ASCII: not a number of Binance's
        return np.zeros(n, np.int64), none
    if n == 0 or "\x00" in "".join(texts):  # numpy drops trailing NULs: the lengths would lie
        return np.zeros(n, np.int64), none
    width = MAX_DIGITS + 1
    lengths = np.strings.str_len(raw)
    exact = (lengths > SCALE_DIGITS + 1) & (lengths <= width)
    # Right-aligned, zero-padded to one width, the point of a text in the shape is at one place.
    fits = np.where(exact, raw, b"0").astype(f"S{width}")
    codes = np.strings.rjust(fits, width, b"0").view(np.uint8).reshape(n, width)
    point = width - SCALE_DIGITS - 1
    exact &= codes[:, point] == ord(".")
    digits = np.delete(codes, point, axis=1) - np.uint8(ord("0"))  # wraps below "0"
    exact &= (digits <= 9).all(axis=1)
    values = digits.astype(np.int64) @ _PLACES
    values[~exact] = 0
    return values, exact


class TradeRows:
    """A fragment's trades: rows ``lo..hi - 1`` of its batch's columns, built into
    :class:`~binance_metrics.fragments.FoldedTrade` only when asked. Pickled (a Bytewax
    exchange between workers), it carries its own rows only."""

    __slots__ = ("columns", "hi", "lo")

    def __init__(self, columns: TradeColumns, lo: int, hi: int) -> None:
        self.columns, self.lo, self.hi = columns, lo, hi

    def folded_trades(self) -> list[FoldedTrade]:
        c, lo, hi = self.columns, self.lo, self.hi
        return rows_of(
            c.first_id[lo:hi], c.last_id[lo:hi], c.price[lo:hi], c.quantity[lo:hi],
            c.buyer_is_maker[lo:hi],
        )  # fmt: skip

    def __reduce__(self) -> tuple[type[TradeRows], tuple[TradeColumns, int, int]]:
        return TradeRows, (self.columns.take(np.arange(self.lo, self.hi)), 0, self.hi - self.lo)


def fold_messages(
    batch: Sequence[bytes],
    window_ms: int,
    count: Callable[[int, int], None],
    latest_ms: int | None = None,
) -> list[Fragment | Heartbeat | Rejected]:
    """What :func:`~binance_metrics.fragments.preaggregate` returns for ``batch``, folded as
    columns where it can be: the same trades, heartbeats and rejections, with a window's trades
    in one fragment or a few."""
    decoded, plain, others = _decode(batch)
    if decoded is None:
        return preaggregate(batch, window_ms, count, latest_ms)
    columns, vouched = _columns(decoded, latest_ms)
    if not vouched.all():
        others = others + [plain[i] for i in np.flatnonzero(~vouched).tolist()]
        columns = columns.take(np.flatnonzero(vouched))
    fragments = _fragments(columns, window_ms)
    trades = int((columns.last_id - columns.first_id + 1).sum())
    count(trades, 0)
    if not others:
        return list(fragments)
    # The per-trade path for the rest: its rejections first, its heartbeats after every
    # fragment, as it orders them itself.
    rest = preaggregate(others, window_ms, count, latest_ms)
    rejected: list[Fragment | Heartbeat | Rejected] = [r for r in rest if isinstance(r, Rejected)]
    return rejected + fragments + [r for r in rest if not isinstance(r, Rejected)]


def _decode(batch: Sequence[bytes]) -> tuple[list[TradeMessage] | None, list[bytes], list[bytes]]:
    """``(decoded, plain, others)``: the records that can be decoded as lines (line ``i`` is
    ``plain[i]``), decoded, and the rest; ``decoded`` None when the lines do not decode."""
    joined = b"\n".join(batch)
    if joined.count(b"\n") == len(batch) - 1 and b'"heartbeat"' not in joined:
        plain, others = list(batch), []
    else:
        plain = [p for p in batch if b"\n" not in p and b'"heartbeat"' not in p]
        others = [p for p in batch if b"\n" in p or b'"heartbeat"' in p]
        joined = b"\n".join(plain)
    if not plain:
        return [], [], others
    try:
        decoded = trade_decoder.decode_lines(joined)
    except msgspec.DecodeError:
        return None, plain, others
    if len(decoded) != len(plain):  # a blank record: decode_lines skips it
        return None, plain, others
    return decoded, plain, others


def _columns(trades: list[TradeMessage], latest_ms: int | None) -> tuple[TradeColumns, Bools]:
    """The trades as columns, and which of them the columns vouch for (see the module)."""
    n = len(trades)
    vouched = np.ones(n, np.bool_)

    def only(values: Sequence[object], allowed: frozenset[object]) -> None:
        if not allowed.issuperset(values):
            vouched[:] &= np.fromiter((v in allowed for v in values), np.bool_, n)

    only([t.event_type for t in trades], _EVENTS)
    only([t.trade_type for t in trades], _MARKET_TYPES)
    only([t.contract_size for t in trades], frozenset({None}))
    only([t.backfilled for t in trades], frozenset({False}))
    names = [t.symbol for t in trades]
    symbols = list(dict.fromkeys(names))
    codes = list(map({name: i for i, name in enumerate(symbols)}.__getitem__, names))
    upper = np.array([bool(s) and s.isupper() for s in symbols] or [True], np.bool_)
    symbol = np.array(codes, np.int32)
    if n:
        vouched &= upper[symbol]
    try:
        first = np.array([t.trade_id for t in trades], np.int64)
        last = np.array(
            [t.trade_id if t.aggregate_last_id is None else t.aggregate_last_id for t in trades],
            np.int64,
        )
        time_ms = np.array([t.trade_time_ms for t in trades], np.int64)
    except OverflowError:  # beyond int64: the per-trade path says what is wrong
        empty = np.zeros(n, np.int64)
        first = last = time_ms = empty
        vouched[:] = False
    price_texts = [t.price for t in trades]
    quantity_texts = [t.quantity for t in trades]
    price, price_exact = scaled_column(price_texts)
    quantity, quantity_exact = scaled_column(quantity_texts)
    digits = np.fromiter(map(len, price_texts), np.int64, n) + np.fromiter(
        map(len, quantity_texts), np.int64, n
    )
    vouched &= (
        price_exact
        & quantity_exact
        & (price > 0)
        & (quantity > 0)
        & (digits - 2 <= _QUOTE_DIGITS)  # each has a point: digits - 2 digits in all
        & (first >= 0)
        & (last >= first)
        & (time_ms >= EARLIEST_TRADE_TIME_MS)
    )
    if latest_ms is not None:
        vouched &= time_ms <= latest_ms
    maker = np.array([t.buyer_is_maker for t in trades], np.bool_)
    columns = TradeColumns(symbols, symbol, first, last, price, quantity, time_ms, maker)
    return columns, vouched


def _fragments(columns: TradeColumns, window_ms: int) -> list[Fragment | Heartbeat | Rejected]:
    folded = fold_columns(columns, window_ms)
    rows = folded.columns
    out: list[Fragment | Heartbeat | Rejected] = []
    for fragment, lo, hi in zip(
        folded.fragments, folded.starts.tolist(), folded.ends.tolist(), strict=True
    ):
        if fragment.consecutive:  # the others hold their trades already
            fragment.pending = TradeRows(rows, lo, hi)
        out.append(fragment)
    return out
