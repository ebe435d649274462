"""``binance-metrics up``: the whole pipeline in one process.

::

    [local exchange]  ->  ingestor (FastAPI: /, /health, /metrics)  ->  Kafka (embedded Tansu
    or KAFKA_BOOTSTRAP_SERVERS)  ->  dataflow (Bytewax, in a thread)  ->  ClickHouse (embedded
    chDB under DATA_DIR, or CLICKHOUSE_URL)  ->  candle page at /, pushed (web/live.py)

The demo (``--exchange replay:``) is kept apart and labelled: :mod:`binance_metrics.demo`.

One process, because chDB serves its data directory to one process: the dataflow writes and the
candle page reads through the same client (docs/architecture.md, ClickHouse).

Ctrl-C or SIGTERM stops the ingestor first (its producer flushes), then the dataflow, which reads
what was produced to its end and writes every bar, open windows included, then the broker. A
store that fails meanwhile ends the stop with an error (exit status 1) instead of holding it
forever. While the store fails, ``/health`` says so (``"store"``) and answers 503; the dataflow
waits for it, and Kafka keeps the trades.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from bytewax.dataflow import Dataflow
from bytewax.testing import run_main
from prometheus_client import REGISTRY, Metric
from prometheus_client.registry import Collector

from binance_metrics.dataflow import FlowStats, build_flow
from binance_metrics.demo import DemoLabel, demo_settings
from binance_metrics.errors import BinanceMetricsError, ConfigError
from binance_metrics.http_server import serve_app
from binance_metrics.ingest.app import create_app
from binance_metrics.ingest.discovery import is_pattern
from binance_metrics.ingest.health import Check, feeds
from binance_metrics.ingest.service import Ingestor
from binance_metrics.kafka.broker import kafka_for
from binance_metrics.kafka.retention import DrainedPipeline, Gate
from binance_metrics.kafka.source import Positions, RawKafkaSource
from binance_metrics.reconcile.continuous import build_reconciler
from binance_metrics.recordings import RecordingError, check_raw_trades
from binance_metrics.settings import Settings
from binance_metrics.store.clickhouse import open_store
from binance_metrics.store.sink import StoreHealth
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.market import load_trades
from binance_metrics.web import LiveBars, create_live_router, create_router

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 15.0


def replay_paths(exchange: str) -> list[Path] | None:
    """``replay:a.jsonl,b.jsonl`` -> paths; ``binance`` -> None. Files that the local exchange
    cannot stream (not raw trades) are a :class:`ConfigError` naming the file."""
    if exchange == "binance":
        return None
    kind, _, spec = exchange.partition(":")
    if kind != "replay" or not spec:
        raise ConfigError(
            f"--exchange must be 'binance' or 'replay:PATH[,PATH...]', not {exchange!r}"
        )
    paths = [Path(part) for part in spec.split(",") if part]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise ConfigError(f"--exchange replay: no such file: {', '.join(missing)}")
    try:
        for path in paths:
            check_raw_trades(path)
    except RecordingError as exc:
        raise ConfigError(str(exc)) from None
    return paths


def run_up(settings: Settings, exchange: str = "binance", speed: float = 1.0) -> int:
    paths = replay_paths(exchange)
    demo: DemoLabel | None = None
    with ExitStack() as stack:
        if paths is not None:
            local = stack.enter_context(
                LocalExchange.replaying(load_trades(paths), speed, settings.MARKET)
            )
            settings = demo_settings(settings, local.ws_url, local.rest_url)
            demo = DemoLabel(paths, speed, settings.DATA_DIR)
            log.info(
                "local exchange on %s replays %d symbols: %s",
                local.ws_url,
                len(local.symbols),
                ", ".join(local.symbols[:10]) + (", ..." if len(local.symbols) > 10 else ""),
            )
        # After a restart of the embedded broker (empty topics), the producer starts afresh.
        broker_restarted: list[Callable[[], None]] = []
        # The embedded broker is started afresh for its retention only while these hold.
        gates: list[Gate] = []
        kafka = stack.enter_context(kafka_for(settings, broker_restarted, gates))
        store = open_store(settings.clickhouse_dsn, settings.MARKET)

        stats = FlowStats()
        store_health = StoreHealth()
        stop = threading.Event()  # read what was produced to its end, write it, return
        abort = threading.Event()  # set by the sink when it gives up: end at once
        positions = Positions()
        source = RawKafkaSource(
            kafka,
            settings.KAFKA_TOPIC,
            batch_size=settings.KAFKA_BATCH_SIZE,
            stop=stop,
            abort=abort,
            positions=positions,
        )
        flow = build_flow(
            settings, kafka, stats=stats, source=source, stop=stop, store_health=store_health,
            abort=abort,
        )  # fmt: skip
        dataflow = _DataflowThread(flow, stop)
        dataflow.start()
        try:
            checks: dict[str, Check] = {"store": lambda: store_health.problem}
            source_of_bars = _exchange_info(settings, demo)
            app = create_app(
                settings,
                kafka,
                checks,
                lambda: {"exchange": source_of_bars()},
                store=store,
                reconciler=build_reconciler(settings, lambda: store),
            )
            ingestor = app.state.ingestor
            broker_restarted.append(ingestor.broker_restarted)
            gates.append(
                DrainedPipeline(lambda: ingestor.producer, positions, settings.KAFKA_TOPIC)
            )
            # The names of SYMBOLS; ALL and patterns are not symbols to offer.
            names = tuple(s for s in settings.SYMBOLS if not is_pattern(s))
            app.include_router(
                create_router(lambda: store, names, settings.WINDOW_SECONDS, settings.MARKET)
            )
            live = LiveBars(lambda: store, bar_seconds=settings.WINDOW_SECONDS)
            app.include_router(
                create_live_router(live, lambda: _page_status(ingestor, demo, source_of_bars))
            )
            if demo is not None:
                demo.watch(local.done, stop)
            # /metrics shows the ingestor's registry; add the default one, where the dataflow
            # counts.
            app.state.ingestor.metrics.registry.register(_DefaultRegistry())
            reporter = threading.Thread(
                target=_report,
                args=(app.state.ingestor, stats, checks, stop),
                name="progress",
                daemon=True,
            )
            reporter.start()
            url = f"http://{settings.HEALTH_HOST}:{settings.HEALTH_PORT}/"
            log.info("candles at %s  (health: %shealth, metrics: %smetrics)", url, url, url)
            # Returns once the ingestor has stopped and its producer has flushed: every trade it
            # took is in Kafka before the dataflow is asked to stop.
            serve_app(app, settings.HEALTH_HOST, settings.HEALTH_PORT, on_exit=[live.close])
        finally:
            stop.set()
            log.info(
                "stopping the dataflow: it reads what was produced to its end and writes the "
                "bars (a second Ctrl-C exits at once)"
            )
            with _second_signal_exits():
                dataflow.join()
    if dataflow.error is not None:
        raise BinanceMetricsError(f"the dataflow failed: {dataflow.error}") from dataflow.error
    store_health.raise_if_given_up()
    log.info("stopped: %s", stats.summary())
    return 0


@contextmanager
def _second_signal_exits() -> Iterator[None]:
    """While the dataflow finishes, SIGINT or SIGTERM exits at once (the bars not yet written
    are lost; the broker dies with the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def exit_now(signum: int, _frame: FrameType | None) -> None:
        log.warning("%s again: exiting without writing the rest", signal.Signals(signum).name)
        logging.shutdown()
        os._exit(128 + signum)

    previous = {sig: signal.signal(sig, exit_now) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _DataflowThread(threading.Thread):
    """Runs the dataflow; if it ends before it was asked to, the whole process stops (SIGTERM
    to itself: the web server shuts down gracefully and the ingestor flushes), rather than
    serving a page whose bars no longer move."""

    def __init__(self, flow: Dataflow, stop: threading.Event) -> None:
        super().__init__(name="dataflow")
        self._flow = flow
        self._stop_requested = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            run_main(self._flow)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            self.error = exc
        if not self._stop_requested.is_set():
            log.error("the dataflow stopped unexpectedly (%s); shutting down", self.error)
            os.kill(os.getpid(), signal.SIGTERM)


def _exchange_info(settings: Settings, demo: DemoLabel | None) -> Callable[[], dict[str, Any]]:
    """What the bars come from, for ``/health`` and the page: Binance, or the demo's replay."""
    if demo is not None:
        return demo.describe
    live = {"kind": "binance", "replayed": False, "url": settings.BINANCE_WS_URL}
    return lambda: live


def _page_status(
    ingestor: Ingestor, demo: DemoLabel | None, exchange: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """The candle page's feed status (read on the event loop, where the ingestor runs)."""
    states = feeds(ingestor)
    return {"feeds": demo.feeds(states) if demo else states, "exchange": exchange()}


class _DefaultRegistry(Collector):
    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def _report(
    ingestor: Ingestor, stats: FlowStats, checks: Mapping[str, Check], stop: threading.Event
) -> None:
    """Log, every few seconds, that trades come in and bars go out."""
    while not stop.wait(PROGRESS_EVERY_S):
        try:
            _, health = ingestor.health(checks)
        except Exception:  # noqa: BLE001 - a progress line must never stop the pipeline
            health = {}
        counts = stats.summary()
        log.info(
            "ingestor: %s, %s trades produced, %s dead-lettered | dataflow: %s trades, "
            "%s bars written, %s late trades",
            health.get("status", "?"), health.get("produced", "?"), health.get("dlq", "?"),
            counts["trades"], counts["bars_written"], counts["late_trades"],
        )  # fmt: skip
