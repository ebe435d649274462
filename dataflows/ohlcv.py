"""The OHLCV dataflow for ``python -m bytewax.run dataflows.ohlcv:flow``.

Reads ``KAFKA_TOPIC`` on ``KAFKA_BOOTSTRAP_SERVERS`` and writes 1-minute bars to ClickHouse
(``CLICKHOUSE_URL``, or the embedded store under ``DATA_DIR``). Run on its own, the dataflow
needs a real Kafka: the embedded broker lives inside ``binance-metrics up`` / ``replay``.

Bytewax imports this module and then runs ``flow``, so what must happen before the run happens
here, at import:

- the settings are read, the broker is checked, with its topics, and a ClickHouse server is
  opened: a problem is one line on stderr and exit status 2 (configuration) or 1 (Kafka,
  ClickHouse), before any dataflow starts;
- SIGINT and SIGTERM stop the run the way the end of the input would: every partition is read
  to its end as of the signal, the open windows are written, the recovery state is
  snapshotted, exit status 0 (a store that fails meanwhile: exit status 1, nothing lost).
  Bytewax's own handling (a ``KeyboardInterrupt`` raised inside the worker) ends in a Rust panic
  instead. A second signal exits at once, status 128 + signal number;
- an error of binance-metrics that ends the run (a Kafka failure no retry cures) is printed as
  one line; Bytewax still prints its panic header before it.

docs/troubleshooting.md ("Kafka errors") lists the messages.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import NoReturn

from bytewax.dataflow import Dataflow

from binance_metrics.dataflow import build_flow
from binance_metrics.errors import BinanceMetricsError, BrokerError, ConfigError, deliberate_cause
from binance_metrics.kafka.broker import check_broker
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.source import RawKafkaSource
from binance_metrics.settings import load_settings
from binance_metrics.store.clickhouse import open_store

PROG = "binance-metrics dataflow"

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger(__name__)

_stop = threading.Event()


def _exit_with(error: BinanceMetricsError) -> NoReturn:
    if isinstance(error, ConfigError):
        print(f"{PROG}: {error}", file=sys.stderr)
        raise SystemExit(2)
    print(f"{PROG}: error: {error}", file=sys.stderr)
    raise SystemExit(1)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if _stop.is_set():
        log.warning("%s again: exiting without writing the open windows", name)
        os._exit(128 + signum)
    log.info("%s: stopping; the open windows are written first (send it again to exit now)", name)
    _stop.set()


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    error = deliberate_cause(exc)
    if error is None:
        sys.__excepthook__(kind, exc, tb)  # a bug: keep the traceback
    else:
        print(f"{PROG}: error: {error}", file=sys.stderr)


def _build() -> Dataflow:
    settings = load_settings()
    logging.getLogger().setLevel(settings.LOG_LEVEL)
    if settings.embedded_kafka:
        raise ConfigError(
            "KAFKA_BOOTSTRAP_SERVERS is not set: the stand-alone dataflow reads a real Kafka. "
            "Use `binance-metrics up` for the all-in-one embedded pipeline."
        )
    kafka = KafkaConnection.from_settings(settings)
    topics = check_broker(kafka)
    missing = [t for t in (settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC) if t not in topics]
    if missing:
        raise BrokerError(
            f"no topic {', '.join(map(repr, missing))} on KAFKA_BOOTSTRAP_SERVERS="
            f"{kafka.bootstrap_servers}: create it (compose's kafka-init does, and so does "
            "`binance-metrics ingest`) or check KAFKA_TOPIC and KAFKA_DLQ_TOPIC"
        )
    if not settings.clickhouse_dsn.startswith("chdb://"):
        # A server that cannot be reached is an error now, not when the first bar is written
        # (the one bar-writing worker opens the store lazily). An embedded store is left to
        # that worker: chDB serves its directory to one process of the cluster.
        open_store(settings.clickhouse_dsn, settings.MARKET)
    source = RawKafkaSource(
        kafka,
        settings.KAFKA_TOPIC,
        tail=not settings.STOP_AT_END,
        batch_size=settings.KAFKA_BATCH_SIZE,
        stop=_stop,
    )
    # The stop reaches the bar sink too: a store that fails then ends the run with an error
    # (nothing unwritten is snapshotted) instead of holding it forever.
    return build_flow(settings, kafka, source=source, stop=_stop)


def _flow_or_exit() -> Dataflow:
    try:
        return _build()
    except BinanceMetricsError as error:
        _exit_with(error)


flow = _flow_or_exit()

signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGTERM, _on_signal)
sys.excepthook = _excepthook
