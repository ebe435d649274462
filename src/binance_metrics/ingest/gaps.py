"""Gap filling: a symbol's missing trade ids fetched over REST, or the gap given up, never lost
silently.

When :meth:`SymbolSequence.offer` opens a gap, :meth:`GapFiller.start` starts one task for the
symbol (at most one at a time). It waits ``backfill_grace_s`` (an overlapping connection may
still deliver the ids), then asks :class:`~binance_metrics.ingest.backfill.RestBackfill` for the
first missing range, validates what comes back (invalid rows are dead letters), fills the
sequence, which releases the trades held behind the gap, and goes on while anything is missing.

A gap is given up (:meth:`GapFiller.give_up`: counted as unfilled, logged as an error, the held
trades released in order) when REST keeps failing, when REST has no trade for the first missing
id three times in a row, when the ingestor decides so (too many trades held, a resume gap above
``max_resume_gap``), and at shutdown: held trades were received, so they are produced.

On the futures markets the missing ids come from ``aggTrades`` by time instead (their
``historicalTrades`` needs an API key): from the time of the last trade produced (or, after a
restart, an hour at a time back from the first held trade) until the aggregates pass the gap,
each cut to the gap by :func:`~binance_metrics.ingest.aggregates.cut_to_gap`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from binance_metrics.errors import InvalidTradeError
from binance_metrics.ingest.aggregates import Edges, Pass, cut_to_gap, fetch_aggregates
from binance_metrics.ingest.backfill import BackfillError, RestBackfill
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.ingest.tuning import IngestTuning
from binance_metrics.trades import Rejected, TradeMessage, encode_trade, now_ms, validate_trade

log = logging.getLogger(__name__)

#: Asks in a row for a range REST has no trade of (yet) before its gap is given up.
STUCK_ASKS = 3


class GapFiller:
    """The backfill tasks of one ingestor; :meth:`close` ends them and releases held trades."""

    def __init__(
        self,
        sequences: Mapping[str, SymbolSequence],
        rest: RestBackfill,
        tuning: IngestTuning,
        dead_letter: Callable[[Rejected], None],
        edges: Edges | None = None,
        contract_sizes: Mapping[str, int] | None = None,
    ) -> None:
        """``edges`` (futures): each symbol's last run produced, to cut aggregates at a gap's
        front; ``contract_sizes`` (COIN-M): put in every backfilled trade."""
        self._sequences = sequences
        self._edges = edges
        self._contract_sizes = contract_sizes
        self._rest = rest
        self._grace_s = tuning.backfill_grace_s
        self._retry_base_s = tuning.backfill_retry_base_s
        self._dead_letter = dead_letter
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, sequence: SymbolSequence) -> None:
        """Fill ``sequence``'s gaps, unless its task is already at it."""
        task = self._tasks.get(sequence.symbol)
        if task is None or task.done():
            self._tasks[sequence.symbol] = asyncio.create_task(
                self._fill(sequence), name=f"backfill-{sequence.symbol}"
            )

    def give_up(self, sequence: SymbolSequence, why: str) -> None:
        """Skip the first missing range: counted, logged, the trades held after it released."""
        lost = sequence.skip_gap()
        log.error(
            "%s: %d trades could not be backfilled and are missing (%s)", sequence.symbol, lost, why
        )

    async def close(self) -> None:
        """Cancel the tasks, close the REST client, give up every gap still open."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._rest.aclose()
        for sequence in self._sequences.values():
            while sequence.pending:
                self.give_up(sequence, "shutting down before the backfill finished")

    async def _fill(self, sequence: SymbolSequence) -> None:
        symbol = sequence.symbol
        await asyncio.sleep(self._grace_s)
        stuck = 0
        while (gap := sequence.missing) is not None:
            first, last = gap
            try:
                if self._edges is None:
                    fetched = await self._rest.trades(symbol, first, last - first + 1)
                    sequence.fill(self._valid(fetched))
                else:
                    await self._fill_from_aggregates(sequence, first, last)
            except BackfillError as exc:
                self.give_up(sequence, str(exc))
                continue
            if sequence.missing == gap:
                # REST did not have the next id (yet): ask again a few times, then give up.
                stuck += 1
                if stuck >= STUCK_ASKS:
                    self.give_up(sequence, f"REST has no trade {first} for {symbol}")
                    stuck = 0
                else:
                    await asyncio.sleep(self._retry_base_s * stuck)
            else:
                stuck = 0
        log.info("%s: gap filled (%d backfilled so far)", symbol, sequence.backfilled)

    async def _fill_from_aggregates(self, sequence: SymbolSequence, first: int, last: int) -> None:
        """Fill ``first..last`` from aggTrades cut to the gap (futures)."""
        assert self._edges is not None
        symbol = sequence.symbol
        run = self._edges.runs.get(symbol)
        # The last run produced is the front edge only if it ends right before the gap.
        before = run if run is not None and run.pieces and run.pieces[-1][1] == first - 1 else None
        end_ms = min((t.trade_time_ms for t in sequence.pending.values()), default=now_ms())
        aggregates = await fetch_aggregates(
            self._rest, symbol, first, last,
            start_ms=None if before is None else before.time_ms, end_ms=end_ms,
        )  # fmt: skip
        newest = max((agg.l for agg in aggregates), default=last)
        if not sequence.pending and newest > last and sequence.expect_through(newest):
            last = newest  # a gap at the tail: REST shows later trades, the gap reaches them
        steps = cut_to_gap(
            aggregates, symbol, first, last,
            before=before,
            held=sequence.pending,
            contract_size=(self._contract_sizes or {}).get(symbol),
            now_ms=now_ms(),
        )  # fmt: skip
        for step in steps:
            if isinstance(step, Pass):
                passed = sequence.pass_over(step.through, lost=step.lost)
                if passed and step.lost:
                    log.error("%s: %d trades up to %d are missing: %s", symbol, passed,
                              step.through, step.why)  # fmt: skip
                elif passed:
                    log.info("%s: %d ids up to %d passed over: %s", symbol, passed,
                             step.through, step.why)  # fmt: skip
            else:
                sequence.fill(self._valid([step]))

    def _valid(self, trades: Iterable[TradeMessage]) -> list[TradeMessage]:
        valid = []
        for trade in trades:
            try:
                valid.append(validate_trade(trade))
            except InvalidTradeError as exc:
                self._dead_letter(Rejected(encode_trade(trade), str(exc), "invalid_backfill"))
        return valid
