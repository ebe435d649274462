"""The dataflow run as two processes (``bytewax.run -i/-a``) over one topic writes the same bars
as one process: every trade once, each bar whole, and with the embedded store every write in the
one process that owns it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from confluent_kafka import Producer

from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics, free_port
from binance_metrics.recordings import read_recording
from binance_metrics.trades import TradeMessage, encode_trade
from tests.dataflows.test_ohlcv import DATAFLOW, assert_exact_bars, environment
from tests.support.data import BTCUSDT_CAPTURE, ETHUSDT_CAPTURE


def test_two_processes_write_the_bars_of_one(
    tmp_path: Path, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topics = {"KAFKA_TOPIC": f"{topic_prefix}-trades", "KAFKA_DLQ_TOPIC": f"{topic_prefix}-dlq"}
    ensure_topics(broker.connection, topics.values(), 3)
    trades = [
        record
        for capture in (BTCUSDT_CAPTURE, ETHUSDT_CAPTURE)
        for record in read_recording(capture)
        if isinstance(record, TradeMessage)
    ]
    producer = Producer(broker.connection.client_config(**{"linger.ms": 20}))
    for trade in trades:
        producer.produce(
            topics["KAFKA_TOPIC"], key=trade.symbol.encode(), value=encode_trade(trade)
        )
    assert producer.flush(30) == 0

    env = environment(
        tmp_path, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, STOP_AT_END="true", **topics
    )
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    processes = [
        subprocess.Popen(
            [*DATAFLOW, "-i", str(index), "-a", addresses],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(2)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output

    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert_exact_bars(env, trades, symbol)
