"""Fragments: the trades of one input batch that fall in one symbol's window, already folded.

Decoding and folding a whole batch at once (:func:`preaggregate`) takes the per-trade cost out of
Bytewax's windowing operator, which then merges a few fragments per batch instead of thousands of
trades; this is exact because the bar is a monoid (:mod:`binance_metrics.bars`). A fragment keeps
its trades' ids and amounts next to the folded bar, so that the step that counts every trade once
(:mod:`binance_metrics.seen_trades`) can take the duplicates out of a fragment that repeats some
trades — the rare case; the common one uses the folded bar as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Protocol

from binance_metrics.bars import Bar, trade_base_quantity
from binance_metrics.errors import InvalidTradeError
from binance_metrics.heartbeats import Heartbeat, decode_heartbeat
from binance_metrics.trade_ids import IdRuns
from binance_metrics.trades import Rejected, decode_priced_trades

#: The ``kind`` of a :class:`Rejected` futures trade that is not a market trade.
NOT_MARKET: Final = "not_market"


class FoldedTrade(NamedTuple):
    """What the bar needs of one trade (or aggregate of ``last_id - first_id + 1`` trades)."""

    first_id: int
    last_id: int
    price: int  # scaled by 10**8
    quantity: int  # scaled by 10**8
    buyer_is_maker: bool
    base_quantity: int = 0  # COIN-M: in the base asset, scaled by 10**8 (binance_metrics.contracts)


class PendingTrades(Protocol):
    """Trades kept as columns by a vectorised fold, built only when needed."""

    def folded_trades(self) -> list[FoldedTrade]: ...


@dataclass(slots=True)
class Fragment:
    """Trades of one symbol's window (index ``window``: it starts at ``window * length``)."""

    symbol: str
    window: int
    bar: Bar
    max_trade_time_ms: int
    trades: list[FoldedTrade] = field(default_factory=list)
    #: True while the trades came in as one run of consecutive ids, each once (the live case):
    #: then the ids are exactly ``bar.first_trade_id..bar.last_trade_id``.
    consecutive: bool = True
    #: True when every trade was fetched over REST (a gap filled, a hole healed), none live.
    backfilled: bool = False
    #: The trades, while ``trades`` is empty because a vectorised fold kept them as columns
    #: (a consecutive fragment: its bar and ids say all unless its trades must be looked at).
    pending: PendingTrades | None = field(default=None, compare=False, repr=False)

    def load_trades(self) -> None:
        """Fill ``trades`` from ``pending``."""
        if self.pending is not None:
            self.trades, self.pending = self.pending.folded_trades(), None

    def ids(self) -> IdRuns:
        """The trade ids of the fragment (every id of every aggregate)."""
        if self.consecutive:
            return IdRuns([(self.bar.first_trade_id, self.bar.last_trade_id)])
        ids = IdRuns()
        for trade in self.trades:
            ids.add(trade.first_id, trade.last_id)
        return ids

    def without(self, seen: IdRuns) -> tuple[Fragment | None, int, list[FoldedTrade]]:
        """This fragment minus the trades in ``seen`` and its own repeats.

        Returns ``(fragment or None when nothing is left, trades dropped as duplicates,
        aggregates that overlap ``seen`` only in part)``. Such an aggregate cannot be split
        (its quantity is a sum), so it is neither counted nor dropped silently: the caller
        reports it.
        """
        kept: list[FoldedTrade] = []
        duplicates = 0
        conflicts: list[FoldedTrade] = []
        taken = IdRuns(list(seen.runs))
        for trade in sorted(self.trades):
            if taken.covers(trade.first_id, trade.last_id):
                duplicates += trade.last_id - trade.first_id + 1
            elif taken.overlaps(trade.first_id, trade.last_id):
                conflicts.append(trade)
            else:
                taken.add(trade.first_id, trade.last_id)
                kept.append(trade)
        if not kept:
            return None, duplicates, conflicts
        bar = Bar()
        for first_id, last_id, price, quantity, buyer_is_maker, base in kept:
            bar.add(price, quantity, first_id, last_id, buyer_is_maker, base)
        # ``kept`` is sorted and free of overlaps, but may have holes: not ``consecutive``.
        fragment = Fragment(
            self.symbol, self.window, bar, self.max_trade_time_ms, kept, False, self.backfilled
        )
        return fragment, duplicates, conflicts


class StaleFragment(NamedTuple):
    """A fragment for a minute the dataflow has forgotten, for the sink to merge into the stored
    bar. It keeps its trades (unless its ids were checked already: then ``trades`` is empty and
    ``fragment.bar.ids`` says which trades it holds)."""

    symbol: str
    window_start_ms: int
    fragment: Fragment


def preaggregate(
    batch: Sequence[bytes],
    window_ms: int,
    count: Callable[[int, int], None],
    latest_ms: int | None = None,
) -> list[Fragment | Heartbeat | Rejected]:
    """Decode one input batch and fold its trades per (symbol, window).

    Returns a :class:`Fragment` per (symbol, window), the latest
    :class:`~binance_metrics.heartbeats.Heartbeat` per (symbol, window) and a :class:`Rejected`
    per record that is neither a valid trade (trade times after ``latest_ms`` included) nor a
    heartbeat; ``count(trades, rejected)`` is told how many trades and rejections.
    """
    groups: dict[tuple[str, int], Fragment] = {}
    beats: dict[tuple[str, int], Heartbeat] = {}
    out: list[Fragment | Heartbeat | Rejected] = []
    trades = 0
    for payload, decoded in zip(batch, decode_priced_trades(batch, latest_ms), strict=True):
        if isinstance(decoded, InvalidTradeError):
            beat = decode_heartbeat(payload)
            if beat is None:
                out.append(Rejected(payload, str(decoded)))
            elif latest_ms is not None and beat.through_ms > latest_ms:
                # Like a trade from the future, it would fill every minute up to it.
                out.append(
                    Rejected(payload, f"heartbeat time {beat.through_ms} ms is in the future")
                )
            else:
                key = (beat.symbol, beat.through_ms // window_ms)
                held = beats.get(key)
                if held is None or beat.through_ms > held.through_ms:
                    beats[key] = Heartbeat(beat.symbol, key[1], beat.through_ms)
            continue
        trade, price, qty = decoded
        if trade.trade_type is not None and trade.trade_type != "MARKET":
            # Futures insurance-fund and ADL trades are not market trades; keep them visible
            # (and their ids accounted for: binance_metrics.ledger.accounted).
            message = f"not a market trade (X={trade.trade_type}); klines exclude it"
            out.append(Rejected(payload, message, NOT_MARKET))
            continue
        window = trade.trade_time_ms // window_ms
        fragment = groups.get((trade.symbol, window))
        if fragment is None:
            fragment = groups[(trade.symbol, window)] = Fragment(
                trade.symbol, window, Bar(), trade.trade_time_ms, backfilled=trade.backfilled
            )
        else:
            if not trade.backfilled:
                fragment.backfilled = False
            if trade.trade_time_ms > fragment.max_trade_time_ms:
                fragment.max_trade_time_ms = trade.trade_time_ms
            if trade.trade_id != fragment.bar.last_trade_id + 1:
                fragment.consecutive = False
        first_id, last_id, buyer_is_maker = (
            trade.trade_id,
            trade.last_trade_id,
            trade.buyer_is_maker,
        )
        base = 0 if trade.contract_size is None else trade_base_quantity(trade, price, qty)
        fragment.bar.add(price, qty, first_id, last_id, buyer_is_maker, base)
        fragment.trades.append(FoldedTrade(first_id, last_id, price, qty, buyer_is_maker, base))
        trades += last_id - first_id + 1
    count(trades, len(out))
    out.extend(groups.values())
    out.extend(beats.values())
    return out
