"""Each symbol's feed state in ``/health`` (``"feeds"``), from a real ingestor on the local
exchange: backfilling while trades wait behind a gap, connected, then, cut off and refused,
reconnecting and unreachable with the reason."""

from __future__ import annotations

import threading
from typing import Any

from binance_metrics.ingest.health import UNREACHABLE_AFTER
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.faults import Cut, Drop, Fault, Hold, Refuse

from .captures import real_trades
from .harness import Running, running_ingestor, settings_for, wait_until


def feed(app: Running) -> dict[str, Any]:
    state: dict[str, Any] = app.health()[1]["feeds"]["BTCUSDT"]
    return state


def test_feed_states_follow_the_connection(broker: EmbeddedBroker, topic_prefix: str) -> None:
    trades = real_trades("BTCUSDT", 600)
    release, reached = threading.Event(), threading.Event()
    faults = [
        Fault(200, Drop(20)),  # a gap: the trades after it wait for REST
        Fault(300, Hold(release, reached)),
        Fault(400, Cut()),
        Fault(400, Refuse(10_000)),
    ]
    # REST answers 429 three times (Retry-After 1 s): the gap stays open for a while.
    with LocalExchange(trades, faults, rest_errors=[(429, 1.0)] * 3) as exchange:
        settings = settings_for(exchange, topic_prefix, ("BTCUSDT",), silence_timeout_s=60)
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            wait_until(reached.is_set, 30, "the market never reached the hold")
            wait_until(lambda: feed(app)["state"] == "backfilling", 30, "no backfilling state")
            assert feed(app)["reason"].endswith("trades wait for missed ones from REST")
            wait_until(lambda: feed(app) == {"state": "connected", "reason": None}, 30, "filled")
            release.set()
            wait_until(lambda: feed(app)["state"] != "connected", 30, "still connected")
            wait_until(lambda: feed(app)["state"] == "unreachable", 30, "never unreachable")
            shard = app.ingestor.shards[0]
            assert shard.failures_in_row >= UNREACHABLE_AFTER
            assert feed(app)["reason"] == (
                f"cannot reach 127.0.0.1:{exchange.port}: the handshake was answered with HTTP 503"
            )
