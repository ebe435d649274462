"""The whole market: ``SYMBOLS=ALL`` over several connections, a listing and a delisting live.

Local exchange (2,101 synthetic symbols, exchangeInfo, SUBSCRIBE, Binance's message-rate limit
enforced) -> real ingestor under uvicorn -> real Kafka (Tansu).
"""

from __future__ import annotations

from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.faults import Delisting, Fault, Listing
from binance_metrics.testing.market import synthetic_market

from .harness import (
    assert_exactly_once_in_order,
    read_topic,
    running_ingestor,
    settings_for,
    trades_of,
    wait_until,
)

#: More than two connections' worth at Binance's 1024 streams per connection.
MARKET = tuple(f"S{n:04d}USDT" for n in range(2100))
LISTED, DELISTED = "NEWUSDT", "OLDUSDT"


def test_all_symbols_over_several_connections_with_a_listing_and_a_delisting(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    before = synthetic_market((*MARKET, DELISTED), 2)
    after = synthetic_market(
        (*MARKET, LISTED), 1, start_ms=before[-1].trade_time + 1, first_round=2
    )
    # The new symbol trades only after its listing: the market waits for a listener to its
    # stream, that is until the ingestor, reading exchangeInfo again, has subscribed it.
    trades = [*before, *after]
    faults = [Fault(len(before), Listing(LISTED)), Fault(len(before), Delisting(DELISTED))]
    with LocalExchange(
        trades,
        faults,
        unlisted=(LISTED,),
        ping_interval_s=1.0,  # the exchange's pings: one pong a second counts against the rate
        message_rate_limit=5,
    ) as exchange:
        settings = settings_for(
            exchange, topic_prefix, ("ALL",), symbols_refresh_s=0.3, silence_timeout_s=30
        )
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            exchange.wait_done(120)
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(trades), 60)
            wait_until(
                lambda: stream(DELISTED) not in exchange.subscribed(),
                30,
                f"{DELISTED} was not unsubscribed",
            )
            subscribed = exchange.subscribed()
            _, health = app.health()
    assert_exactly_once_in_order(trades_of(records), trades)
    assert subscribed == {stream(s) for s in (*MARKET, LISTED)}
    assert len(health["connections"]) == 3 and all(c["connected"] for c in health["connections"])
    assert sorted(c["streams"] for c in health["connections"]) == [53, 1024, 1024]
    log = exchange.log
    assert log.rate_disconnects == 0 and log.refused_subscriptions == 0
    assert max(s.max_messages_per_s for s in log.sessions) <= 5
    assert all(s.requests >= 1 for s in log.sessions), "streams come by SUBSCRIBE"
    # The URL names no streams: 2,100 of them would make a 30 KB URL (a 414 from servers).
    assert all(
        s.ws.request is not None and "streams=" not in s.ws.request.path for s in log.sessions
    )
    outcomes = [outcome for _, outcome in log.handshakes]
    assert len(outcomes) >= 3 and set(outcomes) == {"ok"}, "no handshake refused (414)"
    assert log.exchange_info_calls >= 2


def stream(symbol: str) -> str:
    return f"{symbol.lower()}@trade"


def test_listings_open_a_connection_when_the_shards_are_full_and_an_empty_one_closes(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """Two streams per connection: A, B | C at the start; D and E listed (D fills the second
    connection, E opens a third), A and B delisted (the first closes)."""
    first = synthetic_market(("AUSDT", "BUSDT", "CUSDT"), 2)
    start = first[-1].trade_time + 1
    then = synthetic_market(("CUSDT", "DUSDT", "EUSDT"), 2, start_ms=start, first_round=2)
    faults = [
        Fault(len(first), Listing("DUSDT")),
        Fault(len(first), Listing("EUSDT")),
        Fault(len(first), Delisting("AUSDT")),
        Fault(len(first), Delisting("BUSDT")),
    ]
    trades = [*first, *then]
    with LocalExchange(
        trades,
        faults,
        unlisted=("DUSDT", "EUSDT"),
        ping_interval_s=1.0,
        message_rate_limit=5,
    ) as exchange:
        settings = settings_for(
            exchange,
            topic_prefix,
            ("*USDT",),
            symbols_refresh_s=0.3,
            silence_timeout_s=30,
            streams_per_connection=2,
        )
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            exchange.wait_done(60)
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(trades), 60)
            wait_until(
                lambda: len(app.ingestor.shards) == 2, 30, "the empty connection was not closed"
            )
            _, health = app.health()
            subscribed = exchange.subscribed()
    assert_exactly_once_in_order(trades_of(records), trades)
    assert subscribed == {stream(s) for s in ("CUSDT", "DUSDT", "EUSDT")}
    assert sorted(c["streams"] for c in health["connections"]) == [1, 2]
    assert exchange.log.rate_disconnects == 0
