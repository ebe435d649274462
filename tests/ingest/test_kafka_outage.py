"""Kafka goes away and comes back: the ingestor buffers (bounded), reports degraded health and
loses nothing; and the producer counts and retries failed deliveries."""

from __future__ import annotations

import time
import uuid

from binance_metrics.kafka.broker import ensure_topics
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.producer import KafkaProducer
from binance_metrics.testing.exchange import Bursts, LocalExchange
from binance_metrics.testing.market import merge_by_event_time

from .captures import real_trades
from .harness import (
    PARTITIONS,
    assert_exactly_once_in_order,
    read_topic,
    running_ingestor,
    settings_for,
    trades_of,
    wait_until,
)
from .kafka_proxy import proxied_broker

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def test_broker_outage_degrades_health_and_loses_nothing() -> None:
    trades = merge_by_event_time(*(real_trades(s, 2000) for s in SYMBOLS))
    with (
        proxied_broker() as (bootstrap, proxy),
        LocalExchange(trades, pace=Bursts(frames=10, pause_s=0.005)) as exchange,
    ):
        settings = settings_for(
            exchange,
            f"t{uuid.uuid4().hex[:10]}",
            SYMBOLS,
            # Small bounds so the outage fills librdkafka's queue and our overflow, and pauses
            # reading.
            max_buffered_messages=200,
            overflow_soft_limit=300,
            kafka_stall_s=0.3,
            silence_timeout_s=5.0,
        )
        with running_ingestor(settings, bootstrap) as app:
            wait_until(lambda: app.health()[0] == 200, 20, "/health not 200 before the outage")
            wait_until(lambda: app.health()[1]["produced"] > 300, 20, "nothing acked at start")
            proxy.pause()
            wait_until(
                lambda: app.health()[0] == 503, 20, "/health stayed 200 while Kafka was down"
            )
            _, during = app.health()
            assert during["status"] == "degraded"
            assert any(p.startswith("kafka") for p in during["problems"]), during["problems"]
            produced_during = during["produced"]
            time.sleep(0.5)  # stay down a moment: more trades arrive and must be held
            proxy.resume()
            exchange.wait_done(60)
            records = read_topic(bootstrap, settings.KAFKA_TOPIC, len(trades), timeout_s=60)
            wait_until(lambda: app.health()[0] == 200, 20, "/health not 200 after the outage")
            _, after = app.health()
    assert_exactly_once_in_order(trades_of(records), trades)
    assert produced_during < len(trades) == after["produced"]
    assert after["kafka"]["lost"] == 0


def test_failed_deliveries_are_counted_and_produced_again() -> None:
    with proxied_broker() as (bootstrap, proxy):
        topic = f"t{uuid.uuid4().hex[:10]}"
        ensure_topics(KafkaConnection(bootstrap), [topic], PARTITIONS)
        errors: list[str] = []
        # A short delivery timeout (production uses infinite) makes an outage fail deliveries.
        producer = KafkaProducer(
            KafkaConnection(bootstrap),
            max_buffered_messages=1000,
            overflow_soft_limit=1000,
            max_redeliveries=3,
            stall_after_s=10.0,
            on_error=lambda topic, err: errors.append(str(err)),
            config={"message.timeout.ms": 1000, "enable.idempotence": False},
        ).start()
        try:
            producer.produce(topic, b"warm-up", b"k")
            wait_until(lambda: producer.acked == 1, 20, "warm-up message not acked")
            proxy.pause()
            values = [f"m{i}".encode() for i in range(50)]
            for value in values:
                producer.produce(topic, value, b"k")
            wait_until(lambda: producer.delivery_errors > 0, 20, "no delivery failed")
            proxy.resume()
            wait_until(lambda: producer.acked >= 51, 30, "failed deliveries were not retried")
        finally:
            left = producer.close(10)
        assert left == 0 and producer.lost == 0 and errors
        records = read_topic(bootstrap, topic, 51)
        assert {value for _, _, value in records} >= set(values)
