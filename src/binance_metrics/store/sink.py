"""Bytewax sink that writes bars to ClickHouse, idempotently, and waits out outages.

Writes are idempotent by design of the table (ReplacingMergeTree keyed by symbol and window,
versioned by trade count): Bytewax output is at-least-once, and writing a bar again is harmless.
When ClickHouse is unreachable the batch is retried with capped backoff until it is stored — the
dataflow stalls (and Kafka holds the backlog) instead of dropping bars.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from binance_metrics.bars import BarUpdate
from binance_metrics.store.clickhouse import open_store

log = logging.getLogger(__name__)


class _BarsPartition(StatelessSinkPartition[BarUpdate]):
    def __init__(
        self,
        dsn: str,
        on_written: Callable[[int], None],
        max_backoff_s: float,
    ) -> None:
        self._store = open_store(dsn)
        self._on_written = on_written
        self._max_backoff_s = max_backoff_s

    @override
    def write_batch(self, items: list[BarUpdate]) -> None:
        delay = 0.5
        while True:
            try:
                written = self._store.insert_bars(items)
            except Exception as exc:  # noqa: BLE001 - any failure: keep the bars, try again
                log.warning(
                    "ClickHouse write of %d bars failed (%s); retrying in %.1f s",
                    len(items),
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)
                continue
            self._on_written(written)
            return


class ClickHouseBarSink(DynamicSink[BarUpdate]):
    """Write :class:`~binance_metrics.bars.BarUpdate` items to ``binance.ohlcv``."""

    def __init__(
        self,
        dsn: str,
        on_written: Callable[[int], None] = lambda n: None,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.on_written = on_written
        self.max_backoff_s = max_backoff_s

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _BarsPartition:
        return _BarsPartition(self.dsn, self.on_written, self.max_backoff_s)
