"""Trades older than the dataflow's history, merged into the bar that is already stored.

The dataflow remembers the bars (and trade ids) of its last ``BAR_HISTORY_MINUTES`` per symbol.
A trade for an older minute (a row moved to the end of a file, a very late backfill) cannot be
merged in the dataflow, and written alone it would replace the stored bar with a partial one. So
the sink reads the stored bar back, with the ids it counts (column ``trade_ids``), and merges the
fragment's trades that are not among them; a fragment whose trades are all there is a duplicate.

A bar stored by an older release has no ``trade_ids``. Then only two cases can be decided: the
stored bar holds none of the fragment's ids (merged), or it is complete (``trade_count == last -
first + 1``) and holds them all (a duplicate). Anything else is not written, and logged.

When the merged bar's close differs from the stored one, the zero-trade fillers that follow it
(up to the next bar with trades) carry the new close and are written again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from binance_metrics.bars import Bar, BarUpdate, from_decimals, merge
from binance_metrics.fragments import FoldedTrade, Fragment, StaleFragment
from binance_metrics.store.clickhouse import BAR_FIELDS, BARS_TABLE, Store
from binance_metrics.trade_ids import IdRuns

log = logging.getLogger(__name__)


@dataclass
class StaleOutcome:
    """What merging one stale fragment came to."""

    updates: list[BarUpdate] = field(default_factory=list)
    duplicates: int = 0  # trades dropped because the stored bar already counts them
    undecided: int = 0  # trades not written: not known whether they are stored (logged)


def merge_stale(store: Store, stale: StaleFragment, table: str = BARS_TABLE) -> StaleOutcome:
    """The bar updates that merge ``stale`` into what ``store`` holds in ``table`` (see the
    module doc)."""
    symbol, start_ms, fragment = stale
    stored = _stored_bar(store, symbol, start_ms, table)
    if stored is not None and stored.is_empty:
        stored = None  # a zero-trade filler: nothing to keep of it
    new, outcome = _new_trades(stored, fragment, symbol, start_ms)
    if new is None:
        return outcome
    merged = merge(stored if stored is not None else Bar(), new)
    outcome.updates.append(BarUpdate(symbol, start_ms, merged))
    if stored is None or stored.close != merged.close:
        outcome.updates += [
            BarUpdate(symbol, filler_start, Bar.filler(merged.close))
            for filler_start in _fillers_after(store, symbol, start_ms, table)
        ]
    return outcome


def _new_trades(
    stored: Bar | None, fragment: Fragment, symbol: str, start_ms: int
) -> tuple[Bar | None, StaleOutcome]:
    """The part of ``fragment`` that ``stored`` does not count yet (None: nothing to merge)."""
    outcome = StaleOutcome()
    if not fragment.trades:
        # Checked by the dataflow already: its ids are not counted anywhere else.
        bar = fragment.bar
        held = stored.ids if stored is not None else None
        if (
            held is not None
            and bar.ids is not None
            and any(held.overlaps(first, last) for first, last in bar.ids.runs)
        ):
            log.error("%s %d: a checked bar overlaps the stored one: not written", symbol, start_ms)
            outcome.undecided = bar.trade_count
            return None, outcome
        return bar, outcome
    if stored is not None and stored.ids is None:
        rest, outcome.duplicates = _without_unknown(stored, fragment)
        if rest is None and not outcome.duplicates:
            outcome.undecided = fragment.bar.trade_count
        conflicts: list[FoldedTrade] = []
    else:
        seen = stored.ids if stored is not None and stored.ids is not None else IdRuns()
        rest, outcome.duplicates, conflicts = fragment.without(seen)
    for trade in conflicts:
        log.error(
            "%s %d: aggregate of trades %d..%d overlaps the stored bar in part; it cannot be "
            "split, so it is left out",
            symbol,
            start_ms,
            trade.first_id,
            trade.last_id,
        )
        outcome.undecided += trade.last_id - trade.first_id + 1
    if rest is None:
        return None, outcome
    rest.bar.ids = rest.ids()
    return rest.bar, outcome


def _without_unknown(stored: Bar, fragment: Fragment) -> tuple[Fragment | None, int]:
    """For a stored bar without ``trade_ids`` (an older release wrote it): ``(what to merge,
    duplicates)``, or ``(None, 0)`` when that cannot be decided (logged)."""
    ids = fragment.ids()
    first, last = stored.first_trade_id, stored.last_trade_id
    if not ids.overlaps(first, last):
        return fragment.without(IdRuns())[0], 0
    if stored.trade_count == last - first + 1 and all(
        first <= a and b <= last for a, b in ids.runs
    ):
        return None, fragment.bar.trade_count
    log.error(
        "%s: trades %s of a minute older than the dataflow's history overlap a stored bar "
        "without trade ids (trades %d..%d, %d counted): not written",
        fragment.symbol,
        ids.runs,
        first,
        last,
        stored.trade_count,
    )
    return None, 0


def _stored_bar(store: Store, symbol: str, start_ms: int, table: str) -> Bar | None:
    rows = store.query(
        f"SELECT {', '.join(BAR_FIELDS)} FROM {table} FINAL "
        "WHERE market = {market:String} AND symbol = {symbol:String} "
        "AND window_start = fromUnixTimestamp64Milli({start:Int64})",
        {"market": store.market, "symbol": symbol, "start": start_ms},
    )
    if not rows:
        return None
    values = dict(zip(BAR_FIELDS, rows[0], strict=True))
    bar = from_decimals(values)
    runs = [(int(first), int(last)) for first, last in values["trade_ids"]]
    bar.ids = IdRuns(runs) if runs else None
    return bar


def _fillers_after(store: Store, symbol: str, start_ms: int, table: str) -> list[int]:
    """Open times of the zero-trade bars after ``start_ms``, up to the next bar with trades."""
    rows = store.query(
        f"SELECT toUnixTimestamp64Milli(window_start) FROM {table} FINAL "
        "WHERE market = {market:String} AND symbol = {symbol:String} AND trade_count = 0 "
        "AND window_start > fromUnixTimestamp64Milli({start:Int64}) "
        "AND window_start < ifNull(("
        f"  SELECT minOrNull(window_start) FROM {table} FINAL "
        "   WHERE market = {market:String} AND symbol = {symbol:String} AND trade_count > 0"
        "   AND window_start > fromUnixTimestamp64Milli({start:Int64})"
        "), toDateTime64('2200-01-01 00:00:00', 3, 'UTC')) "
        "ORDER BY window_start",
        {"market": store.market, "symbol": symbol, "start": start_ms},
    )
    return [int(row[0]) for row in rows]
