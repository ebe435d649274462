"""Forming bars in ClickHouse: ``binance.ohlcv_forming``, one row per market and symbol, and
its sink.

A forming bar is a preview that the next snapshot replaces, so the sink never holds the dataflow
up: a write that fails is logged (at most once a minute) and dropped, and the next snapshot
tries again. The closed bars' sink (:mod:`binance_metrics.store.sink`) is the one that waits
out a store outage. Each insert makes a part of the table, so the sink writes at most once per
``every``: what comes sooner waits, newest per symbol, for the next batch after it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from binance_metrics.forming import FormingUpdate
from binance_metrics.markets import Market
from binance_metrics.redact import redact
from binance_metrics.store.clickhouse import BAR_COLUMNS, Store, open_store, out_of_range

log = logging.getLogger(__name__)

FORMING_TABLE: Final = "binance.ohlcv_forming"
#: The bars table's columns but the trade-id runs: a forming bar is never merged with anything.
FORMING_COLUMNS: Final = BAR_COLUMNS[:-1]
_REPORT_EVERY_S: Final = 60.0


def insert_forming(store: Store, updates: Sequence[FormingUpdate]) -> int:
    """Write the newest snapshot of each symbol in ``updates`` (of ``store.market``); return how
    many rows."""
    newest: dict[str, FormingUpdate] = {}
    for update in updates:
        held = newest.get(update.symbol)
        if held is None or (update.window_start_ms, update.bar.trade_count) >= (
            held.window_start_ms,
            held.bar.trade_count,
        ):
            newest[update.symbol] = update
    rows: list[list[Any]] = []
    for symbol, start_ms, bar in newest.values():
        if out_of_range(bar) is None:
            values = bar.decimals()
            moment = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
            rows.append([store.market, symbol, moment, *(values[c] for c in FORMING_COLUMNS[3:])])
    if rows:
        store.insert(FORMING_TABLE, rows, FORMING_COLUMNS)
    return len(rows)


class _FormingPartition(StatelessSinkPartition[FormingUpdate]):
    def __init__(self, dsn: str, market: Market, every_s: float) -> None:
        self._store = open_store(dsn, market)
        self._every_s = every_s
        self._pending: list[FormingUpdate] = []
        self._written_at = float("-inf")
        self._reported_at = float("-inf")

    @override
    def write_batch(self, items: list[FormingUpdate]) -> None:
        self._pending += items
        now = time.monotonic()
        if now - self._written_at < self._every_s:
            return
        pending, self._pending, self._written_at = self._pending, [], now
        try:
            insert_forming(self._store, pending)
        except Exception as exc:  # noqa: BLE001 - a preview must never stop the bars
            now = time.monotonic()
            if now - self._reported_at >= _REPORT_EVERY_S:
                self._reported_at = now
                reason = " ".join(redact(str(exc)).split())[:300]
                log.warning("forming bars not written (the next ones will be): %s: %s",
                            type(exc).__name__, reason)  # fmt: skip


class ClickHouseFormingSink(DynamicSink[FormingUpdate]):
    """Write forming-bar snapshots of ``market`` into ``binance.ohlcv_forming``, at most once
    per ``every_s`` per worker."""

    def __init__(self, dsn: str, market: Market, every_s: float = 0.25) -> None:
        self.dsn = dsn
        self.market: Market = market
        self.every_s = every_s

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FormingPartition:
        return _FormingPartition(self.dsn, self.market, self.every_s)
