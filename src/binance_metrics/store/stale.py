"""Trades older than the dataflow's history, merged into the bar that is already stored.

The dataflow remembers the bars (and trade ids) of its last ``BAR_HISTORY_MINUTES`` per symbol.
A trade for an older minute (a row moved to the end of a file, a very late backfill) cannot be
merged in the dataflow, and written alone it would replace the stored bar with a partial one. So
the sink reads the stored bar back and merges it here:

* no trade stored for that minute (nothing, or a zero-trade filler): the fragment is the bar;
* the stored bar holds none of the fragment's trade ids: the two are merged;
* the stored bar is complete (``trade_count == last - first + 1``) and holds every id of the
  fragment: a duplicate, dropped;
* anything else cannot be decided from a stored bar (which ids a bar with holes holds is not
  stored): the fragment is not written, and logged with its id range.

When the merged bar's close differs from the stored one, the zero-trade fillers that follow it
(up to the next bar with trades) carry the new close and are written again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from binance_metrics.bars import Bar, BarUpdate, from_decimals, merge
from binance_metrics.seen_trades import StaleFragment
from binance_metrics.store.clickhouse import BAR_COLUMNS, BARS_TABLE, Store

log = logging.getLogger(__name__)

_BAR_FIELDS = BAR_COLUMNS[2:]


@dataclass
class StaleOutcome:
    """What merging one stale fragment came to."""

    updates: list[BarUpdate] = field(default_factory=list)
    duplicates: int = 0  # trades dropped because the stored bar already counts them
    undecided: int = 0  # trades not written: the stored bar may or may not hold them


def merge_stale(store: Store, stale: StaleFragment) -> StaleOutcome:
    """The bar updates that merge ``stale`` into what ``store`` holds (see the module doc)."""
    symbol, start_ms, fragment, ids = stale
    stored = _stored_bar(store, symbol, start_ms)
    if stored is None or stored.is_empty:
        merged = merge(Bar(), fragment)
    elif not ids.overlaps(stored.first_trade_id, stored.last_trade_id):
        merged = merge(stored, fragment)
    elif stored.trade_count == stored.last_trade_id - stored.first_trade_id + 1 and all(
        stored.first_trade_id <= first and last <= stored.last_trade_id for first, last in ids.runs
    ):
        return StaleOutcome(duplicates=fragment.trade_count)
    else:
        log.error(
            "%s %d: trades %s of a minute older than the dataflow's history overlap the stored "
            "bar (trades %d..%d, %d counted): not written; the ledger reports the minute",
            symbol,
            start_ms,
            ids.runs,
            stored.first_trade_id,
            stored.last_trade_id,
            stored.trade_count,
        )
        return StaleOutcome(undecided=fragment.trade_count)
    outcome = StaleOutcome([BarUpdate(symbol, start_ms, merged)])
    if stored is None or stored.close != merged.close:
        outcome.updates += [
            BarUpdate(symbol, filler_start, Bar.filler(merged.close))
            for filler_start in _fillers_after(store, symbol, start_ms)
        ]
    return outcome


def _stored_bar(store: Store, symbol: str, start_ms: int) -> Bar | None:
    rows = store.query(
        f"SELECT {', '.join(_BAR_FIELDS)} FROM {BARS_TABLE} FINAL "
        "WHERE symbol = {symbol:String} AND window_start = fromUnixTimestamp64Milli({start:Int64})",
        {"symbol": symbol, "start": start_ms},
    )
    return from_decimals(dict(zip(_BAR_FIELDS, rows[0], strict=True))) if rows else None


def _fillers_after(store: Store, symbol: str, start_ms: int) -> list[int]:
    """Open times of the zero-trade bars after ``start_ms``, up to the next bar with trades."""
    rows = store.query(
        f"SELECT toUnixTimestamp64Milli(window_start) FROM {BARS_TABLE} FINAL "
        "WHERE symbol = {symbol:String} AND trade_count = 0 "
        "AND window_start > fromUnixTimestamp64Milli({start:Int64}) "
        "AND window_start < ifNull(("
        f"  SELECT minOrNull(window_start) FROM {BARS_TABLE} FINAL "
        "   WHERE symbol = {symbol:String} AND trade_count > 0"
        "   AND window_start > fromUnixTimestamp64Milli({start:Int64})"
        "), toDateTime64('2200-01-01 00:00:00', 3, 'UTC')) "
        "ORDER BY window_start",
        {"symbol": symbol, "start": start_ms},
    )
    return [int(row[0]) for row in rows]
