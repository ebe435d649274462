"""No gaps at the tail: trades missed with no later trade to reveal them are fetched anyway.

A gap is seen when a later trade of the same symbol arrives (:mod:`~binance_metrics.ingest.
sequence`). After an outage followed by a quiet market, or at a resume whose symbol does not
trade, no later trade comes, and the missed trades would wait for it, for ever if the symbol
stops trading. :class:`TailWatch` asks Binance for each symbol's newest trade id
(:meth:`~binance_metrics.ingest.backfill.RestBackfill.latest_trade_ids`: one ticker call per 20
symbols, weight 2) and tells the sequence (:meth:`~binance_metrics.ingest.sequence.
SymbolSequence.expect_through`); a gap at the tail is then filled over REST like any other
(:class:`~binance_metrics.ingest.gaps.GapFiller`). It asks:

* for the symbols of a connection just opened (start or reconnect), ``backfill_grace_s`` after;
* every ``tail_check_s`` for the symbols without a live trade for ``quiet_after_s``.

So a quiet symbol whose trades were missed is complete within about ``quiet_after_s +
tail_check_s`` (30 s by default), not at its next trade. ``tail_check_s = 0`` turns it off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

from binance_metrics.ingest.backfill import BackfillError, RestBackfill, TickerRow
from binance_metrics.ingest.gaps import GapFiller
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.ingest.tuning import IngestTuning

log = logging.getLogger(__name__)


class TailWatch:
    """The tail checks of one ingestor; :meth:`run` until cancelled."""

    def __init__(
        self,
        sequences: Mapping[str, SymbolSequence],
        rest: RestBackfill,
        gaps: GapFiller,
        last_trade_at: Mapping[str, float],
        tuning: IngestTuning,
        awaiting: dict[str, int],
    ) -> None:
        """``last_trade_at``: symbol -> monotonic time of its last live trade (read only).
        ``awaiting``: the resume's symbols whose first live trade is not judged yet; a tail
        check judges it instead (the same cap, ``max_resume_gap``)."""
        self._sequences = sequences
        self._rest = rest
        self._gaps = gaps
        self._last_trade_at = last_trade_at
        self._every_s = tuning.tail_check_s
        self._quiet_s = tuning.quiet_after_s
        self._grace_s = tuning.backfill_grace_s
        self._cap = tuning.max_resume_gap
        self._awaiting = awaiting
        self._due: set[str] = set()
        self._wake = asyncio.Event()
        self._started = time.monotonic()
        self.checks = 0  # ticker rounds asked
        self.tail_gaps = 0  # gaps opened at the tail

    @property
    def enabled(self) -> bool:
        return self._every_s > 0

    def connected(self, symbols: Iterable[str]) -> None:
        """A connection for ``symbols`` opened: check them soon."""
        self._due.update(symbols)
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._every_s)
                await asyncio.sleep(self._grace_s)  # the new connection delivers first
            except TimeoutError:
                pass
            self._wake.clear()
            due = self._due | self._quiet(time.monotonic())
            self._due.clear()
            if due:
                await self.check(due)

    async def check(self, symbols: Iterable[str]) -> dict[str, TickerRow]:
        """Ask the newest ids of ``symbols``; open (and fill) the gaps they reveal. Returns
        the ticker rows (none when REST failed: they are asked again later)."""
        wanted = sorted(s for s in symbols if self._sequences[s].next_id is not None)
        if not wanted:
            return {}
        self.checks += 1
        try:
            latest = await self._rest.latest_trade_ids(wanted)
        except BackfillError as exc:
            log.warning("could not ask the latest trade ids (%s): asking again later", exc)
            self._due.update(wanted)
            return {}
        for symbol, row in latest.items():
            last_id = row.lastId
            sequence = self._sequences[symbol]
            first = sequence.next_id
            if first is None or not sequence.expect_through(last_id):
                continue
            self.tail_gaps += 1
            self._awaiting.pop(symbol, None)
            missed = last_id - first + 1
            log.info("%s: trades %d..%d were missed at the tail: backfilling", symbol, first,
                     last_id)  # fmt: skip
            if sequence.pending or missed <= self._cap:
                self._gaps.start(sequence)
            else:
                self._gaps.give_up(
                    sequence, f"{missed} trades missed at the tail, more than max_resume_gap "
                    f"{self._cap}: not fetched over REST",
                )  # fmt: skip
        return latest

    def _quiet(self, now: float) -> set[str]:
        return {
            symbol
            for symbol in self._sequences
            if now - self._last_trade_at.get(symbol, self._started) >= self._quiet_s
        }
