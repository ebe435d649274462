"""Settings and Kafka reads for tests that run the pipeline on the session's broker and store."""

from __future__ import annotations

import threading

from bytewax.testing import run_main
from confluent_kafka import Consumer, TopicPartition

from binance_metrics.dataflow import build_flow
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.kafka.source import RawKafkaSource
from binance_metrics.settings import Settings, load_settings
from binance_metrics.store.clickhouse import Store


def pipeline_settings(
    broker: EmbeddedBroker, store: Store, prefix: str, **overrides: object
) -> Settings:
    """Settings on ``broker`` and ``store``, with topics of their own (``prefix``)."""
    return load_settings(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        KAFKA_TOPIC=f"{prefix}-trades",
        KAFKA_DLQ_TOPIC=f"{prefix}-dlq",
        CLICKHOUSE_URL=store.dsn,
        **overrides,
    )


def read_to_end(broker: EmbeddedBroker, topic: str, partitions: int = 3) -> list[bytes]:
    """Every record value of ``topic``, read to the end of each partition (partition EOF)."""
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": "read-topic",
         "enable.partition.eof": True}
    )  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[bytes] = []
    ended: set[int | None] = set()
    while len(ended) < partitions:
        msg = consumer.poll(10)
        assert msg is not None, f"{topic} did not reach its end in 10 s"
        if msg.error():
            ended.add(msg.partition())
        else:
            values.append(msg.value() or b"")
    consumer.close()
    return values


class LiveDataflow:
    """The dataflow in a thread, following ``settings.KAFKA_TOPIC`` as it grows until
    :meth:`finish`, which lets it read to the end and waits for it."""

    def __init__(self, settings: Settings, broker: EmbeddedBroker) -> None:
        self._stop = threading.Event()
        source = RawKafkaSource(broker.connection, settings.KAFKA_TOPIC, stop=self._stop)
        flow = build_flow(settings, broker.connection, source=source)
        self._thread = threading.Thread(target=run_main, args=(flow,))
        self._thread.start()

    def finish(self) -> None:
        self._stop.set()
        self._thread.join(120)
        assert not self._thread.is_alive(), "the dataflow did not stop"
