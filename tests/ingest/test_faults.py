"""End to end: fake exchange -> real ingestor under uvicorn -> real Kafka (Tansu).

Every test replays real captured trades and checks that each one reaches Kafka exactly once, in
per-symbol trade-id order, whatever the exchange does in between.
"""

from __future__ import annotations

from binance_metrics.kafka.broker import EmbeddedBroker

from .exchange import Cut, Fault, FakeExchange, load_capture, merge_by_event_time
from .harness import (
    assert_exactly_once_in_order,
    read_topic,
    running_ingestor,
    settings_for,
    trades_of,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
N = 2000


def capture(n: int = N) -> list:
    return merge_by_event_time(*(load_capture(s, n) for s in SYMBOLS))


def test_clean_replay_and_pings(broker: EmbeddedBroker, topic_prefix: str) -> None:
    trades = capture()
    with FakeExchange(trades, [Fault(1000, Cut())]) as exchange:
        settings = settings_for(exchange, topic_prefix, SYMBOLS)
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            exchange.wait_done(30)
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(trades))
    assert_exactly_once_in_order(trades_of(records), trades)
