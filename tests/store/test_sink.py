"""An outage of ClickHouse delays bars, never drops them: the sink retries until the store is
back. The outage is real: the table is detached from the running engine, then attached again."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from bytewax.testing import run_main
from confluent_kafka import Producer

from binance_metrics.dataflow import FlowStats, build_flow
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics
from binance_metrics.recordings import read_recording
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars
from binance_metrics.trades import TradeMessage, encode_trade
from tests.support.data import BTCUSDT_CAPTURE
from tests.support.oracle import FIELDS, reference_klines
from tests.support.pipeline import pipeline_settings


def test_bars_wait_for_the_store_and_arrive_complete(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = pipeline_settings(broker, empty_store, topic_prefix, STOP_AT_END=True)
    ensure_topics(broker.connection, [settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC], 3)
    trades = [r for r in read_recording(BTCUSDT_CAPTURE) if isinstance(r, TradeMessage)][:5000]
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for trade in trades:
        producer.produce(settings.KAFKA_TOPIC, key=b"BTCUSDT", value=encode_trade(trade))
    assert producer.flush(10) == 0

    empty_store.command("DETACH TABLE binance.ohlcv")  # the store is down
    stats = FlowStats()
    caplog.set_level(logging.WARNING, logger="binance_metrics.store.sink")
    flow = threading.Thread(
        target=run_main, args=(build_flow(settings, broker.connection, stats=stats),)
    )
    flow.start()
    try:
        deadline = time.monotonic() + 30
        while not any("failed" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the sink never tried to write"
            time.sleep(0.1)
        time.sleep(1.5)  # a few retries while down
        assert flow.is_alive(), "the dataflow gave up instead of waiting for the store"
        assert stats.bars_written == 0
    finally:
        empty_store.command("ATTACH TABLE binance.ohlcv")  # the store is back
    flow.join(60)
    assert not flow.is_alive()

    expected = reference_klines(trades)
    stored = fetch_bars(empty_store, "BTCUSDT")
    assert len(stored) == len(expected)
    for bar in stored:
        assert {n: getattr(bar, n) for n in FIELDS} == expected[("BTCUSDT", bar.open_time_ms)]
