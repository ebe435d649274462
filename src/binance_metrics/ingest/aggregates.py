"""Futures gaps filled from the public ``aggTrades``: each aggregate cut to the gap, exactly.

On the futures markets ``historicalTrades`` needs an API key, so a gap of raw trade ids
``first..last`` is filled from ``GET /fapi/v1/aggTrades`` (``/dapi/v1``) by time. An aggregate
is the fills of one taker order at one price and time, raw ids ``f..l`` with their summed
quantity; one can straddle an edge of the gap, and is then cut, not dropped nor doubled:

* at the front (``f < first``): ids ``f..first-1`` were produced already. They share the
  aggregate's time, price and side, so they are the tail of the last *run* produced (:class:`Run`,
  kept per symbol by :class:`Edges`); the missing part's quantity is the aggregate's minus theirs;
* at the back (``l > last``): ids ``last+1..l`` are held behind the gap (live trades with their
  quantities); the missing part's quantity is the aggregate's minus theirs.

Quantities are exact decimals (scaled by 10**8), so the cut parts sum to what Binance counts. A
cut part of several ids is produced as an aggregate (``e = "aggTrade"``, ``t``..``l``), so trade
counts stay right. Ids inside the gap that no aggregate covers are not market trades: Binance
aggregates market trades only (insurance-fund and ADL trades are left out, and klines exclude
them too); they are passed over and counted, not fetched. When a straddling aggregate cannot be
cut (its front is not the last run, e.g. after a restart), its part in the gap is given up:
counted as unfilled and logged, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from binance_metrics.errors import InvalidTradeError
from binance_metrics.ingest.backfill import AggTrade, BackfillError, RestBackfill
from binance_metrics.trades import TradeMessage, format_scaled, parse_scaled

#: Pieces of one run kept; a longer run (thousands of fills of one order) is not cut at the front.
MAX_RUN_PIECES: Final = 10_000
#: Binance's longest aggTrades time range, and how far back a range's start is looked for.
HOUR_MS: Final = 3_600_000
SEARCH_HOURS: Final = 24


@dataclass
class Run:
    """The trailing trades produced for a symbol that share one time, price and side.

    Kept as the trades wrote them (strings): parsing waits for a gap, off the hot path.
    """

    time_ms: int
    price: str
    buyer_is_maker: bool
    #: (first id, last id, quantity) of each trade or aggregate part, in id order.
    pieces: list[tuple[int, int, str]] = field(default_factory=list)
    overflowed: bool = False

    def same(self, time_ms: int, price: str, buyer_is_maker: bool) -> bool:
        """A trade of this time, price and side continues the run (prices compared exactly)."""
        if time_ms != self.time_ms or buyer_is_maker != self.buyer_is_maker:
            return False
        return price == self.price or (
            (scaled := _scaled(price)) is not None and scaled == _scaled(self.price)
        )

    def quantity(self, first: int, last: int) -> int | None:
        """The scaled quantity of ids ``first..last`` (in this run, whole pieces), else None."""
        if self.overflowed:
            return None
        ids, total = 0, 0
        for lo, hi, qty in self.pieces:
            if hi < first or lo > last:
                continue
            if lo < first or hi > last:
                return None  # a piece across the boundary cannot be split
            ids += hi - lo + 1
            total += parse_scaled(qty)
        return total if ids == last - first + 1 else None


class Edges:
    """Each symbol's last run, noted as trades are produced (futures only)."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}

    def note(self, trade: TradeMessage) -> None:
        run = self.runs.get(trade.symbol)
        if run is None or not run.same(trade.trade_time_ms, trade.price, trade.buyer_is_maker):
            run = self.runs[trade.symbol] = Run(
                trade.trade_time_ms, trade.price, trade.buyer_is_maker
            )
        if len(run.pieces) >= MAX_RUN_PIECES:
            run.overflowed = True
            return
        run.pieces.append((trade.trade_id, trade.last_trade_id, trade.quantity))


def _scaled(text: str) -> int | None:
    try:
        return parse_scaled(text)
    except InvalidTradeError:
        return None


async def fetch_aggregates(
    rest: RestBackfill, symbol: str, first: int, last: int, *, start_ms: int | None, end_ms: int
) -> list[AggTrade]:
    """The aggregates from the one holding trade ``first`` on, until one reaches past ``last``
    or REST has no more, oldest first.

    ``start_ms``: no later than trade ``first`` (the time of the trade before it); None: looked
    for an hour at a time back from ``end_ms`` (a time after ``first``), up to a day.
    BackfillError when REST keeps failing or the start is not found.
    """
    if start_ms is not None:
        page = await rest.aggregates(
            symbol, start_ms=start_ms, end_ms=max(start_ms, min(end_ms, start_ms + HOUR_MS - 1))
        )
    else:
        page = []
        for hours in range(1, SEARCH_HOURS + 1):
            page = await rest.aggregates(
                symbol, start_ms=end_ms - hours * HOUR_MS + 1,
                end_ms=end_ms - (hours - 1) * HOUR_MS,
            )  # fmt: skip
            if page and page[0].f <= first:
                break
        else:
            raise BackfillError(
                f"{symbol}: aggTrades has no trade {first} in the {SEARCH_HOURS} h before {end_ms}"
            )
    found = list(page)
    while page and page[-1].l <= last:
        page = await rest.aggregates(symbol, from_id=page[-1].a + 1)
        found.extend(page)
    return found


@dataclass(frozen=True)
class Pass:
    """Ids ``..through`` are skipped: not market trades (``lost`` False) or given up."""

    through: int
    lost: bool
    why: str


Step = TradeMessage | Pass


def cut_to_gap(
    aggregates: Sequence[AggTrade],
    symbol: str,
    first: int,
    last: int,
    *,
    before: Run | None,
    held: Mapping[int, TradeMessage],
    contract_size: int | None,
    now_ms: int,
    live: bool = True,
) -> list[Step]:
    """What fills ids ``first..last``, in id order: trades (cut aggregates) and passes.

    ``aggregates``: consecutive (by aggregate id), oldest first, as Binance returns them, from
    one before the gap on; those outside the gap only show which raw ids no aggregate covers.
    ``before``: the last run produced (ends at ``first - 1``); ``held``: trades held after the
    gap; ``live``: trades after the gap may still arrive (the gap filler), else (healing) an
    aggregate across the gap's end cannot be cut. Ids after the last aggregate that reaches into
    the gap are left missing (not on REST yet), unless the next aggregate starts after the gap:
    then they are passed.
    """
    steps: list[Step] = []
    expected = first
    previous: int | None = None  # the aggregate id before, to see that none is left out
    for agg in aggregates:
        # Raw ids between two consecutive aggregates are in no aggregate: not market trades.
        # After a jump in aggregate ids (an answer missing rows), nothing is concluded.
        follows = previous is not None and agg.a == previous + 1
        previous = agg.a
        if agg.l < expected:
            continue
        if agg.f > last:
            if expected <= last and follows:
                steps.append(Pass(last, False, "not in aggTrades: not a market trade"))
            break
        if agg.f > expected:
            if not follows:
                break  # the ids before it stay missing: asked again
            steps.append(Pass(agg.f - 1, False, "not in aggTrades: not a market trade"))
        lo, hi = max(agg.f, expected), min(agg.l, last)
        price, qty = parse_scaled(agg.p), parse_scaled(agg.q)
        cut = _front(agg, lo, before) if agg.f < lo else 0
        back = _back(agg, hi, price, held) if agg.l > hi else 0
        if back == _NOT_YET:
            if live:
                break  # its last trades are not held yet (still on their way): asked again
            back = None
        if cut is None or back is None or qty - cut - back <= 0:
            steps.append(Pass(hi, True, f"aggregate {agg.a} ({agg.f}..{agg.l}) cannot be cut"))
        else:
            steps.append(_piece(agg, symbol, lo, hi, qty - cut - back, contract_size, now_ms))
        expected = hi + 1
    return steps


def _front(agg: AggTrade, lo: int, before: Run | None) -> int | None:
    """The quantity of ids ``agg.f..lo-1`` already produced, or None if not known."""
    if before is None or not before.same(agg.T, agg.p, agg.m):
        return None
    return before.quantity(agg.f, lo - 1)


#: ``_back``'s answer when a trade of the aggregate after the gap has not arrived yet.
_NOT_YET: Final = -1


def _back(agg: AggTrade, hi: int, price: int, held: Mapping[int, TradeMessage]) -> int | None:
    """The quantity of ids ``hi+1..agg.l`` held after the gap; ``_NOT_YET`` if some are not
    held (yet); None if a held one is not of the aggregate (an inconsistent answer)."""
    total = 0
    for trade_id in range(hi + 1, agg.l + 1):
        trade = held.get(trade_id)
        if trade is None:
            return _NOT_YET
        if parse_scaled(trade.price) != price or (trade.trade_time_ms, trade.buyer_is_maker) != (
            agg.T,
            agg.m,
        ):
            return None
        total += parse_scaled(trade.quantity)
    return total


def _piece(
    agg: AggTrade, symbol: str, lo: int, hi: int, qty: int, contract_size: int | None, now: int
) -> TradeMessage:
    # REST has no event time: the trade time stands in for E, so latencyMs shows the delay.
    return TradeMessage(
        event_type="trade" if lo == hi else "aggTrade",
        event_time_ms=agg.T,
        symbol=symbol,
        trade_id=lo,
        price=agg.p,
        quantity=format_scaled(qty),
        trade_time_ms=agg.T,
        buyer_is_maker=agg.m,
        ingestion_time_ms=now,
        latency_ms=now - agg.T,
        trade_type="MARKET",
        aggregate_id=None if lo == hi else agg.a,
        aggregate_last_id=None if lo == hi else hi,
        backfilled=True,
        contract_size=contract_size,
    )
