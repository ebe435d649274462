"""Heartbeats for quiet symbols, from the ticker: a quiet minute closes on time with no frame.

A connection vouches for its symbols only after a trade frame (:mod:`~binance_metrics.ingest.
heartbeats`), so a connection whose every symbol is quiet (the default single symbol, or quiet
symbols after a reconnect) vouches for none, and their quiet minutes would close at the next
trade. :class:`QuietWatch` proves instead, by trade ids, that nothing was missed: just after each
window boundary it asks the ticker (the tail check's call, :meth:`~binance_metrics.ingest.tail.
TailWatch.check`) for the symbols not vouched for past the boundary. A row says that ``lastId``
was the symbol's newest trade at ``closeTime`` (Binance's clock, the one trade times use). When
the symbol's sequence is whole through ``lastId`` (nothing held, no gap at the tail, its resume
judged), every trade up to ``closeTime`` has been handed to the producer, in order, before the
heartbeat is offered: it may vouch through :func:`vouched_through` ``closeTime``. A gap the row
reveals is backfilled by the tail check, and the symbol is vouched for at a later boundary.

The checks cost REST weight (2 per 20 symbols, or 80 for all): they use at most a tenth of
``rest_weight_budget`` per minute, so with many quiet symbols and 1-second windows a check may
skip boundaries. A symbol without a trade in 24 hours has no ``lastId`` and is not vouched for.
A heartbeat vouching too far is corrected, not lost: a trade that comes later for its minute
is a late trade, merged into the bar (:mod:`binance_metrics.bar_book`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from binance_metrics.ingest.backfill import TickerRow, ticker_weight
from binance_metrics.ingest.heartbeats import HEARTBEAT_EVERY_MS, Heartbeats
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.ingest.tail import TailWatch
from binance_metrics.trades import now_ms

log = logging.getLogger(__name__)

#: How far behind ``closeTime`` the ticker is trusted. Binance keeps the 24-hour statistics
#: beside its matching engine, and ``closeTime`` is when the row was read: a trade being counted
#: just then may not be in ``lastId`` yet. A second covers that; a larger one delays the quiet
#: minute's bar by as much.
TICKER_MARGIN_MS: Final = 1_000
#: Ask this long after a boundary: ``closeTime`` minus the margin has then passed it, with room
#: for the two clocks to differ a little.
ASK_AFTER_MS: Final = TICKER_MARGIN_MS + 300
#: The share of ``rest_weight_budget`` the checks may use per minute.
WEIGHT_SHARE: Final = 10


def vouched_through(close_time_ms: int) -> int:
    """The last millisecond of the last whole second before ``close_time_ms`` minus the
    margin (whole seconds, like the frames' heartbeats)."""
    edge = close_time_ms - TICKER_MARGIN_MS
    return edge - edge % HEARTBEAT_EVERY_MS - 1


class QuietWatch:
    """The quiet checks of one ingestor; :meth:`run` until cancelled."""

    def __init__(
        self,
        tail: TailWatch,
        heartbeats: Heartbeats,
        sequences: Mapping[str, SymbolSequence],
        symbols: Callable[[], Sequence[str]],
        awaiting: dict[str, int],
        *,
        window_ms: int,
        weight_budget: int,
    ) -> None:
        """``symbols``: the symbols ingested now; ``awaiting``: the resume's symbols whose
        first live trade is not judged yet (a row showing nothing missed judges it)."""
        self._tail = tail
        self._heartbeats = heartbeats
        self._sequences = sequences
        self._symbols = symbols
        self._awaiting = awaiting
        self._window_ms = window_ms
        self._weight_per_minute = max(1, weight_budget // WEIGHT_SHARE)
        self.checks = 0  # boundaries checked
        self.vouched = 0  # heartbeats offered from ticker rows

    async def run(self) -> None:
        window = self._window_ms
        checked, not_before = -window, 0
        while True:
            now = now_ms()
            start = max(now, not_before) - ASK_AFTER_MS
            boundary = max(-(-start // window) * window, checked + window)
            await asyncio.sleep(max(0, boundary + ASK_AFTER_MS - now) / 1000)
            checked = boundary
            vouched, sequences = self._heartbeats.vouched, self._sequences
            due = [
                s
                for s in self._symbols()
                if vouched.get(s, -1) < boundary - 1 and sequences[s].next_id is not None
            ]
            if not due:
                continue
            self.checks += 1
            self.vouch(await self._tail.check(due))
            spacing = ticker_weight(len(due)) * 60_000 / self._weight_per_minute
            not_before = now_ms() + int(spacing)

    def vouch(self, rows: Mapping[str, TickerRow]) -> None:
        """A heartbeat for each symbol whose sequence is whole through its row's ``lastId``."""
        for symbol, row in rows.items():
            sequence = self._sequences[symbol]
            if row.closeTime < 0 or sequence.next_id is None or sequence.missing is not None:
                continue  # nothing to go by, or a gap (the tail check fills it)
            expected = self._awaiting.get(symbol)
            if expected is not None:
                if row.lastId + 1 != expected:
                    continue  # its first live trade is judged as it comes
                del self._awaiting[symbol]  # judged: nothing was made while we were down
            elif sequence.next_id <= row.lastId:
                continue
            if self._heartbeats.vouch(symbol, vouched_through(row.closeTime), now_ms()):
                self.vouched += 1
