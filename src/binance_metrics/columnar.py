"""Trades as columns, folded per (symbol, window) at once: the vectorised twin of ``preaggregate``.

History does not need a trade at a time. A chunk of a file held as numpy arrays is sorted by
(symbol, window, first trade id) and reduced per window with ``numpy.ufunc.reduceat``: one
:class:`~binance_metrics.fragments.Fragment` per (symbol, window) of the chunk, whose bar is the
bar the monoid (:mod:`binance_metrics.bars`) folds from the same trades (the tests prove it on
every field). Everything stays in integers, exactly:

* prices and quantities are int64, scaled by 10**8 (the reader routes a value that does not
  fit to the per-trade path);
* sums that may pass 2**63 (a SHIB-like minute's volume, every quote volume) are summed in
  limbs small enough that no partial sum can overflow, and put together as Python integers
  once per window: a quantity in two 32-bit limbs, price x quantity as the five diagonals of
  two 21-bit-limb numbers (each below 3 * 2**42 per trade, so a sum over 2**19 trades fits).

The vectorised bar is used as it is only where the ids of a window's trades form one run
without repeats (the common case, ``consecutive``). Any other window keeps its trades and is
folded by the monoid itself, and the seen-trades step takes its repeats out
(:mod:`binance_metrics.seen_trades`); a consecutive fragment gets its trades on demand
(:meth:`FoldedChunk.trades_of`) when that step needs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from binance_metrics.bars import Bar
from binance_metrics.contracts import base_quantity
from binance_metrics.errors import InvalidTradeError
from binance_metrics.fragments import FoldedTrade, Fragment

Int64s = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

#: Rows per reduction: keeps every limb sum below 2**63 (see the module doc).
MAX_GROUP_ROWS: Final = 2**19
_LIMB_BITS: Final = 21
_LIMB_MASK: Final = (1 << _LIMB_BITS) - 1
_LOW32: Final = (1 << 32) - 1


@dataclass(frozen=True)
class TradeColumns:
    """Valid trades as columns. ``symbol`` indexes ``symbols``; ``first_id == last_id`` for a
    raw trade; amounts are scaled by 10**8 and below 2**63; times in milliseconds."""

    symbols: Sequence[str]
    symbol: npt.NDArray[np.int32]
    first_id: Int64s
    last_id: Int64s
    price: Int64s
    quantity: Int64s
    time_ms: Int64s
    buyer_is_maker: Bools
    #: COIN-M: each trade's base-asset quantity (binance_metrics.contracts); None elsewhere.
    base_quantity: Int64s | None = None

    def __len__(self) -> int:
        return len(self.first_id)

    def take(self, rows: npt.NDArray[np.intp]) -> TradeColumns:
        return TradeColumns(
            self.symbols,
            self.symbol[rows],
            self.first_id[rows],
            self.last_id[rows],
            self.price[rows],
            self.quantity[rows],
            self.time_ms[rows],
            self.buyer_is_maker[rows],
            None if self.base_quantity is None else self.base_quantity[rows],
        )


def with_contract_size(columns: TradeColumns, contract_size: int) -> TradeColumns:
    """``columns`` of COIN-M trades in contracts of ``contract_size``, with each trade's
    base-asset quantity (:func:`~binance_metrics.contracts.base_quantity`); columns that have
    theirs keep them."""
    if columns.base_quantity is not None or len(columns) == 0:
        return columns
    bases = [
        base_quantity(price, qty, contract_size)
        for price, qty in zip(columns.price.tolist(), columns.quantity.tolist(), strict=True)
    ]
    if max(bases) >= 2**63:  # no real trade: a price of a fraction of a cent for millions
        raise InvalidTradeError(f"a base quantity of {max(bases)} (10**-8) is beyond any trade")
    return replace(columns, base_quantity=np.array(bases, np.int64))


@dataclass
class FoldedChunk:
    """The fragments of one chunk, and the rows behind each (for :meth:`trades_of`)."""

    fragments: list[Fragment]
    columns: TradeColumns  # sorted by (symbol, window, first id)
    starts: Int64s  # fragment i holds the rows starts[i]..ends[i] - 1
    ends: Int64s
    trades: int  # raw trades in the chunk

    def trades_of(self, index: int) -> list[FoldedTrade]:
        """The trades of fragment ``index``, as the per-trade path keeps them."""
        lo, hi = int(self.starts[index]), int(self.ends[index])
        return _trades(self.columns, lo, hi)

    def reorder(self, order: npt.NDArray[np.intp]) -> None:
        self.fragments = [self.fragments[i] for i in order]
        self.starts, self.ends = self.starts[order], self.ends[order]


def fold_columns(columns: TradeColumns, window_ms: int) -> FoldedChunk:
    """One fragment per (symbol, window) of ``columns`` (a window over more than
    :data:`MAX_GROUP_ROWS` rows comes as several)."""
    windows = columns.time_ms // window_ms
    n = len(columns)
    order: npt.NDArray[np.intp] | None = None
    if not _sorted(columns.symbol, windows, columns.first_id):
        order = np.lexsort((columns.first_id, windows, columns.symbol))
        columns, windows = columns.take(order), windows[order]
    if n == 0:
        return FoldedChunk([], columns, np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    symbol, first, last = columns.symbol, columns.first_id, columns.last_id
    price, qty = columns.price, columns.quantity
    change = np.flatnonzero((symbol[1:] != symbol[:-1]) | (windows[1:] != windows[:-1])) + 1
    starts = np.union1d(np.concatenate(([0], change)), np.arange(0, n, MAX_GROUP_ROWS))
    ends = np.append(starts[1:], n)

    # A window is consecutive when each trade begins right after the one before it.
    gap = np.flatnonzero(first[1:] != last[:-1] + 1) + 1
    broken = np.zeros(len(starts), np.bool_)
    inside = gap[np.isin(gap, starts, invert=True)]  # a gap at a group's start is no break
    broken[np.searchsorted(starts, inside, side="right") - 1] = True

    taker = ~columns.buyer_is_maker
    count_column = np.add.reduceat(last - first + 1, starts)
    counts = count_column.tolist()
    high = np.maximum.reduceat(price, starts).tolist()
    low = np.minimum.reduceat(price, starts).tolist()
    latest = np.maximum.reduceat(columns.time_ms, starts).tolist()
    broken_list = broken.tolist()
    volume = _sums(qty, starts)
    taker_volume = _sums(np.where(taker, qty, 0), starts)
    quote, taker_quote = _product_sums(price, qty, taker, starts)
    no_base = [0] * len(starts)
    base, taker_base = no_base, no_base
    if columns.base_quantity is not None:
        base = _sums(columns.base_quantity, starts)
        taker_base = _sums(np.where(taker, columns.base_quantity, 0), starts)

    # Per window in Python, from lists: indexing numpy scalars costs more than the fold.
    names = columns.symbols
    fragments = []
    groups = zip(
        starts.tolist(), ends.tolist(), symbol[starts].tolist(), windows[starts].tolist(),
        price[starts].tolist(), price[ends - 1].tolist(), first[starts].tolist(),
        last[ends - 1].tolist(), strict=True,
    )  # fmt: skip
    for i, (lo, hi, name, window, opened, closed, first_id, last_id) in enumerate(groups):
        if broken_list[i]:
            trades = _trades(columns, lo, hi)
            bar = Bar()
            for trade in trades:
                bar.add(trade.price, trade.quantity, trade.first_id, trade.last_id,
                        trade.buyer_is_maker, trade.base_quantity)  # fmt: skip
            fragments.append(Fragment(names[name], window, bar, latest[i], trades, False))
            continue
        bar = Bar(
            open=opened,
            high=high[i],
            low=low[i],
            close=closed,
            volume=volume[i],
            quote_volume=quote[i],
            trade_count=counts[i],
            taker_buy_volume=taker_volume[i],
            taker_buy_quote_volume=taker_quote[i],
            first_trade_id=first_id,
            last_trade_id=last_id,
            base_volume=base[i],
            taker_buy_base_volume=taker_base[i],
        )
        fragments.append(Fragment(names[name], window, bar, latest[i]))
    folded = FoldedChunk(fragments, columns, starts, ends, int(count_column.sum()))
    if order is not None:
        # In the order of the input (of each window's first row), as the per-trade path sees
        # them: a trade of a year ago at the end of a chunk comes last, as a late trade.
        folded.reorder(np.argsort(np.minimum.reduceat(order, starts), kind="stable"))
    return folded


def _sorted(symbol: npt.NDArray[np.int32], windows: Int64s, first: Int64s) -> bool:
    """Whether the rows are in (symbol, window, first id) order already (files usually are)."""
    ds = np.diff(symbol)
    dw = np.diff(windows)
    df = np.diff(first)
    return bool(np.all((ds > 0) | ((ds == 0) & ((dw > 0) | ((dw == 0) & (df >= 0))))))


def _sums(values: Int64s, starts: Int64s) -> list[int]:
    """Exact sums of non-negative int64 values per group, in two 32-bit limbs."""
    high = np.add.reduceat(values >> 32, starts).tolist()
    low = np.add.reduceat(values & _LOW32, starts).tolist()
    return [(h << 32) + lo for h, lo in zip(high, low, strict=True)]


def _product_sums(
    price: Int64s, qty: Int64s, taker: Bools, starts: Int64s
) -> tuple[list[int], list[int]]:
    """Exact sums of price x quantity per group, over all rows and over the ``taker`` rows."""
    p = [(price >> (_LIMB_BITS * k)) & _LIMB_MASK for k in range(3)]
    q = [(qty >> (_LIMB_BITS * k)) & _LIMB_MASK for k in range(3)]
    all_diagonals = []
    taker_diagonals = []
    for k in range(5):
        diagonal = sum(p[i] * q[k - i] for i in range(max(0, k - 2), min(k, 2) + 1))
        assert isinstance(diagonal, np.ndarray)
        all_diagonals.append(np.add.reduceat(diagonal, starts))
        taker_diagonals.append(np.add.reduceat(np.where(taker, diagonal, 0), starts))

    def combine(diagonals: list[Int64s]) -> list[int]:
        d0, d1, d2, d3, d4 = (d.tolist() for d in diagonals)
        b = _LIMB_BITS
        return [
            a0 + (a1 << b) + (a2 << 2 * b) + (a3 << 3 * b) + (a4 << 4 * b)
            for a0, a1, a2, a3, a4 in zip(d0, d1, d2, d3, d4, strict=True)
        ]

    return combine(all_diagonals), combine(taker_diagonals)


def _trades(columns: TradeColumns, lo: int, hi: int) -> list[FoldedTrade]:
    base = columns.base_quantity
    return rows_of(
        columns.first_id[lo:hi],
        columns.last_id[lo:hi],
        columns.price[lo:hi],
        columns.quantity[lo:hi],
        columns.buyer_is_maker[lo:hi],
        None if base is None else base[lo:hi],
    )


def rows_of(
    first_id: Int64s,
    last_id: Int64s,
    price: Int64s,
    quantity: Int64s,
    buyer_is_maker: Bools,
    base_quantity: Int64s | None = None,
) -> list[FoldedTrade]:
    """Rows of columns as the per-trade path keeps them."""
    bases = [0] * len(first_id) if base_quantity is None else base_quantity.tolist()
    return [
        FoldedTrade(first, last, p, q, maker, base)
        for first, last, p, q, maker, base in zip(
            first_id.tolist(),
            last_id.tolist(),
            price.tolist(),
            quantity.tolist(),
            buyer_is_maker.tolist(),
            bases,
            strict=True,
        )
    ]


def trade_fragment(symbol: str, window: int, trade: FoldedTrade, time_ms: int) -> Fragment:
    """A fragment of one trade, for a trade the columns cannot hold (an amount of 2**63 or
    more); it merges with the window's other fragments like any other."""
    bar = Bar().add(trade.price, trade.quantity, trade.first_id, trade.last_id,
                    trade.buyer_is_maker, trade.base_quantity)  # fmt: skip
    return Fragment(symbol, window, bar, time_ms, [trade])
