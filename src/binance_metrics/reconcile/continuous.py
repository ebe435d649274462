"""Continuous reconciliation inside ``up`` and ``ingest``: every ``RECONCILE_EVERY_S`` the closed
1-minute bars of each symbol not checked yet are compared with Binance's REST klines.

Which minutes: those that began at least 30 s after the process started (earlier ones were not all
seen by this ingestor: the first is partial) and closed at least :data:`SETTLE_MS` ago (the
dataflow writes a bar ``WATERMARK_WAIT_S`` after its close; a trade backfilled after a reconnect
comes later), up to the symbol's newest stored bar (a quiet symbol's minutes without trades are
written when its next trade comes). Each minute is checked once, at most :data:`PAGE_MINUTES` per
symbol and run (one REST page, weight 2): a backlog beyond that is skipped, and counted. A run that
fails (REST or the store unreachable) is logged, shown on ``/health`` and retried at the next run
from the same minute. Requests wait when the IP's used weight in the minute
(``X-MBX-USED-WEIGHT-1M``) leaves less than ``RECONCILE_WEIGHT_BUDGET``, so the trade backfill
keeps the rest.

Each minute that differs, or that Binance has and the store has not, is handed to
``on_mismatch(symbol, open_time_ms)`` (by default logged; the heal path refetches its trades)
and counted per symbol and field in ``binance_metrics_reconcile_mismatches_total``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, Final

from binance_metrics.reconcile.compare import Kline, reconcile
from binance_metrics.reconcile.rest import RestKlines
from binance_metrics.reconcile.stored import stored_klines
from binance_metrics.settings import Settings
from binance_metrics.store.clickhouse import Store
from binance_metrics.trades import now_ms

log = logging.getLogger(__name__)

MINUTE_MS: Final = 60_000
#: A minute is checked once it has been closed this long.
SETTLE_MS: Final = 60_000
#: The first minute checked begins at least this long after the start.
START_MARGIN_MS: Final = 30_000
#: Minutes checked per symbol and run: one page of REST klines.
PAGE_MINUTES: Final = 1000
#: Mismatches kept for ``/health``.
RECENT: Final = 20

#: ``on_mismatch(symbol, open_time_ms)``: a stored minute that is not Binance's. Called on the
#: ingestor's event loop: it must return at once (start a task for the work).
OnMismatch = Callable[[str, int], None]
#: ``read_bars(symbol, start_ms, end_ms)``: the stored 1-minute bars of the range.
ReadBars = Callable[[str, int, int], list[Kline]]


def log_mismatch(symbol: str, open_time_ms: int) -> None:
    """The default ``on_mismatch``: a warning line (the heal path is wired by the caller)."""
    log.warning("reconcile: %s bar of %d differs from Binance's kline", symbol, open_time_ms)


class ContinuousReconciler:
    """Run :meth:`run` as a task of the ingestor's event loop; :meth:`status` for ``/health``;
    :attr:`mismatches` (``(symbol, field) -> count``) for the metric."""

    def __init__(
        self,
        symbols: Iterable[str],
        read_bars: ReadBars,
        klines: RestKlines,
        *,
        every_s: float,
        on_mismatch: OnMismatch = log_mismatch,
        since_ms: int | None = None,
        clock_ms: Callable[[], int] = now_ms,
        settle_ms: int = SETTLE_MS,
    ) -> None:
        """``since_ms``: the first open time to check (default: the first minute that begins
        :data:`START_MARGIN_MS` after now); ``clock_ms``: now, in epoch ms."""
        since = since_ms
        if since is None:
            since = -(-(clock_ms() + START_MARGIN_MS) // MINUTE_MS) * MINUTE_MS
        self.symbols = tuple(symbols)
        self.every_s = every_s
        self._read_bars = read_bars
        self._klines = klines
        self.on_mismatch = on_mismatch
        self._clock_ms = clock_ms
        self._settle_ms = settle_ms
        self._next = dict.fromkeys(self.symbols, since)  # symbol -> first open time unchecked
        self.mismatches: Counter[tuple[str, str]] = Counter()  # (symbol, field) -> count
        self.runs = 0
        self.checked = 0  # minutes compared
        self.matched = 0
        self.skipped = 0  # minutes of a backlog beyond one page, never checked
        self.mismatched_minutes = 0
        self.last_run_ms: int | None = None
        self.last_error: str | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._lock = threading.Lock()  # /health and scrapes may read off the event loop

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Callable[[], Store], on_mismatch: OnMismatch = log_mismatch
    ) -> ContinuousReconciler:
        """Reads ``store()``'s bars, asks ``MARKET``'s klines at ``BINANCE_REST_URL``, every
        ``RECONCILE_EVERY_S``."""

        def read_bars(symbol: str, start_ms: int, end_ms: int) -> list[Kline]:
            return stored_klines(store(), symbol, "1m", start_ms, end_ms)

        client = RestKlines.from_settings(
            settings,
            settings.MARKET,
            base_url=settings.BINANCE_REST_URL,  # the market's, unless set explicitly
            weight_budget=settings.RECONCILE_WEIGHT_BUDGET,
        )
        return cls(settings.SYMBOLS, read_bars, client, every_s=settings.RECONCILE_EVERY_S,
                   on_mismatch=on_mismatch)  # fmt: skip

    async def run(self) -> None:
        """Check every ``every_s`` until cancelled."""
        try:
            while True:
                await asyncio.sleep(self.every_s)
                await self.check()
        finally:
            await self._klines.aclose()

    async def check(self) -> None:
        """One run: each symbol's settled minutes not checked yet."""
        # The minutes before ``end`` closed at least settle_ms ago.
        end = (self._clock_ms() - self._settle_ms) // MINUTE_MS * MINUTE_MS
        error = None
        for symbol in self.symbols:
            try:
                await self._check_symbol(symbol, end)
            except Exception as exc:  # noqa: BLE001 - a failed run is retried, never fatal
                error = f"{symbol}: {exc}"
                log.warning("reconcile %s failed (retried in %g s): %s", symbol, self.every_s, exc)
        self.runs += 1
        self.last_run_ms = self._clock_ms()
        self.last_error = error

    async def _check_symbol(self, symbol: str, end: int) -> None:
        unchecked = self._next[symbol]
        if unchecked >= end:
            return
        start = max(unchecked, end - PAGE_MINUTES * MINUTE_MS)  # a longer backlog is skipped
        ours = await asyncio.to_thread(self._read_bars, symbol, start, end)
        if not ours:
            return  # nothing written yet: checked when it is
        # Up to the newest stored bar: a quiet symbol's minutes without trades are written when
        # its next trade comes. end - start is whole minutes, at most one page.
        end = ours[-1].open_time_ms + MINUTE_MS
        theirs = await self._klines.klines(symbol, "1m", start, end, max_pages=1)
        result = reconcile(ours, theirs, self._klines.market.fields)
        # A minute Binance has and the store has not, or has otherwise, is handed on to heal.
        minutes = sorted({*result.mismatched_minutes, *result.missing_here})
        with self._lock:
            self._next[symbol] = end
            self.skipped += (start - unchecked) // MINUTE_MS
            self.checked += (end - start) // MINUTE_MS
            self.matched += result.matched
            self.mismatched_minutes += len(minutes)
            for difference in result.mismatched:
                self.mismatches[(symbol, difference.field)] += 1
                self.recent.append(
                    {"symbol": symbol, "openTime": difference.open_time_ms,
                     "field": difference.field, "ours": _text(difference.ours),
                     "binance": _text(difference.binance)}
                )  # fmt: skip
            for kind, times in (("missing_here", result.missing_here),
                                ("missing_there", result.missing_there)):  # fmt: skip
                for open_time in times:
                    self.mismatches[(symbol, kind)] += 1
                    self.recent.append({"symbol": symbol, "openTime": open_time, "field": kind})
        for open_time in minutes:
            try:
                self.on_mismatch(symbol, open_time)
            except Exception:
                log.exception("reconcile: on_mismatch(%s, %d) failed", symbol, open_time)

    def mismatch_counts(self) -> dict[tuple[str, str], int]:
        """``(symbol, field) -> count`` so far, for the metric."""
        with self._lock:
            return dict(self.mismatches)

    def status(self) -> dict[str, Any]:
        """The ``"reconcile"`` part of ``/health`` (also read off the event loop)."""
        with self._lock:
            return self._status()

    def _status(self) -> dict[str, Any]:
        return {
            "everyS": self.every_s,
            "runs": self.runs,
            "lastRunAt": self.last_run_ms,
            "lastError": self.last_error,
            "checkedMinutes": self.checked,
            "matchedMinutes": self.matched,
            "mismatchedMinutes": self.mismatched_minutes,
            "skippedMinutes": self.skipped,
            "checkedUntil": {symbol: self._next[symbol] for symbol in self.symbols},
            "mismatches": sum(self.mismatches.values()),
            "recent": list(self.recent),
        }


def build_reconciler(
    settings: Settings,
    store: Callable[[], Store] | None,
    on_mismatch: OnMismatch = log_mismatch,
) -> ContinuousReconciler | None:
    """The reconciler ``up`` and ``ingest`` run, or None: ``RECONCILE_EVERY_S=0``, or no store
    to read (``ingest`` without ``CLICKHOUSE_URL``)."""
    if settings.RECONCILE_EVERY_S == 0:
        return None
    if store is None:
        log.info("continuous reconciliation is off: it reads the bars at CLICKHOUSE_URL, unset")
        return None
    return ContinuousReconciler.from_settings(settings, store, on_mismatch)


def _text(value: object) -> str:
    return format(value, "f") if not isinstance(value, int) else str(value)
