"""REST backfill: historicalTrades paging, Retry-After, giving up; and gaps REST cannot fill."""

from __future__ import annotations

import asyncio
import time

import pytest

from binance_metrics.ingest.backfill import BackfillError, RestBackfill
from binance_metrics.ingest.tuning import HISTORICAL_TRADES_WEIGHT
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.rest_client import next_call_at
from binance_metrics.settings import Settings
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.faults import Cut, Drop, Fault
from binance_metrics.testing.market import merge_by_event_time
from binance_metrics.trades import TradeMessage

from .captures import real_trades
from .harness import (
    assert_exactly_once_in_order,
    read_topic,
    running_ingestor,
    settings_for,
    trades_of,
)

BTC = real_trades("BTCUSDT", 2500)


def fetch(
    exchange: LocalExchange, from_id: int, limit: int, **tuning: object
) -> list[TradeMessage]:
    """One ``trades`` call of the client the ingestor builds, with ``INGEST`` ``tuning``."""
    settings = Settings(
        BINANCE_REST_URL=exchange.rest_url, INGEST={"backfill_retry_base_s": 0.01, **tuning}
    )

    async def go() -> list[TradeMessage]:
        rest = RestBackfill.from_settings(settings)
        try:
            return await rest.trades("BTCUSDT", from_id, limit)
        finally:
            await rest.aclose()

    return asyncio.run(go())


def test_historical_trades_become_backfilled_trade_messages() -> None:
    with LocalExchange(BTC, rest_serves_all=True) as exchange:
        start = BTC[100].id
        got = fetch(exchange, start, 5000)
    assert len(got) == 1000, "one call returns at most 1000 trades"
    assert [t.trade_id for t in got] == [c.id for c in BTC[100:1100]]
    for message, captured in zip(got, BTC[100:1100], strict=True):
        data = captured.data
        assert message.backfilled and message.event_type == "trade" and message.symbol == "BTCUSDT"
        assert (
            message.price,
            message.quantity,
            message.trade_time_ms,
            message.buyer_is_maker,
            message.best_match,
        ) == (
            data["p"],
            data["q"],
            data["T"],
            data["m"],
            data["M"],
        )
    assert exchange.log.rest_calls[0].limit == 1000


def test_retry_after_is_honoured() -> None:
    with LocalExchange(BTC, rest_serves_all=True, rest_errors=[(429, 0.3), (418, 0.2)]) as ex:
        began = time.monotonic()
        got = fetch(ex, BTC[0].id, 10)
        took = time.monotonic() - began
    assert [t.trade_id for t in got] == [c.id for c in BTC[:10]]
    assert [c.status for c in ex.log.rest_calls] == [429, 418, 200]
    assert took >= 0.5 * 0.99, "Retry-After sleeps were skipped"


def test_weight_budget_defers_the_next_call_to_the_next_minute() -> None:
    heavy = HISTORICAL_TRADES_WEIGHT
    assert next_call_at(100, 5000, now=1_000_030.5, weight=heavy) == 1_000_030.5
    assert next_call_at(4990, 5000, now=1_000_030.5, weight=heavy) == 1_000_080.0  # next minute
    # A lighter call (klines: 2) still fits where a historicalTrades call (25) does not.
    assert next_call_at(4990, 5000, now=1_000_030.5, weight=2) == 1_000_030.5


def test_persistent_errors_raise_after_the_attempt_budget() -> None:
    with LocalExchange(BTC, rest_serves_all=True, rest_errors=[(500, 0)] * 10) as ex:
        with pytest.raises(BackfillError):
            fetch(ex, BTC[0].id, 10, backfill_max_attempts=3)
        assert len(ex.log.rest_calls) == 3


def test_gap_rest_cannot_fill_is_counted_and_does_not_block_later_trades(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    trades = BTC[:1500]
    faults = [Fault(500, Drop(100)), Fault(600, Cut())]
    with LocalExchange(trades, faults, rest_errors=[(500, 0)] * 1000) as exchange:
        settings = settings_for(exchange, topic_prefix, ("BTCUSDT",), backfill_max_attempts=2)
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            exchange.wait_done(30)
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, 1400)
            _, health = app.health()
    got = [t.trade_id for t in trades_of(records)]
    dropped = {t.id for t in exchange.log.dropped}
    assert got == [t.id for t in trades if t.id not in dropped], "later trades must still flow"
    assert health["symbols"]["BTCUSDT"]["unfilled"] == 100
    assert health["symbols"]["BTCUSDT"]["heldBehindGap"] == 0


def test_one_connection_per_stream_group(broker: EmbeddedBroker, topic_prefix: str) -> None:
    symbols = ("BTCUSDT", "ETHUSDT")
    trades = merge_by_event_time(*(real_trades(s, 1000) for s in symbols))
    faults = [Fault(700, Drop(50)), Fault(750, Cut(close_frame=False))]
    with LocalExchange(trades, faults) as exchange:
        settings = settings_for(exchange, topic_prefix, symbols, streams_per_connection=1)
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            exchange.wait_done(30)
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(trades))
            _, health = app.health()
    assert_exactly_once_in_order(trades_of(records), trades)
    first_two = exchange.log.sessions[:2]
    assert sorted(s.streams for s in first_two) == [
        frozenset({"btcusdt@trade"}),
        frozenset({"ethusdt@trade"}),
    ]
    assert len(health["connections"]) == 2
