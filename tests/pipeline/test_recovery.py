"""A crash of the dataflow loses and doubles nothing: Bytewax recovery, the bar book and the
idempotent table together, through the real broker and the real store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from bytewax.errors import BytewaxRuntimeError
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main
from confluent_kafka import Producer

from binance_metrics.dataflow import FlowStats, build_flow
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.source import RawKafkaSource, _RawPartition
from binance_metrics.recordings import read_recording
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars
from binance_metrics.trades import TradeMessage, encode_trade
from tests.support.data import ETHUSDT_CAPTURE
from tests.support.oracle import FIELDS, reference_klines
from tests.support.pipeline import pipeline_settings


class Crash(RuntimeError):
    pass


class CrashingSource(RawKafkaSource):
    """The production source, whose partitions die after a number of non-empty batches."""

    def __init__(
        self, kafka: KafkaConnection, topic: str, *, batch_size: int, crash_after_batches: int
    ) -> None:
        super().__init__(kafka, topic, batch_size=batch_size)
        self.crash_after_batches = crash_after_batches

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _RawPartition:
        part = super().build_part(step_id, for_part, resume_state)
        budget = [self.crash_after_batches]
        next_batch = part.next_batch

        def dying_next_batch() -> list[bytes]:
            if budget[0] == 0:
                raise Crash("simulated crash")
            batch = next_batch()
            budget[0] -= bool(batch)
            return batch

        # The partition is built by the production code: its method is swapped on the instance.
        part.next_batch = dying_next_batch  # type: ignore[method-assign]
        return part


def test_crash_and_resume_keeps_every_trade_exactly_once(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str, tmp_path: Path
) -> None:
    settings = pipeline_settings(
        broker, empty_store, topic_prefix, STOP_AT_END=True, KAFKA_BATCH_SIZE=200
    )
    ensure_topics(broker.connection, [settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC], 3)
    trades = [r for r in read_recording(ETHUSDT_CAPTURE) if isinstance(r, TradeMessage)]
    half = len(trades) // 2
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})

    def produce(part: list[TradeMessage]) -> None:
        for trade in part:
            producer.produce(settings.KAFKA_TOPIC, key=b"ETHUSDT", value=encode_trade(trade))
        assert producer.flush(10) == 0

    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    config = RecoveryConfig(recovery)

    produce(trades[:half])
    first = CrashingSource(
        broker.connection, settings.KAFKA_TOPIC, batch_size=200, crash_after_batches=20
    )
    with pytest.raises(BytewaxRuntimeError) as crashed:
        run_main(
            build_flow(settings, broker.connection, source=first),
            epoch_interval=timedelta(milliseconds=50), recovery_config=config,
        )  # fmt: skip
    assert isinstance(crashed.value.__cause__, Crash)
    partial = fetch_bars(empty_store, "ETHUSDT")
    assert 0 < sum(bar.trade_count for bar in partial) < len(trades), "crash came too late"

    produce(trades[half:])  # written while the dataflow was down
    stats = FlowStats()
    run_main(
        build_flow(settings, broker.connection, stats=stats),
        epoch_interval=timedelta(milliseconds=50), recovery_config=config,
    )  # fmt: skip
    assert stats.trades < len(trades), "the resumed run must not start over"

    expected = reference_klines(trades)
    stored = fetch_bars(empty_store, "ETHUSDT")
    assert len(stored) == len(expected)
    for bar in stored:
        fields = expected[("ETHUSDT", bar.open_time_ms)]
        assert {name: getattr(bar, name) for name in FIELDS} == fields, bar.open_time
