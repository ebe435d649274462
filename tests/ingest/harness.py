"""Run the real ingestor app under uvicorn against the local exchange, and read Kafka back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import uvicorn
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from binance_metrics.heartbeats import decode_heartbeat
from binance_metrics.ingest.app import create_app
from binance_metrics.ingest.service import Ingestor
from binance_metrics.kafka.broker import ensure_topics, free_port
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.reconcile.continuous import ContinuousReconciler
from binance_metrics.settings import Settings
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.market import MarketTrade
from binance_metrics.trades import DeadLetter, TradeMessage

PARTITIONS = 3

#: Tuning (``INGEST``) with short delays, so faults resolve in a fraction of a second.
FAST: dict[str, object] = {
    "silence_timeout_s": 0.4,
    "switch_timeout_s": 1.0,
    "healthy_after_s": 0.5,
    "backfill_grace_s": 0.05,
    "backfill_retry_base_s": 0.05,
    "kafka_stall_s": 0.5,
    "ping_interval_s": 0,  # the exchange pings us; our own keepalive is not under test
    "max_trade_time_skew_s": 0,  # the captures keep their 2024 times (tests/ingest/test_frames.py)
}


def settings_for(
    exchange: LocalExchange, prefix: str, symbols: tuple[str, ...], **tuning: object
) -> Settings:
    """Settings on ``exchange`` (and its market) with topics of their own, FAST tuning with
    ``tuning`` over it."""
    return Settings(
        MARKET=exchange.market.market,
        KAFKA_TOPIC=f"{prefix}-trades",
        KAFKA_DLQ_TOPIC=f"{prefix}-dlq",
        KAFKA_PARTITIONS=PARTITIONS,
        SYMBOLS=symbols,
        BINANCE_WS_URL=exchange.ws_url,
        BINANCE_REST_URL=exchange.rest_url,
        RECONNECT_DELAY_S=0.05,
        MAX_RECONNECT_DELAY_S=0.4,
        HEALTH_HOST="127.0.0.1",
        HEALTH_PORT=free_port(),
        LOG_LEVEL="WARNING",
        INGEST={**FAST, **tuning},
    )


@dataclass
class Running:
    url: str
    ingestor: Ingestor
    http: httpx.Client

    def health(self) -> tuple[int, dict[str, Any]]:
        response = self.http.get(f"{self.url}/health")
        return response.status_code, response.json()

    def metrics(self) -> str:
        response = self.http.get(f"{self.url}/metrics")
        assert response.status_code == 200
        return response.text


@contextmanager
def running_ingestor(
    settings: Settings, bootstrap: str, reconciler: ContinuousReconciler | None = None
) -> Iterator[Running]:
    """The app under a real uvicorn on HEALTH_PORT, in a thread; stopped (and flushed) on exit."""
    kafka = KafkaConnection(bootstrap)
    ensure_topics(kafka, [settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC], PARTITIONS)
    app = create_app(settings, kafka, reconciler=reconciler)
    config = uvicorn.Config(
        app,
        host=settings.HEALTH_HOST,
        port=settings.HEALTH_PORT,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "uvicorn did not start")
    url = f"http://{settings.HEALTH_HOST}:{settings.HEALTH_PORT}"
    try:
        with httpx.Client(timeout=10) as client:
            yield Running(url, app.state.ingestor, client)
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "uvicorn did not stop within 30 s"


def wait_until(predicate: Callable[[], object], timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{message} (waited {timeout_s} s)")


def read_topic(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 30.0,
    settle_s: float = 0.5,
    heartbeats: bool = False,
) -> list[tuple[int, bytes | None, bytes]]:
    """All records of ``topic`` as (partition, key, value), in offset order per partition;
    the ingestor's heartbeats only with ``heartbeats``.

    Reads until ``expected`` records arrived and then ``settle_s`` more (to catch extras such as
    duplicates), or until the timeout. Partitions are assigned directly (no group join on Tansu).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    records: list[tuple[int, bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if settle_until is None and len(records) >= expected:
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() > settle_until:
                break
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {error}")
            partition = msg.partition()
            assert partition is not None  # a record, not an error, has one
            if not heartbeats and decode_heartbeat(msg.value() or b"") is not None:
                continue  # tests/live checks the heartbeats
            records.append((partition, msg.key(), msg.value() or b""))
    finally:
        consumer.close()
    return records


def trades_of(records: list[tuple[int, bytes | None, bytes]]) -> list[TradeMessage]:
    decoder = msgspec.json.Decoder(TradeMessage)
    trades = []
    for _, key, value in records:
        trade = decoder.decode(value)
        assert key == trade.symbol.encode(), f"key {key!r} is not the symbol of {trade}"
        trades.append(trade)
    return trades


def dead_letters_of(records: list[tuple[int, bytes | None, bytes]]) -> list[DeadLetter]:
    return [msgspec.json.decode(value, type=DeadLetter) for _, _, value in records]


def assert_exactly_once_in_order(trades: list[TradeMessage], expected: list[MarketTrade]) -> None:
    """Every expected trade once, nothing else, each symbol in trade-id order, fields intact."""
    by_symbol: dict[str, list[int]] = {}
    for trade in trades:
        by_symbol.setdefault(trade.symbol, []).append(trade.trade_id)
    want: dict[str, list[int]] = {}
    for captured in expected:
        want.setdefault(captured.symbol, []).append(captured.id)
    for symbol in sorted(set(want) | set(by_symbol)):
        got, ids = by_symbol.get(symbol, []), want.get(symbol, [])
        missing = sorted(set(ids) - set(got))
        extra = sorted(set(got) - set(ids))
        dupes = len(got) - len(set(got))
        assert not missing and not extra and not dupes, (
            f"{symbol}: {len(got)} trades in Kafka, {len(ids)} expected; "
            f"{len(missing)} missing (first {missing[:5]}), {len(extra)} unexpected "
            f"(first {extra[:5]}), {dupes} duplicates"
        )
        assert got == ids, f"{symbol}: trades are not in trade-id order"
    captured_by_id = {(c.symbol, c.id): c.data for c in expected}
    for trade in trades:
        data = captured_by_id[(trade.symbol, trade.trade_id)]
        assert (trade.price, trade.quantity, trade.trade_time_ms, trade.buyer_is_maker) == (
            data["p"],
            data["q"],
            data["T"],
            data["m"],
        )
        assert trade.ingestion_time_ms > 0
        if not trade.backfilled:
            assert (
                trade.event_time_ms == data["E"]
                and trade.latency_ms == trade.ingestion_time_ms - trade.event_time_ms
            )
