"""No gaps at the tail: trades missed just before a market goes quiet reach Kafka without a later
trade to reveal them (local exchange -> real ingestor -> real Tansu)."""

from __future__ import annotations

import time

from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.testing.exchange import Bursts, LocalExchange
from binance_metrics.testing.faults import Cut, Fault, Refuse
from binance_metrics.testing.market import merge_by_event_time

from .captures import real_trades
from .harness import (
    assert_exactly_once_in_order,
    read_topic,
    running_ingestor,
    settings_for,
    trades_of,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
#: Tail checks every half second for symbols quiet for a second: the test's "within a minute".
TAIL = {"tail_check_s": 0.5, "quiet_after_s": 1.0}


def test_outages_then_a_quiet_market_every_missed_trade_arrives(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    trades = merge_by_event_time(*(real_trades(s, 1500) for s in SYMBOLS))
    total = len(trades)
    # Two outages: a TCP abort, then a 1001 close with refused handshakes, the second one
    # holding the last 1000 trades of the market: after it, nothing trades any more.
    faults = [
        Fault(800, Cut(close_frame=False)),
        Fault(total - 1000, Cut(close_frame=True)),
        Fault(total - 1000, Refuse(5)),
    ]
    with LocalExchange(
        trades, faults, advance_when_idle=True, tail_guard=0, pace=Bursts(frames=20, pause_s=0.004)
    ) as exchange:
        settings = settings_for(exchange, topic_prefix, SYMBOLS, **TAIL)
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            exchange.wait_done(60)
            ended = time.monotonic()
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, total, 60)
            arrived = time.monotonic() - ended
            tail_gaps = app.ingestor.tail.tail_gaps if app.ingestor.tail else 0
            ticker_calls = list(exchange.log.ticker_calls)
    got = trades_of(records)
    assert len(got) == total, (
        f"{total - len(got)} of {total} trades missing {arrived:.0f} s after the market ended"
    )
    assert_exactly_once_in_order(got, trades)
    unseen = {(t.symbol, t.id) for t in trades} - {
        (t.symbol, t.trade_id) for t in got if not t.backfilled
    }
    assert unseen, "the outage must have cost trades that only REST could deliver"
    assert {(t.symbol, t.trade_id) for t in got if t.backfilled} == unseen
    assert tail_gaps >= 1, "the last outage's trades had no later trade: a tail check found them"
    assert ticker_calls and all(len(symbols) <= 20 for _, symbols in ticker_calls)


def test_tail_checks_can_be_turned_off(broker: EmbeddedBroker, topic_prefix: str) -> None:
    trades = real_trades("BTCUSDT", 600)
    faults = [Fault(300, Cut(close_frame=False)), Fault(300, Refuse(3))]
    with LocalExchange(trades, faults, advance_when_idle=True, tail_guard=0) as exchange:
        settings = settings_for(exchange, topic_prefix, ("BTCUSDT",), tail_check_s=0)
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            exchange.wait_done(60)
            assert app.ingestor.tail is not None and not app.ingestor.tail.enabled
        assert exchange.log.ticker_calls == []
