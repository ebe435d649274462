"""Healing: every hole the ledger finds in the stored bars is fetched over REST and produced again.

Whatever the cause (a gap given up, a broker that lost its topics, a crash between two writes),
a trade missing from the stored bars shows as a ``gap`` in the ledger
(:func:`binance_metrics.ledger.holes.find_holes`). Every ``heal_every_s`` :class:`Healer` reads
the ledger and, for each gap that is *ripe* (its trade ids were produced by this ingestor or
before it started, and its last minute closed ``heal_settle_s`` ago, so the dataflow is not
still writing it), fetches the ids over REST (``historicalTrades?fromId=``, by id range, the
same client and weight budget as the gap filler; on futures ``aggTrades``, the aggregates inside
the gap) and produces them to the trades topic. The
dataflow counts each trade id once, and merges trades of minutes it no longer holds (or never
held: a restarted dataflow) into the stored bar by its ``trade_ids``, so trades produced twice
are harmless and the bar is corrected through the dataflow's late path.

A hole REST cannot fill (older than Binance keeps, or REST failing) is never dropped: the ledger
still reports it at the next check, and :attr:`Healer.unfillable` says why it was not filled.
Overlaps (a trade counted twice) are reported, not fetched: fetching cannot take a count away.
Each check's result is on ``/health`` (``ledger``: the holes, each symbol's ``missingTrades``
and ``completeThrough``) and in ``binance_metrics_missing_trades{symbol}``.

:meth:`Healer.heal_minute` fetches one minute's trades again on request (a bar that disagrees
with Binance's kline): every id between the stored bars around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client.core import GaugeMetricFamily, Metric

from binance_metrics.errors import InvalidTradeError
from binance_metrics.ingest.aggregates import Pass, cut_to_gap, fetch_aggregates
from binance_metrics.ingest.backfill import MAX_LIMIT, BackfillError, RestBackfill
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.ingest.tuning import IngestTuning
from binance_metrics.ledger.holes import Hole, find_holes
from binance_metrics.store.checkpoint import StoredTail, stored_tails
from binance_metrics.store.clickhouse import BARS_TABLE, Store
from binance_metrics.trades import TradeMessage, now_ms, validate_trade

log = logging.getLogger(__name__)

MINUTE_MS: Final = 60_000


@dataclass
class HealResult:
    """What fetching one id range came to."""

    produced: int = 0
    #: Why some ids could not be fetched (None: all of them came).
    unfilled: str | None = None


@dataclass
class LedgerState:
    """The last check: the holes and where each symbol's stored bars end."""

    holes: list[Hole] = field(default_factory=list)
    tails: dict[str, StoredTail] = field(default_factory=dict)
    checked_at_ms: int | None = None
    error: str | None = None


class Healer:
    """The heal loop of one ingestor; :meth:`run` until cancelled."""

    def __init__(
        self,
        store: Store,
        rest: RestBackfill,
        produce: Callable[[TradeMessage], None],
        sequences: Mapping[str, SymbolSequence],
        tuning: IngestTuning,
        contract_sizes: Mapping[str, int] | None = None,
    ) -> None:
        """``produce``: sends a trade to the trades topic (keyed by symbol); ``contract_sizes``
        (COIN-M): put in every trade produced."""
        self._contract_sizes = contract_sizes
        self._store = store
        self._rest = rest
        self._produce = produce
        self._sequences = sequences
        self._every_s = tuning.heal_every_s
        self._settle_ms = int(tuning.heal_settle_s * 1000)
        self.state = LedgerState()
        #: (symbol, first id, last id) -> why REST could not fill it, as of the last try.
        self.unfillable: dict[tuple[str, int, int], str] = {}
        #: (symbol, first id, last id) -> monotonic time its trades were produced: not fetched
        #: again until the dataflow had time to write them.
        self._produced_at: dict[tuple[str, int, int], float] = {}
        self.healed = 0  # trades produced by healing
        self.checks = 0

    @property
    def enabled(self) -> bool:
        return self._every_s > 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.check()

    async def check(self) -> LedgerState:
        """Read the ledger once and heal the ripe gaps; the state is kept for ``/health``."""
        loop = asyncio.get_running_loop()
        symbols = list(self._sequences)
        self.checks += 1
        try:
            holes = await loop.run_in_executor(None, lambda: find_holes(self._store))
            tails = await loop.run_in_executor(None, stored_tails, self._store, symbols)
        except Exception as exc:  # noqa: BLE001 - a failing store is retried at the next check
            log.warning("ledger check failed: %s", exc)
            self.state.error = str(exc)
            return self.state
        wanted = set(symbols)
        self.state = LedgerState(
            [h for h in holes if h.symbol in wanted], tails, now_ms(), error=None
        )
        current = {(h.symbol, h.first_missing_id, h.last_missing_id) for h in self.state.holes}
        for key in [k for k in self.unfillable if k not in current]:
            del self.unfillable[key]  # filled after all (or no longer a hole)
        for hole in self.state.holes:
            if self._ripe(hole):
                await self._heal(hole)
        return self.state

    def _ripe(self, hole: Hole) -> bool:
        if hole.kind != "gap":
            return False
        sequence = self._sequences[hole.symbol]
        if sequence.next_id is not None and hole.last_missing_id >= sequence.next_id:
            return False  # not produced yet: the ingestor is at it (a gap being filled)
        if hole.last_minute_ms + MINUTE_MS + self._settle_ms > now_ms():
            return False  # the dataflow may still be writing these minutes
        key = (hole.symbol, hole.first_missing_id, hole.last_missing_id)
        produced = self._produced_at.get(key)
        # Produced already: give the dataflow two checks to write it before fetching again.
        return produced is None or time.monotonic() - produced > 2 * self._every_s

    async def _heal(self, hole: Hole) -> None:
        key = (hole.symbol, hole.first_missing_id, hole.last_missing_id)
        result = await self.fetch_range(
            hole.symbol,
            hole.first_missing_id,
            hole.last_missing_id,
            end_ms=hole.last_minute_ms + 2 * MINUTE_MS,  # after every missing trade
        )
        if result.produced:
            self._produced_at[key] = time.monotonic()
            log.info("%s: healing trades %d..%d: %d fetched and produced", hole.symbol,
                     hole.first_missing_id, hole.last_missing_id, result.produced)  # fmt: skip
        if result.unfilled is not None:
            self.unfillable[key] = result.unfilled
            log.error("%s: trades %d..%d are missing from the stored bars and %s", hole.symbol,
                      hole.first_missing_id, hole.last_missing_id, result.unfilled)  # fmt: skip

    async def fetch_range(
        self, symbol: str, first: int, last: int, end_ms: int | None = None
    ) -> HealResult:
        """Fetch trades ``first..last`` over REST and produce them; say what could not be.

        On futures (no public historicalTrades) from aggTrades, looked for back from ``end_ms``
        (a time after the range; default now)."""
        if not self._rest.market.public_historical_trades:
            return await self._fetch_aggregates(symbol, first, last, end_ms or now_ms())
        result = HealResult()
        next_id = first
        try:
            while next_id <= last:
                limit = min(MAX_LIMIT, last - next_id + 1)
                try:
                    fetched = await self._rest.trades(symbol, next_id, limit)
                except BackfillError as exc:
                    result.unfilled = f"REST failed ({exc}); tried again at the next check"
                    return result
                trades = [t for t in _valid(fetched) if next_id <= t.trade_id <= last]
                if not trades:
                    result.unfilled = f"REST has no trades {next_id}..{last}"
                    return result
                if trades[0].trade_id != next_id:
                    result.unfilled = (
                        f"REST has no trades {next_id}..{trades[0].trade_id - 1} "
                        "(older than Binance keeps?)"
                    )
                for trade in trades:
                    self._produce(trade)
                result.produced += len(trades)
                next_id = trades[-1].trade_id + 1
                if len(fetched) < limit and next_id <= last:
                    result.unfilled = f"REST has no trades {next_id}..{last}"
                    return result
            return result
        finally:
            self.healed += result.produced

    async def _fetch_aggregates(
        self, symbol: str, first: int, last: int, end_ms: int
    ) -> HealResult:
        """Futures: the aggregates inside ``first..last`` produced, cut to it; an aggregate across
        its edges cannot be cut (the stored neighbours' quantities are sums) and is reported."""
        result = HealResult()
        try:
            aggregates = await fetch_aggregates(
                self._rest, symbol, first, last, start_ms=None, end_ms=end_ms
            )
        except BackfillError as exc:
            result.unfilled = f"REST failed ({exc}); tried again at the next check"
            return result
        size = (self._contract_sizes or {}).get(symbol)
        steps = cut_to_gap(aggregates, symbol, first, last, before=None, held={},
                           contract_size=size, now_ms=now_ms(), live=False)  # fmt: skip
        why, reached = [], first - 1
        for step in steps:
            if isinstance(step, Pass):
                why.append(f"ids {reached + 1}..{step.through}: {step.why}")
                reached = step.through
                continue
            for trade in _valid([step]):
                self._produce(trade)
                result.produced += trade.trade_count
            reached = step.last_trade_id
        if reached < last:
            why.append(f"REST has no trades {reached + 1}..{last}")
        result.unfilled = "; ".join(why) or None
        self.healed += result.produced
        return result

    async def heal_minute(self, symbol: str, open_time_ms: int) -> HealResult:
        """Fetch again every trade that can be in ``symbol``'s minute at ``open_time_ms``: the
        ids between the stored bars with trades before and after it (up to the last trade
        produced when it is the newest), and produce them; the dataflow keeps what is new."""
        loop = asyncio.get_running_loop()
        first, last = await loop.run_in_executor(
            None, _ids_around, self._store, symbol, open_time_ms
        )
        if last is None:
            next_id = self._sequences[symbol].next_id
            last = next_id - 1 if next_id is not None else None
        if first is None or last is None or last < first:
            return HealResult(unfilled="no stored trade ids around that minute to fetch between")
        log.info("%s: fetching minute %d again (trades %d..%d)", symbol, open_time_ms, first,
                 last)  # fmt: skip
        return await self.fetch_range(symbol, first, last)

    # -- views -----------------------------------------------------------------------------

    def health_body(self) -> dict[str, Any]:
        """The ``ledger`` part of ``/health``."""
        state = self.state
        return {
            "checkedAt": _iso(state.checked_at_ms),
            "error": state.error,
            "healedTrades": self.healed,
            "holes": [
                {
                    "symbol": h.symbol,
                    "kind": h.kind,
                    "firstMissingId": h.first_missing_id,
                    "lastMissingId": h.last_missing_id,
                    "missingTrades": h.missing_trades,
                    "firstMinute": _iso(h.first_minute_ms),
                    "lastMinute": _iso(h.last_minute_ms),
                    "unfillable": self.unfillable.get(
                        (h.symbol, h.first_missing_id, h.last_missing_id)
                    ),
                }
                for h in state.holes
            ],
            "symbols": {
                symbol: {
                    "missingTrades": self.missing_trades(symbol),
                    "completeThrough": _iso(self.complete_through_ms(symbol)),
                }
                for symbol in self._sequences
            },
        }

    def missing_trades(self, symbol: str) -> int:
        return sum(h.missing_trades for h in self.state.holes if h.symbol == symbol and
                   h.kind == "gap")  # fmt: skip

    def complete_through_ms(self, symbol: str) -> int | None:
        """Until when ``symbol``'s stored bars are complete: the first minute a hole touches,
        else the end of its last stored minute with trades (None: nothing known)."""
        firsts = [h.first_minute_ms for h in self.state.holes if h.symbol == symbol]
        if firsts:
            return min(firsts)
        tail = self.state.tails.get(symbol)
        return None if tail is None else tail.window_start_ms + MINUTE_MS

    def collect(self) -> Iterable[Metric]:
        missing = GaugeMetricFamily(
            "binance_metrics_missing_trades",
            "Trades missing from the stored bars (ledger gaps), as of the last check",
            labels=["symbol"],
        )
        doubled = GaugeMetricFamily(
            "binance_metrics_doubled_trades",
            "Trades counted more than once in the stored bars (ledger overlaps)",
            labels=["symbol"],
        )
        for symbol in self._sequences:
            missing.add_metric([symbol], self.missing_trades(symbol))
            doubled.add_metric([symbol], sum(
                h.missing_trades for h in self.state.holes
                if h.symbol == symbol and h.kind == "overlap"
            ))  # fmt: skip
        return [missing, doubled]


def _valid(trades: Iterable[TradeMessage]) -> list[TradeMessage]:
    valid = []
    for trade in trades:
        try:
            valid.append(validate_trade(trade))
        except InvalidTradeError as exc:
            log.error("%s: healing: trade %d from REST is invalid (%s): not produced",
                      trade.symbol, trade.trade_id, exc)  # fmt: skip
    return valid


def _ids_around(store: Store, symbol: str, open_time_ms: int) -> tuple[int | None, int | None]:
    """(the id after the last stored trade before the minute, the id before the first stored
    trade after it); None where no stored bar with trades is on that side."""
    rows = store.query(
        "SELECT "
        "  maxIf(last_trade_id, window_start < fromUnixTimestamp64Milli({start:Int64})), "
        "  countIf(window_start < fromUnixTimestamp64Milli({start:Int64})), "
        "  minIf(first_trade_id, window_start > fromUnixTimestamp64Milli({start:Int64})), "
        "  countIf(window_start > fromUnixTimestamp64Milli({start:Int64})), "
        "  minIf(first_trade_id, window_start = fromUnixTimestamp64Milli({start:Int64})) "
        f"FROM {BARS_TABLE} FINAL "
        "WHERE market = {market:String} AND symbol = {symbol:String} AND trade_count > 0",
        {"market": store.market, "symbol": symbol, "start": open_time_ms},
    )
    before_last, before_n, after_first, after_n, own_first = rows[0]
    first = int(before_last) + 1 if before_n else (int(own_first) if own_first else None)
    last = int(after_first) - 1 if after_n else None
    return first, last


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
