"""Reading the end of the trades topic: the highest raw trade id per symbol, on the real (Tansu)
broker, with aggregates, garbage, a bounded tail and Tansu's low high watermark."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from binance_metrics.ingest.resume import read_last_trade_ids
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics, free_port
from binance_metrics.kafka.config import KafkaConnection

from .harness import PARTITIONS

Record = tuple[bytes | None, bytes, int]  # key, value, partition


def trade(symbol: str, t: int, last: int | None = None) -> bytes:
    record: dict[str, object] = {
        "e": "trade" if last is None else "aggTrade",
        "E": 1723161255343,
        "s": symbol,
        "t": t,
        "p": "61837.63000000",
        "q": "0.02000000",
        "T": 1723161255342,
        "m": True,
    }
    if last is not None:
        record["a"] = t // 3
        record["l"] = last
    return json.dumps(record).encode()


def produce(bootstrap: str, topic: str, records: Sequence[Record], batch: bool = True) -> None:
    """``(key, value, partition)`` records; one flush at the end, or one per record."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for key, value, partition in records:
        producer.produce(topic, value, key, partition=partition)
        if not batch:
            producer.flush(10)
    assert producer.flush(10) == 0


def reported_high(bootstrap: str, topic: str, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:
        tp = TopicPartition(topic, partition)
        return int(consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1])
    finally:
        consumer.close()


@pytest.fixture
def topic(broker: EmbeddedBroker, topic_prefix: str) -> str:
    name = f"{topic_prefix}-trades"
    ensure_topics(broker.connection, [name], PARTITIONS)
    return name


def test_highest_raw_id_per_symbol_with_aggregates_and_garbage(
    broker: EmbeddedBroker, topic: str
) -> None:
    bootstrap = broker.bootstrap_servers
    btc: list[Record] = [(b"BTCUSDT", trade("BTCUSDT", t), 0) for t in range(100, 200)]
    eth: list[Record] = [  # aggregates: the raw id that counts is l, not t
        (b"ETHUSDT", trade("ETHUSDT", 500, 520), 1),
        (b"ETHUSDT", trade("ETHUSDT", 521, 560), 1),
    ]
    garbage: list[Record] = [
        (b"BTCUSDT", b"not json", 0),
        (b"BTCUSDT", b"", 0),
        (b"BTCUSDT", b'{"s": "BTCUSDT", "t": 10000}', 0),  # not a whole trade
        (b"BTCUSDT", trade("BTCUSDT", 10_001).replace(b'"61837.63000000"', b'"-1"'), 0),
        (None, b'{"rawPayload": "x", "error": "y", "ingestionTimeMs": 1}', 2),  # a dead letter
        (b"ETHUSDT", b"\xff\xfe", 1),
    ]
    late: list[Record] = [
        (b"BTCUSDT", trade("BTCUSDT", 150), 0)
    ]  # produced out of order: not the last id
    other: list[Record] = [(b"XRPUSDT", trade("XRPUSDT", 99_999), 2)]  # not subscribed
    produce(bootstrap, topic, btc + eth + other + garbage + late)

    scan = read_last_trade_ids(
        KafkaConnection(bootstrap),
        topic,
        ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
        tail_records=10_000,
        timeout_s=20,
    )

    assert scan.error is None
    assert scan.last_ids == {"BTCUSDT": 199, "ETHUSDT": 560}  # SOLUSDT: nothing to resume
    assert scan.records == len(btc + eth + garbage + late + other)
    assert scan.skipped == len(garbage)
    assert scan.partitions == PARTITIONS


def test_reads_to_the_end_past_tansus_reported_high_watermark(
    broker: EmbeddedBroker, topic: str
) -> None:
    bootstrap = broker.bootstrap_servers
    count = 3000
    produce(bootstrap, topic, [(b"BTCUSDT", trade("BTCUSDT", t), 0) for t in range(count)])
    # The premise (docs/architecture.md, Kafka): Tansu reports the start of the last batch + 1.
    assert reported_high(bootstrap, topic, 0) < count - 10

    scan = read_last_trade_ids(
        KafkaConnection(bootstrap), topic, ["BTCUSDT"], tail_records=10, timeout_s=20
    )

    assert scan.error is None and scan.last_ids == {"BTCUSDT": count - 1}


def test_reads_only_the_last_records_of_each_partition(broker: EmbeddedBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers
    # Far back in the partition, a record with a higher id: beyond the bound, it is not read.
    early: list[Record] = [(b"BTCUSDT", trade("BTCUSDT", 1_000_000), 0)]
    tail: list[Record] = [(b"BTCUSDT", trade("BTCUSDT", t), 0) for t in range(30)]
    produce(bootstrap, topic, early + tail, batch=False)  # one batch per record: exact marks

    scan = read_last_trade_ids(
        KafkaConnection(bootstrap), topic, ["BTCUSDT"], tail_records=10, timeout_s=20
    )

    assert scan.error is None and scan.last_ids == {"BTCUSDT": 29}
    assert scan.records == 10


def test_a_new_empty_or_missing_topic_resumes_nothing(broker: EmbeddedBroker, topic: str) -> None:
    bootstrap = broker.bootstrap_servers
    for name in (topic, f"{topic}-missing"):
        scan = read_last_trade_ids(
            KafkaConnection(bootstrap), name, ["BTCUSDT"], tail_records=10_000, timeout_s=20
        )
        assert scan.error is None and scan.last_ids == {} and scan.records == 0


def test_an_unreachable_broker_gives_up_within_the_timeout() -> None:
    began = time.monotonic()
    scan = read_last_trade_ids(
        KafkaConnection(f"127.0.0.1:{free_port()}"),
        "x",
        ["BTCUSDT"],
        tail_records=10_000,
        timeout_s=1.0,
    )
    assert scan.error is not None and scan.last_ids == {}
    assert time.monotonic() - began < 5
