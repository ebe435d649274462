"""Per-symbol trade-id sequencing: exactly once, in trade-id order, gaps detected.

Binance trade ids are consecutive per symbol. The sequencer remembers the next id it expects:

* ``t == next_id``: emitted at once (the hot path);
* ``t < next_id`` or already held: a duplicate (two overlapping connections during a
  make-before-break switch, or a replay) and dropped;
* ``t > next_id``: a gap. The trade is held (``pending``) until the missing ids arrive, either
  live from another connection or from REST backfill (:meth:`fill`); then the held trades are
  released in order. Nothing after a gap is emitted before the gap is filled, so each symbol's
  trades reach Kafka in trade-id order.

A gap at the tail (trades missed with no later trade yet to reveal them: an outage, then a quiet
market) is opened by :meth:`SymbolSequence.expect_through`, when REST says which id is the
newest: the ids up to it are then missing like any other gap, with no trade held after them.

Before the first trade there is no expectation: the stream starts wherever it starts, unless
:meth:`SymbolSequence.resume_after` set one; then a first trade above it opens a gap. Which id
to resume after, and what to make of the first live trade, is the resume policy's business
(:class:`binance_metrics.ingest.resume.Resume`), not the sequence's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from binance_metrics.trades import TradeMessage

Emit = Callable[[TradeMessage], None]


class SymbolSequence:
    """Sequencing state of one symbol; ``emit`` receives trades in id order, each once."""

    __slots__ = (
        "backfilled",
        "duplicates",
        "emit",
        "gaps",
        "high",
        "known_last",
        "next_id",
        "passed",
        "pending",
        "symbol",
        "unfilled",
    )

    def __init__(self, symbol: str, emit: Emit) -> None:
        self.symbol = symbol
        self.emit = emit
        self.next_id: int | None = None
        self.pending: dict[int, TradeMessage] = {}
        self.high = 0  # highest id held in pending (meaningful only while pending is not empty)
        self.known_last = -1  # the newest id known to exist (REST), -1: none
        self.gaps = 0
        self.duplicates = 0
        self.backfilled = 0
        self.unfilled = 0
        self.passed = 0  # ids passed over: not market trades (futures aggTrades leave them out)

    def resume_after(self, trade_id: int) -> None:
        """Expect ``trade_id + 1`` next: ``trade_id`` is the last one already delivered.

        Only before the first trade: a live trade above it then opens a gap (to backfill),
        and trades up to ``trade_id`` are duplicates.
        """
        if self.next_id is not None or self.pending:
            raise RuntimeError(f"{self.symbol}: resume_after once, before the first trade")
        self.next_id = trade_id + 1

    def start_afresh(self) -> None:
        """Drop the expectation set by :meth:`resume_after`: the next trade starts the sequence.

        Only while no trade is held (a held trade waits on the expectation).
        """
        if self.pending:
            raise RuntimeError(f"{self.symbol}: trades are held, the expectation is in use")
        self.next_id = None

    def expect_through(self, last_id: int) -> bool:
        """``last_id`` exists (REST says so): return True when that opened a gap at the tail.

        Nothing happens before the first trade (no expectation to compare with), nor when
        ``last_id`` was already delivered, held, or known.
        """
        if self.next_id is None or last_id < self.next_id or last_id <= self.known_last:
            return False
        if self.pending and last_id <= self.high:
            return False  # inside or before what is held: that gap is known already
        extends = not self.pending and self.known_last >= self.next_id  # the same tail gap
        self.known_last = last_id
        if not extends:
            self.gaps += 1
        return True

    def offer(self, trade: TradeMessage) -> bool:
        """Take a live trade; return True when it opened a new gap (a backfill is needed)."""
        t = trade.trade_id
        if t == self.next_id and not self.pending:
            self.next_id = t + 1
            self.emit(trade)
            return False
        if self.next_id is None:
            self.next_id = t + 1
            self.emit(trade)
            return False
        if t < self.next_id or t in self.pending:
            self.duplicates += 1
            return False
        if t == self.next_id:
            self.next_id = t + 1
            self.emit(trade)
            self._release()
            return False
        # t > next_id: a new gap unless it extends the run already held after a gap.
        tail = not self.pending and self.known_last >= self.next_id  # a tail gap, counted
        new_gap = not self.pending or t > self.high + 1
        if new_gap or t > self.high:
            self.high = t
        self.pending[t] = trade
        if new_gap and not tail:
            self.gaps += 1
        return new_gap

    @property
    def missing(self) -> tuple[int, int] | None:
        """The first missing id range ``(first, last)``, or None when nothing is missing."""
        next_id = self.next_id
        if next_id is None:
            return None
        if self.pending:
            return next_id, min(self.pending) - 1
        if self.known_last >= next_id:
            return next_id, self.known_last  # a gap at the tail
        return None

    def fill(self, trades: Iterable[TradeMessage]) -> int:
        """Emit backfilled trades that are next in sequence; return how many were used."""
        gap = self.missing
        if gap is None:
            return 0
        end = gap[1] + 1
        used = 0
        for trade in trades:
            if trade.trade_id != self.next_id:
                continue  # already seen live meanwhile, or not the one we wait for
            if trade.last_trade_id >= end:
                break  # (an aggregate across the gap's end: cut it first, ingest/aggregates.py)
            self.next_id = trade.last_trade_id + 1
            self.emit(trade)
            used += 1
            self.backfilled += trade.trade_count
        self._release()
        return used

    def pass_over(self, through_id: int, *, lost: bool) -> int:
        """Expect ``through_id + 1`` next: the missing ids up to it are not market trades
        (``lost`` False: counted as ``passed``) or given up (counted as unfilled). Only within
        the first missing range; return how many ids were passed."""
        gap = self.missing
        if gap is None or through_id < gap[0]:
            return 0
        through = min(through_id, gap[1])
        count = through - gap[0] + 1
        if lost:
            self.unfilled += count
        else:
            self.passed += count
        self.next_id = through + 1
        self._release()
        return count

    def skip_gap(self) -> int:
        """Give up on the first missing range (REST failed for good); return its size."""
        gap = self.missing
        if gap is None:
            return 0
        first, last = gap
        self.unfilled += last - first + 1
        self.next_id = last + 1
        self._release()
        return last - first + 1

    def _release(self) -> None:
        pending, next_id = self.pending, self.next_id
        if next_id is None:
            return
        while next_id in pending:
            trade = pending.pop(next_id)
            next_id += 1
            self.next_id = next_id
            self.emit(trade)
