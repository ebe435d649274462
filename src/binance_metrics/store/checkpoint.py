"""The store as the ingestor's checkpoint: where each symbol's stored bars end.

After a crash of the one-command default the embedded broker's topics are gone, so the trades
topic cannot say where to resume; the bars table can. For each symbol, :func:`stored_tails`
reads the last stored minute with trades: its first and last trade id. The ingestor resumes
*before* that minute's first trade (:mod:`binance_metrics.ingest.resume`), so the minute, which
may have been written while it was still filling or correcting, is rebuilt whole from backfilled
trades: the complete bar has more trades than any partial one written before, so it replaces it
(the table keeps the version with the most trades), and trades already stored are not counted
twice (a new dataflow counts each trade id once; an older minute's re-sent trades are merged into
the stored bar by its ``trade_ids``, :mod:`binance_metrics.store.stale`).

Before the first bar of a symbol is stored, the checkpoint is where the ingestor started it
(:func:`record_start`, table ``binance.ingest_starts``): a crash in the first minute of the
first run then still backfills from that trade on (:func:`start_points`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from binance_metrics.store.clickhouse import BARS_TABLE, Store

STARTS_TABLE = "binance.ingest_starts"


@dataclass(frozen=True)
class StoredTail:
    """The last stored minute with trades of one symbol."""

    window_start_ms: int
    first_trade_id: int
    last_trade_id: int  # the highest trade id stored for the symbol

    @property
    def resume_after(self) -> int:
        """The id to resume after: the minute is fetched again from its first trade."""
        return self.first_trade_id - 1


def stored_tails(store: Store, symbols: Sequence[str]) -> dict[str, StoredTail]:
    """symbol -> its :class:`StoredTail`, for the ``symbols`` with a stored bar with trades."""
    rows = store.query(
        "SELECT symbol, toUnixTimestamp64Milli(max(window_start)), "
        "argMax(first_trade_id, window_start), max(last_trade_id) "
        f"FROM {BARS_TABLE} FINAL "
        "WHERE market = {market:String} AND symbol IN {symbols:Array(String)} "
        "AND trade_count > 0 GROUP BY symbol",
        {"market": store.market, "symbols": list(symbols)},
    )
    return {
        str(symbol): StoredTail(int(start), int(first), int(last))
        for symbol, start, first, last in rows
    }


def record_start(store: Store, symbol: str, first_trade_id: int) -> None:
    """The ingestor started ``symbol`` at ``first_trade_id`` with nothing to resume from."""
    store.command(
        f"INSERT INTO {STARTS_TABLE} (market, symbol, first_trade_id) "
        "VALUES ({market:String}, {symbol:String}, {first:Int64})",
        {"market": store.market, "symbol": symbol, "first": first_trade_id},
    )


def start_points(store: Store, symbols: Sequence[str]) -> dict[str, int]:
    """symbol -> the first trade id the ingestor ever started it at (``record_start``)."""
    rows = store.query(
        f"SELECT symbol, min(first_trade_id) FROM {STARTS_TABLE} "
        "WHERE market = {market:String} AND symbol IN {symbols:Array(String)} GROUP BY symbol",
        {"market": store.market, "symbols": list(symbols)},
    )
    return {str(symbol): int(first) for symbol, first in rows}
