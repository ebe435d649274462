"""A stop loses nothing: the Kafka source reads what was produced to its end, the windows close,
the sink writes them, then the run returns. Through the real broker (Tansu) and store (chDB)."""

from __future__ import annotations

import threading
from pathlib import Path

from bytewax.testing import run_main

from binance_metrics.dataflow import FlowStats, build_flow
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics, free_port
from binance_metrics.kafka.source import RawKafkaSource
from binance_metrics.recordings import read_recording
from binance_metrics.settings import Settings, load_settings
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars
from binance_metrics.trades import TradeMessage
from tests.pipeline.support import (
    SLOW_INSERTS,
    Up,
    assert_bars_equal_reference,
    many_trades,
    produce,
    wait_for,
)
from tests.support.data import DATA
from tests.support.oracle import FIELDS, reference_klines

CAPTURE = DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"


class _Run(threading.Thread):
    """The dataflow as ``up`` runs it: following the topic (no STOP_AT_END), with a stop."""

    def __init__(self, settings: Settings, broker: EmbeddedBroker, stop: threading.Event):
        super().__init__(name="dataflow")
        self.stats = FlowStats()
        source = RawKafkaSource(broker.connection, settings.KAFKA_TOPIC, stop=stop)
        self.flow = build_flow(
            settings, broker.connection, stats=self.stats, source=source, stop=stop
        )
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            run_main(self.flow)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc

    def finish(self) -> None:
        self.join(120)
        assert not self.is_alive(), "the dataflow did not end after the stop"
        assert self.error is None, self.error


def _settings(broker: EmbeddedBroker, store: Store, prefix: str) -> Settings:
    settings = load_settings(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, KAFKA_TOPIC=f"{prefix}-trades",
        KAFKA_DLQ_TOPIC=f"{prefix}-dlq", CLICKHOUSE_URL=store.dsn,
    )  # fmt: skip
    ensure_topics(broker.connection, [settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC], 3)
    return settings


def _assert_stored(store: Store, trades: list[TradeMessage]) -> None:
    expected = reference_klines(trades)
    stored = {
        (symbol, bar.open_time_ms): {name: getattr(bar, name) for name in FIELDS}
        for symbol in {trade.symbol for trade in trades}
        for bar in fetch_bars(store, symbol)
    }
    assert sum(fields["trade_count"] for fields in stored.values()) == len(trades)
    assert stored == expected


def test_a_stop_set_before_the_start_still_reads_a_backlog_of_200k_trades(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    settings = _settings(broker, empty_store, topic_prefix)
    trades = many_trades(200_000)
    produce(broker.connection, settings.KAFKA_TOPIC, trades)

    stop = threading.Event()
    stop.set()  # at once: nothing of the backlog has been read
    run = _Run(settings, broker, stop)
    run.start()
    run.finish()

    assert run.stats.trades == len(trades)
    _assert_stored(empty_store, trades)


def test_trades_produced_while_it_runs_are_all_written_after_the_stop(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    settings = _settings(broker, empty_store, topic_prefix)
    trades = many_trades(200_000)
    stop = threading.Event()
    run = _Run(settings, broker, stop)
    run.start()
    produce(broker.connection, settings.KAFKA_TOPIC, trades)
    stop.set()  # as up does: once the producer has flushed
    run.finish()

    assert run.stats.trades == len(trades)
    _assert_stored(empty_store, trades)


def test_a_stop_after_everything_was_read_ends_the_run(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    """The end was reached (and its EOF passed over) before the stop: the run still ends, and
    the windows still open are written."""
    settings = _settings(broker, empty_store, topic_prefix)
    trades = many_trades(5_000)
    produce(broker.connection, settings.KAFKA_TOPIC, trades)
    stop = threading.Event()
    run = _Run(settings, broker, stop)
    run.start()
    wait_for(lambda: run.stats.trades == len(trades), 60, "every trade read")
    stop.set()
    run.finish()

    _assert_stored(empty_store, trades)


def test_up_interrupted_mid_run_writes_every_trade_the_ingestor_produced(
    tmp_path: Path,
) -> None:
    """With a slow store the dataflow lags behind the ingestor: at the stop, the topic holds
    trades it has not read yet."""
    trades = [r for r in read_recording(CAPTURE) if isinstance(r, TradeMessage)]
    up = Up(tmp_path, CAPTURE, speed=50, port=free_port(), SYMBOLS="BTCUSDT")
    try:
        wait_for(lambda: up.health().status_code == 200, 60, "a healthy ingestor")
        for statement in SLOW_INSERTS:
            up.store(statement)
        wait_for(lambda: up.produced() >= len(trades) // 3, 60, "a third of the trades produced")
        assert up.produced() < len(trades), "the capture ended before the stop"
        assert up.stop() == 0, up.log()[-3000:]
    finally:
        up.kill()

    produced = up.last_produced_count()
    assert len(trades) // 3 <= produced < len(trades)
    stored = up.stored_bars("BTCUSDT")
    assert sum(bar["trade_count"] for bar in stored) == produced
    assert_bars_equal_reference(stored, trades[:produced])
