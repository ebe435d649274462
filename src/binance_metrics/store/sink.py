"""Bytewax sink that writes bars to ClickHouse, idempotently, and waits out outages.

Writes are idempotent by design of the table (ReplacingMergeTree keyed by symbol and window,
versioned by trade count): Bytewax output is at-least-once, and writing a bar again is harmless.
Trades older than the dataflow's history arrive as :class:`StaleFragment` and are merged into
the stored bar first (:mod:`binance_metrics.store.stale`).

When a write fails for a passing reason (:mod:`binance_metrics.store.failures`: the server is
down, busy or full, the table detached), the batch is retried with capped backoff until it is
stored: the dataflow stalls (and Kafka holds the backlog) instead of dropping bars, and
:class:`StoreHealth` says why (``/health`` shows it). A failure that no retry mends (a missing
table or column, a wrong type, a missing right) gives up at once, naming the table and the
cause. Two more things end the waiting: a stop request (``stop``: the run is ending,
and a failing store would otherwise hold it forever), and ``give_up_after_s`` of failures in a
row (``replay`` sets it: a batch job must fail, not hang). Then the sink gives up, in one of two
ways:

- with ``abort`` (``up``, ``replay``: runs without recovery): it sets ``abort``, which ends the
  Kafka source at once, counts what it is handed from then on as not written, and the run's
  caller raises :meth:`StoreHealth.raise_if_given_up` once the dataflow has returned. Bytewax
  sees no error, so the user sees one line rather than a Rust panic before it;
- without (the stand-alone dataflow, with recovery): it raises the :class:`StoreError`, so that
  the dataflow dies before it snapshots offsets past bars that were never written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from typing_extensions import override

from binance_metrics.bars import BarUpdate
from binance_metrics.errors import StoreError
from binance_metrics.fragments import StaleFragment
from binance_metrics.ledger.accounted import AccountedTrades, record_accounted
from binance_metrics.ledger.holes import ACCOUNTED_TABLE
from binance_metrics.markets import Market
from binance_metrics.redact import redact
from binance_metrics.store.clickhouse import BARS_TABLE, open_store
from binance_metrics.store.failures import PERMANENT, error_code, is_detached, is_permanent
from binance_metrics.store.stale import merge_stale

log = logging.getLogger(__name__)

SinkItem = BarUpdate | StaleFragment | AccountedTrades
#: ``count(bars_written=..., duplicate_trades=..., undecided_trades=...)`` after each batch.
Counter = Callable[..., None]


@dataclass
class StoreHealth:
    """Whether writes to the store succeed; shared by the sink's workers, read by /health."""

    failing_since: float | None = None  # time.monotonic() of the first failure in a row
    last_error: str | None = None
    gave_up: str | None = None  # why the sink stopped writing (with ``abort``), or None
    stopping: bool = False  # it gave up because the run was stopping
    unwritten: int = 0  # bar updates handed to it since, not written
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def failed(self, error: str) -> float:
        """Record a failure; return for how long writes have been failing."""
        with self._lock:
            now = time.monotonic()
            if self.failing_since is None:
                self.failing_since = now
            self.last_error = error
            return now - self.failing_since

    def succeeded(self) -> None:
        with self._lock:
            self.failing_since = None
            self.last_error = None

    def give_up(self, unwritten: int, reason: str | None = None, stopping: bool = False) -> None:
        """Count updates not written; the first call says why (``reason``) it gave up."""
        with self._lock:
            if self.gave_up is None and reason is not None:
                self.gave_up, self.stopping = reason, stopping
            self.unwritten += unwritten

    def raise_if_given_up(self) -> None:
        """Raise the :class:`StoreError` of a sink that gave up, counting all it did not write."""
        with self._lock:
            if self.gave_up is not None:
                raise StoreError(gave_up_message(self.stopping, self.unwritten, self.gave_up))

    @property
    def problem(self) -> str | None:
        """Why the store looks unhealthy, or None."""
        with self._lock:
            if self.failing_since is None:
                return None
            failing = time.monotonic() - self.failing_since
            return f"writes failing for {failing:.0f} s: {self.last_error}"


def gave_up_message(stopping: bool, unwritten: int, reason: str) -> str:
    what = "stopping" if stopping else "giving up"
    return f"{what} with {unwritten} bar updates not written: {reason}"


def _one_line(exc: BaseException) -> str:
    """The error's type and first line (ClickHouse's messages go on with a stack trace), any
    password masked: it reaches /health and the logs."""
    lines = [line.strip() for line in redact(str(exc)).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class _BarsPartition(StatefulSinkPartition[SinkItem, None]):
    def __init__(self, sink: ClickHouseBarSink) -> None:
        self._store = open_store(sink.dsn, sink.market)
        self._sink = sink
        self._table = BARS_TABLE  # the table written (or read) last: named when it fails

    @override
    def write_batch(self, items: list[SinkItem]) -> None:
        sink = self._sink
        if sink.abort is not None and sink.abort.is_set():
            sink.health.give_up(len(items))  # it gave up already; the run is ending
            return
        delay = 0.5
        while True:
            try:
                counts = self._write(items)
            except Exception as exc:
                error = _one_line(exc)
                failing_for = sink.health.failed(error)
                stopping = sink.stop is not None and sink.stop.is_set()
                if self._cannot_pass(exc):
                    reason = f"{self._table} cannot be written ({error}); retrying cannot mend it"
                elif stopping:
                    reason = f"the store fails ({error})"
                elif sink.give_up_after_s is not None and failing_for >= sink.give_up_after_s:
                    reason = f"the store has failed for {failing_for:.0f} s ({error})"
                else:
                    reason = None
                if reason is not None:
                    if sink.abort is None:
                        raise StoreError(gave_up_message(stopping, len(items), reason)) from exc
                    sink.health.give_up(len(items), reason, stopping)
                    sink.abort.set()
                    return
                wait = delay
                if sink.give_up_after_s is not None:  # the last try falls on the deadline
                    wait = min(wait, sink.give_up_after_s - failing_for)
                log.warning(
                    "ClickHouse write of %d bars failed (%s); retrying in %.1f s",
                    len(items),
                    error,
                    wait,
                )
                # A stop request ends the wait at once (then the next failure gives up).
                if sink.stop is not None:
                    sink.stop.wait(wait)
                else:
                    time.sleep(wait)
                delay = min(delay * 2, sink.max_backoff_s)
                continue
            sink.health.succeeded()
            sink.count(**counts)
            return

    def _cannot_pass(self, exc: Exception) -> bool:
        if not is_permanent(exc):
            return False
        # A detached table is being looked after: it comes back (ATTACH TABLE).
        return not (
            error_code(exc) == PERMANENT["UNKNOWN_TABLE"] and is_detached(self._store, self._table)
        )

    def _write(self, items: list[SinkItem]) -> dict[str, int]:
        pending: list[BarUpdate] = []
        accounted: list[AccountedTrades] = []
        written = duplicates = undecided = 0
        self._table = self._sink.table
        for item in items:
            if isinstance(item, AccountedTrades):
                accounted.append(item)
            elif isinstance(item, StaleFragment):
                # Reads the stored bar back: what came before it in this batch must be there.
                written += self._store.insert_bars(pending, self._sink.table)
                pending = []
                outcome = merge_stale(self._store, item, self._sink.table)
                pending += outcome.updates
                duplicates += outcome.duplicates
                undecided += outcome.undecided
            else:
                pending.append(item)
        written += self._store.insert_bars(pending, self._sink.table)
        self._table = ACCOUNTED_TABLE
        record_accounted(self._store, accounted)
        return {
            "bars_written": written,
            "duplicate_trades": duplicates,
            "undecided_trades": undecided,
        }

    @override
    def snapshot(self) -> None:
        return None  # every write is done when write_batch returns: nothing to resume


class ClickHouseBarSink(FixedPartitionedSink[SinkItem, None]):
    """Write bar updates of ``market`` (and merge stale fragments) into ``table``
    (``binance.ohlcv``, or the 1-second bars' ``binance.ohlcv_1s``), and the ids of trades
    klines exclude into ``binance.accounted_trades``.

    One partition: a single worker of the whole cluster writes every bar (there is about one
    per symbol and minute), so with the embedded store the one process that opens it gets all
    of them, however many processes run the dataflow. Give it a stream keyed by symbol
    (:func:`output_bars`).
    """

    def __init__(
        self,
        dsn: str,
        count: Counter = lambda **counts: None,
        *,
        market: Market,
        health: StoreHealth | None = None,
        stop: threading.Event | None = None,
        give_up_after_s: float | None = None,
        abort: threading.Event | None = None,
        max_backoff_s: float = 30.0,
        table: str = BARS_TABLE,
    ) -> None:
        self.dsn = dsn
        self.market: Market = market
        self.table = table
        self.count = count
        self.health = health or StoreHealth()
        self.stop = stop
        self.give_up_after_s = give_up_after_s
        self.abort = abort
        self.max_backoff_s = max_backoff_s

    @override
    def list_parts(self) -> list[str]:
        return ["bars"]

    @override
    def part_fn(self, item_key: str) -> int:
        return 0

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _BarsPartition:
        return _BarsPartition(self)


def output_bars(step_id: str, bars: Stream[SinkItem], sink: ClickHouseBarSink) -> None:
    """Write ``bars`` through ``sink``."""
    op.output(step_id, op.key_on(f"{step_id}_by_symbol", bars, _symbol), sink)


def _symbol(item: SinkItem) -> str:
    return item.symbol
