"""Settings and Kafka reads for tests that run the pipeline on the session's broker and store."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from binance_metrics.kafka.broker import EmbeddedBroker
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
