"""``serve`` as the CLI runs it: a separate process under uvicorn; Ctrl-C (SIGINT) stops it
cleanly, after flushing every received trade to Kafka."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics
from binance_metrics.testing.exchange import LocalExchange

from .captures import real_trades
from .harness import PARTITIONS, read_topic, settings_for, trades_of, wait_until

SERVE = (
    "from binance_metrics.ingest.app import serve; from binance_metrics.settings import "
    "load_settings; import sys; from binance_metrics.kafka.config import KafkaConnection; "
    "serve(load_settings(), KafkaConnection(sys.argv[1]))"
)


def test_serve_runs_until_sigint_and_flushes(broker: EmbeddedBroker, topic_prefix: str) -> None:
    trades = real_trades("BTCUSDT", 1000)
    with LocalExchange(trades) as exchange:
        settings = settings_for(exchange, topic_prefix, ("BTCUSDT",))
        ensure_topics(broker.connection, [settings.KAFKA_TOPIC], PARTITIONS)
        env = {
            **os.environ,
            **{
                name: str(getattr(settings, name))
                for name in (
                    "KAFKA_TOPIC",
                    "KAFKA_DLQ_TOPIC",
                    "BINANCE_WS_URL",
                    "BINANCE_REST_URL",
                    "RECONNECT_DELAY_S",
                    "MAX_RECONNECT_DELAY_S",
                    "HEALTH_HOST",
                    "HEALTH_PORT",
                )
            },
            "SYMBOLS": "BTCUSDT",
            "LOG_LEVEL": "WARNING",
            "INGEST__MAX_TRADE_TIME_SKEW_S": "0",  # the capture keeps its 2024 times
        }
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, broker.bootstrap_servers], env=env, cwd="/"
        )
        try:
            url = f"http://{settings.HEALTH_HOST}:{settings.HEALTH_PORT}/health"

            def healthy() -> bool:
                try:
                    return httpx.get(url, timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(healthy, 30, "the served ingestor never reported healthy")
            exchange.wait_done(30)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0, "serve did not exit cleanly on SIGINT"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(trades))
    assert [t.trade_id for t in trades_of(records)] == [c.id for c in trades]
