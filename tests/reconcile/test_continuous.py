"""Continuous reconciliation in the running ingestor: a stored bar that is not Binance's kline is
counted in ``binance_metrics_reconcile_mismatches_total``, shown on ``/health`` and handed to
``on_mismatch``, once."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.reconcile.compare import Kline
from binance_metrics.reconcile.continuous import ContinuousReconciler, build_reconciler
from binance_metrics.reconcile.files import read_klines
from binance_metrics.reconcile.rest import RestKlines
from binance_metrics.reconcile.stored import stored_klines
from binance_metrics.settings import Settings
from binance_metrics.store.clickhouse import Store
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.klines import read_kline_rows
from binance_metrics.trades import now_ms
from tests.ingest.captures import real_trades
from tests.ingest.harness import running_ingestor, settings_for, wait_until
from tests.reconcile.support import store_klines
from tests.support.data import BTCUSDT_KLINES

T0 = 1577836800000  # 2020-01-01T00:00Z, the first kline of the file
MINUTE = 60_000
ALTERED = T0 + 2 * MINUTE


def test_a_mismatch_is_counted_shown_and_handed_on(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    # The store holds Binance's first five minutes, exactly; Binance serves its klines, but one
    # close is not what the store has.
    rows = read_kline_rows(BTCUSDT_KLINES)
    stored = read_klines([BTCUSDT_KLINES])[:5]
    store_klines(empty_store, "BTCUSDT", stored)
    served = [list(row) for row in rows]
    served[2][4] = f"{Decimal(rows[2][4]) + Decimal('0.01'):.8f}"
    handed: list[tuple[str, int]] = []
    handed_on = threading.Event()

    def on_mismatch(symbol: str, open_time_ms: int) -> None:
        handed.append((symbol, open_time_ms))
        handed_on.set()

    with LocalExchange(real_trades("BTCUSDT", 200), klines={"BTCUSDT": served}) as exchange:
        settings = settings_for(exchange, topic_prefix, ("BTCUSDT",), backfill_retry_base_s=0.05)
        reconciler = ContinuousReconciler(
            settings.SYMBOLS,
            lambda symbol, start, end: stored_klines(empty_store, symbol, "1m", start, end),
            RestKlines.from_settings(settings),
            every_s=0.1,
            on_mismatch=on_mismatch,
            since_ms=T0,
            # Eight minutes have settled, but only five are stored: the others are not checked
            # (yet), as those of a quiet symbol, written when its next trade comes.
            clock_ms=lambda: T0 + 9 * MINUTE,
        )
        with running_ingestor(settings, broker.bootstrap_servers, reconciler) as running:
            wait_until(handed_on.is_set, 30, "no mismatch was handed on")
            wait_until(lambda: reconciler.runs >= 3, 30, "the reconciler stopped running")
            _, health = running.health()
            metrics = running.metrics()
    assert handed == [("BTCUSDT", ALTERED)], "each minute is checked once"
    part = health["reconcile"]
    assert (part["checkedMinutes"], part["matchedMinutes"], part["mismatchedMinutes"]) == (5, 4, 1)
    assert (part["mismatches"], part["lastError"], part["checkedUntil"]) == (
        1, None, {"BTCUSDT": T0 + 5 * MINUTE},
    )  # fmt: skip
    assert part["recent"] == [
        {"symbol": "BTCUSDT", "openTime": ALTERED, "field": "close",
         "ours": rows[2][4], "binance": served[2][4]},
    ]  # fmt: skip
    assert 'binance_metrics_reconcile_mismatches_total{field="close",symbol="BTCUSDT"} 1.0' in (
        metrics
    )
    assert [call.status for call in exchange.log.klines_calls] == [200]


def test_a_failed_run_is_retried_from_the_same_minute_and_a_backlog_is_skipped() -> None:
    rows = read_kline_rows(BTCUSDT_KLINES)
    ours = read_klines([BTCUSDT_KLINES])
    now = [T0 + 1200 * MINUTE]  # 1199 minutes have settled: one page of 1000, 199 skipped

    def read_bars(symbol: str, start: int, end: int) -> list[Kline]:
        return [k for k in ours if start <= k.open_time_ms < end]

    with LocalExchange([], klines={"BTCUSDT": rows}, rest_errors=[(400, 0)]) as exchange:
        reconciler = ContinuousReconciler(
            ("BTCUSDT",), read_bars,
            RestKlines.from_settings(Settings(), base_url=exchange.rest_url),
            every_s=1, since_ms=T0, clock_ms=lambda: now[0],
        )  # fmt: skip

        async def two_runs() -> None:
            await reconciler.check()
            failed = reconciler.status()
            assert "HTTP 400" in (failed["lastError"] or "")
            assert (failed["checkedMinutes"], failed["checkedUntil"]) == (0, {"BTCUSDT": T0})
            now[0] += 2 * MINUTE
            await reconciler.check()

        asyncio.run(two_runs())
    status = reconciler.status()
    assert (status["lastError"], status["runs"], status["mismatches"]) == (None, 2, 0)
    assert (status["checkedMinutes"], status["matchedMinutes"], status["skippedMinutes"]) == (
        1000, 1000, 201,
    )  # fmt: skip
    assert status["checkedUntil"] == {"BTCUSDT": T0 + 1201 * MINUTE}


def test_reconciliation_is_off_at_0_or_without_a_store(empty_store: Store) -> None:
    assert build_reconciler(Settings(RECONCILE_EVERY_S=0), lambda: empty_store) is None
    assert build_reconciler(Settings(), None) is None
    reconciler = build_reconciler(Settings(SYMBOLS="xrpeth,btcusdt"), lambda: empty_store)
    assert reconciler is not None
    assert (reconciler.symbols, reconciler.every_s) == (("XRPETH", "BTCUSDT"), 300)
    # The first minute checked begins at least 30 s after the start.
    (since,) = set(reconciler.status()["checkedUntil"].values())
    assert since % MINUTE == 0 and 30_000 <= since - now_ms() <= 90_000
