"""Malformed frames among real ones: each lands in the DLQ with its raw payload, and every good
trade still reaches the trades topic exactly once."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binance_metrics.ingest.frames import OVERSIZED_KEEP_BYTES
from binance_metrics.ingest.tuning import IngestTuning
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.faults import Fault, Garbage
from binance_metrics.testing.market import merge_by_event_time

from .captures import real_trades
from .garbage import garbage
from .harness import (
    assert_exactly_once_in_order,
    dead_letters_of,
    read_topic,
    running_ingestor,
    settings_for,
    trades_of,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TRADES = merge_by_event_time(*(real_trades(s, 300) for s in SYMBOLS))
MAX_FRAME_BYTES = IngestTuning().max_frame_bytes


def expected_payload(raw: bytes) -> str:
    kept = raw[:OVERSIZED_KEEP_BYTES] if len(raw) > MAX_FRAME_BYTES else raw
    return kept.decode("utf-8", errors="backslashreplace")


@settings(
    max_examples=3,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(garbage(MAX_FRAME_BYTES), min_size=1, max_size=12))
def test_garbage_goes_to_the_dlq_and_good_trades_still_arrive(
    broker: EmbeddedBroker, frames: list[bytes]
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    # Spread the garbage over three points of the replay.
    thirds = [frames[i::3] for i in range(3)]
    points = zip((1, 250, 500), thirds, strict=True)
    faults = [Fault(at, Garbage(tuple(part))) for at, part in points if part]
    with LocalExchange(TRADES, faults) as exchange:
        settings_ = settings_for(exchange, prefix, SYMBOLS)
        with running_ingestor(settings_, broker.bootstrap_servers) as app:
            exchange.wait_done(30)
            trades = read_topic(broker.bootstrap_servers, settings_.KAFKA_TOPIC, len(TRADES))
            dlq = read_topic(broker.bootstrap_servers, settings_.KAFKA_DLQ_TOPIC, len(frames))
            _, health = app.health()
    assert_exactly_once_in_order(trades_of(trades), TRADES)
    letters = dead_letters_of(dlq)
    assert sorted(d.raw_payload for d in letters) == sorted(expected_payload(f) for f in frames)
    assert all(d.error and d.ingestion_time_ms > 0 for d in letters)
    assert health["dlq"] == len(frames)
