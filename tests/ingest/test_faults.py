"""End to end: local exchange -> real ingestor under uvicorn -> real Kafka (Tansu).

Every test replays real captured trades and checks that each one reaches Kafka exactly once, in
per-symbol trade-id order, whatever the exchange does in between. No assertion is about speed;
the few about time are lower bounds the client must respect (backoff, Retry-After).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import threading
from typing import Any

from binance_metrics.ingest.service import Ingestor
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.testing.exchange import Bursts, LocalExchange
from binance_metrics.testing.faults import Cut, Drop, Fault, Refuse, Shutdown, Silence
from binance_metrics.testing.market import MarketTrade, merge_by_event_time
from binance_metrics.trades import TradeMessage

from .captures import real_trades
from .harness import (
    assert_exactly_once_in_order,
    read_topic,
    running_ingestor,
    settings_for,
    trades_of,
    wait_until,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
N = 2000  # trades per symbol: enough for several faults, small enough to stay quick
#: A slower market, for tests where trades keep happening while the client is away.
PACED = Bursts(frames=10, pause_s=0.005)


def capture(n: int | None = N) -> list[MarketTrade]:
    return merge_by_event_time(*(real_trades(s, n) for s in SYMBOLS))


@dataclasses.dataclass
class Outcome:
    ingestor: Ingestor
    final_health: tuple[int, dict[str, Any]]
    final_metrics: str


def run(
    broker: EmbeddedBroker, prefix: str, exchange: LocalExchange, **tuning: object
) -> tuple[list[TradeMessage], Outcome]:
    """Replay the whole capture through a running ingestor; return what Kafka holds."""
    settings = settings_for(exchange, prefix, SYMBOLS, **tuning)
    with running_ingestor(settings, broker.bootstrap_servers) as app:
        exchange.wait_done(60)
        records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(exchange.trades))
        outcome = Outcome(app.ingestor, app.health(), app.metrics())
    return trades_of(records), outcome


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if labels else "") + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_cuts_with_and_without_close_frame_and_pings(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    trades = capture(None)  # the whole capture: 34,419 trades
    faults = [
        Fault(5_000, Cut(close_frame=True)),
        Fault(12_000, Cut(close_frame=False)),
        Fault(20_000, Cut(close_frame=True)),
        Fault(28_000, Cut(close_frame=False)),
    ]
    with LocalExchange(trades, faults) as exchange:
        got, app = run(broker, topic_prefix, exchange)
    assert_exactly_once_in_order(got, trades)
    sessions = exchange.log.sessions
    assert len(sessions) >= 5, "every cut must be followed by a new connection"
    # websockets answers pings by itself: every session that lived long enough got pongs back.
    assert sum(s.pongs for s in sessions) > 0, "no pong ever answered the exchange's pings"
    assert not any(s.ping_timeouts for s in sessions), "a ping went unanswered"
    assert metric(app.final_metrics, "binance_ws_reconnects_total", reason="closed") >= 4
    assert not any(t.backfilled for t in got), "no trade was dropped, nothing to backfill"


def test_dropped_run_before_cut_is_backfilled_honouring_retry_after(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    trades = capture()
    faults = [
        Fault(1000, Drop(300)),
        Fault(1300, Cut(close_frame=False)),
        Fault(2500, Drop(1000)),
        Fault(3600, Cut()),
    ]
    # The first REST call is rate limited (429, Retry-After 1 s), the second banned (418).
    with LocalExchange(trades, faults, rest_errors=[(429, 1.0), (418, 0.2)]) as exchange:
        got, app = run(broker, topic_prefix, exchange)
    assert_exactly_once_in_order(got, trades)
    dropped = {(t.symbol, t.id) for t in exchange.log.dropped}
    assert len(dropped) == 1300
    assert {(t.symbol, t.trade_id) for t in got if t.backfilled} == dropped, (
        "backfill must fill the gap only"
    )
    calls = exchange.log.rest_calls
    assert [c.status for c in calls[:2]] == [429, 418]
    assert calls[1].time - calls[0].time >= 1.0 * 0.99, "Retry-After: 1 was not honoured"
    assert calls[2].time - calls[1].time >= 0.2 * 0.99, "Retry-After: 0.2 was not honoured"
    assert all(c.limit <= 1000 for c in calls)
    _, health = app.final_health
    assert sum(s["backfilled"] for s in health["symbols"].values()) == 1300
    assert sum(s["gaps"] for s in health["symbols"].values()) >= 2
    text = app.final_metrics
    assert sum(metric(text, "binance_backfilled_trades_total", symbol=s) for s in SYMBOLS) == 1300
    assert sum(metric(text, "binance_trade_gaps_total", symbol=s) for s in SYMBOLS) >= 2
    assert sum(metric(text, "binance_unfilled_trades_total", symbol=s) for s in SYMBOLS) == 0


def test_silent_connection_is_replaced_and_missed_trades_backfilled(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    trades = capture()
    faults = [Fault(1000, Silence()), Fault(2500, Silence())]
    with LocalExchange(trades, faults, advance_when_idle=True, pace=PACED) as exchange:
        got, app = run(broker, topic_prefix, exchange)
    assert_exactly_once_in_order(got, trades)
    assert metric(app.final_metrics, "binance_ws_reconnects_total", reason="silent") >= 2
    # Trades kept happening while the client listened to a dead connection: REST filled them.
    assert any(t.backfilled for t in got), "silence should have cost trades that REST refills"


def test_server_shutdown_switches_make_before_break(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    trades = capture()
    faults = [Fault(800, Shutdown(grace_s=0.3)), Fault(2500, Shutdown(grace_s=0.3))]
    with LocalExchange(trades, faults, advance_when_idle=True, pace=PACED) as exchange:
        got, app = run(broker, topic_prefix, exchange)
    assert_exactly_once_in_order(got, trades)
    assert exchange.log.shutdowns_sent == 2
    # The market never paused, yet nothing was missed: the replacement was open in time.
    assert exchange.log.rest_calls == [], "a gap appeared: the switch was break-before-make"
    assert not any(t.backfilled for t in got)
    text = app.final_metrics
    assert metric(text, "binance_ws_reconnects_total", reason="serverShutdown") == 2
    assert metric(text, "binance_ws_control_messages_total", kind="serverShutdown") == 2
    # Whether both connections carried the same trades for a moment depends on how fast the
    # new one subscribed: duplicates, if any, were dropped (exactly once, above).


def test_connections_rotate_before_the_24h_cut(broker: EmbeddedBroker, topic_prefix: str) -> None:
    trades = capture()
    with LocalExchange(trades, advance_when_idle=True, pace=PACED) as exchange:
        got, app = run(broker, topic_prefix, exchange, max_connection_age_s=0.3)
    assert_exactly_once_in_order(got, trades)
    assert exchange.log.rest_calls == [], "rotation lost trades"
    assert metric(app.final_metrics, "binance_ws_reconnects_total", reason="rotate") >= 2


def test_refused_connections_back_off_exponentially(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    trades = capture(1000)
    faults = [Fault(500, Refuse(5)), Fault(500, Cut())]
    with LocalExchange(trades, faults) as exchange:
        got, app = run(broker, topic_prefix, exchange)
    assert_exactly_once_in_order(got, trades)
    refused = [t for t, outcome in exchange.log.handshakes if outcome == "refused"]
    assert len(refused) == 5
    shard = app.ingestor.shards[0]
    assert shard.connect_failures == 5
    # After the cut: one sleep, then one per refusal, each within [c/2, c] of its ceiling.
    delays = list(shard.delays)[:6]
    ceilings = [min(0.4, 0.05 * 2**i) for i in range(6)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling, (delays, ceilings)
    # The exchange saw the attempts no closer together than the client's sleeps.
    for (earlier, later), delay in zip(itertools.pairwise(refused), delays[1:], strict=False):
        assert later - earlier >= delay * 0.99


def test_health_and_metrics_over_http(broker: EmbeddedBroker, topic_prefix: str) -> None:
    trades = capture(500)
    # Gap of 20 trades, then the exchange cuts and refuses 10 handshakes (about 3 s of backoff).
    faults = [Fault(300, Drop(20)), Fault(320, Refuse(10)), Fault(320, Cut())]
    market = threading.Event()
    with LocalExchange(trades, faults, start_gate=market) as exchange:
        settings = settings_for(exchange, topic_prefix, SYMBOLS)
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            wait_until(lambda: app.health()[0] == 200, 20, "/health never became 200")
            _, body = app.health()
            assert {"status", "produced", "dlq", "wsConnected"} <= set(body)
            assert body["status"] == "ok" and body["wsConnected"] is True
            assert set(body["symbols"]) == set(SYMBOLS)
            assert metric(app.metrics(), "binance_ws_connected", connection="0") == 1
            market.set()
            wait_until(lambda: app.health()[0] == 503, 20, "/health stayed 200 while cut off")
            _, body = app.health()
            assert body["status"] == "degraded" and body["wsConnected"] is False
            # The reason follows once a reconnect attempt failed ("...: cannot reach ...").
            assert any(p.startswith("connection 0 is not connected") for p in body["problems"])
            wait_until(lambda: app.health()[0] == 200, 20, "/health not 200 after reconnecting")
            exchange.wait_done(30)
            read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(trades))
            wait_until(
                lambda: app.health()[1]["produced"] == len(trades),
                20,
                "/health never counted every trade",
            )
            _, body = app.health()
            assert body["dlq"] == 0 and body["reconnects"] >= 1
            for symbol in SYMBOLS:
                info = body["symbols"][symbol]
                assert info["produced"] == 500 and info["lastTradeAgeS"] is not None
            assert sum(s["backfilled"] for s in body["symbols"].values()) == 20
            text = app.metrics()
    for symbol in SYMBOLS:
        assert metric(text, "binance_trades_produced_total", symbol=symbol) == 500
        assert metric(text, "binance_last_trade_age_seconds", symbol=symbol) >= 0
    assert metric(text, "binance_trade_latency_seconds_count") >= len(trades) - 20
    assert metric(text, "kafka_produce_ack_seconds_count") >= len(trades)
    assert "binance_ws_connected{" in text
    assert metric(text, "kafka_delivery_errors_total", topic=settings.KAFKA_TOPIC) == 0
