"""The futures markets: ``MARKET=um`` and ``MARKET=cm`` against a local futures exchange.

Real captures (USDⓈ-M BTCUSDT with an insurance-fund trade, COIN-M BTCUSD_PERP) played frame for
frame on a local exchange serving the market's paths (``/fapi/v1``, ``/dapi/v1``), its limits
(200 streams per connection, 10 messages per second) and its REST (no public historicalTrades,
aggTrades instead) -> real ingestor under uvicorn -> real Kafka (Tansu).
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pytest

from binance_metrics.errors import ConfigError
from binance_metrics.ingest.aggregates import Edges, Pass, cut_to_gap
from binance_metrics.ingest.backfill import AggTrade, BackfillError, RestBackfill, TickerRow
from binance_metrics.ingest.discovery import SymbolSelection, initial_symbols
from binance_metrics.ingest.heal import Healer
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.settings import Settings
from binance_metrics.store.clickhouse import Store
from binance_metrics.testing.exchange import LocalExchange, aggregates_of
from binance_metrics.testing.faults import Drop, Fault, Hold
from binance_metrics.testing.market import MarketTrade, load_capture, synthetic_market
from binance_metrics.trades import TradeMessage
from tests.support.data import (
    BTCUSD_PERP_CM_CAPTURE,
    BTCUSDT_FUTURES_CAPTURE,
    INSURANCE_FUND_TRADE_ID,
)
from tests.support.oracle import reference_klines

from .harness import (
    assert_exactly_once_in_order,
    read_topic,
    running_ingestor,
    settings_for,
    trades_of,
    wait_until,
)

UM = load_capture(BTCUSDT_FUTURES_CAPTURE, 6000)  # the insurance-fund trade is the 5,049th
CM = load_capture(BTCUSD_PERP_CM_CAPTURE, 2000)


def _key(trade: MarketTrade) -> tuple[object, ...]:
    return (trade.trade_time, trade.data["p"], trade.data["m"])


def _inside_run(trades: list[MarketTrade], near: int) -> int:
    """The first index from ``near`` whose trade shares time, price and side with the one
    before: one aggregate on Binance, so a cut there splits it."""
    return next(i for i in range(near, len(trades)) if _key(trades[i]) == _key(trades[i - 1]))


def _market_only(trades: list[TradeMessage]) -> list[TradeMessage]:
    return [t for t in trades if t.trade_type in (None, "MARKET")]


def test_market_defaults_and_an_explicit_value_wins() -> None:
    um = Settings(MARKET="um")
    assert um.BINANCE_WS_URL == "wss://fstream.binance.com/public/stream"
    assert um.BINANCE_REST_URL == "https://fapi.binance.com"
    assert (um.KAFKA_TOPIC, um.KAFKA_DLQ_TOPIC) == ("binance-um-trades", "binance-um-trades-dlq")
    assert (um.INGEST.streams_per_connection, um.INGEST.subscribe_messages_per_s) == (200, 8)
    cm = Settings(MARKET="cm", KAFKA_TOPIC="mine", INGEST={"streams_per_connection": 50})
    assert cm.BINANCE_WS_URL == "wss://dstream.binance.com/stream"
    assert cm.BINANCE_REST_URL == "https://dapi.binance.com"
    assert (cm.KAFKA_TOPIC, cm.INGEST.streams_per_connection) == ("mine", 50)
    spot = Settings()
    assert (spot.KAFKA_TOPIC, spot.INGEST.streams_per_connection) == ("binance-trades", 1024)
    assert spot.BINANCE_REST_URL == "https://data-api.binance.vision"


def test_a_limit_above_the_markets_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from binance_metrics.settings import load_settings

    monkeypatch.setenv("MARKET", "um")
    monkeypatch.setenv("INGEST__STREAMS_PER_CONNECTION", "201")
    with pytest.raises(ConfigError, match="INGEST__STREAMS_PER_CONNECTION=201 is above the 200"):
        load_settings()


def test_another_markets_default_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A .env written for spot (compose's values) must not feed USDⓈ-M bars from spot's stream.
    from binance_metrics.settings import load_settings

    monkeypatch.setenv("MARKET", "um")
    monkeypatch.setenv("BINANCE_WS_URL", "wss://data-stream.binance.vision/stream")
    with pytest.raises(ConfigError, match=r"BINANCE_WS_URL=.* is the default of MARKET=spot"):
        load_settings()
    monkeypatch.setenv("BINANCE_WS_URL", "")  # blank: the market's own
    assert load_settings().BINANCE_WS_URL == "wss://fstream.binance.com/public/stream"


def test_usdm_trades_reach_kafka_once_in_order_with_their_type(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    with LocalExchange(UM, market="um", message_rate_limit=10) as exchange:
        settings = settings_for(exchange, topic_prefix, ("BTCUSDT",))
        with running_ingestor(settings, broker.bootstrap_servers):
            exchange.wait_done(60)
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(UM))
    trades = trades_of(records)
    assert_exactly_once_in_order(trades, UM)
    types = {t.trade_id: t.trade_type for t in trades}
    assert types.pop(INSURANCE_FUND_TRADE_ID) == "INSURANCE_FUND", "kept for the dataflow"
    assert set(types.values()) == {"MARKET"}
    assert all(t.contract_size is None for t in trades), "contract sizes are COIN-M's"
    assert exchange.log.sessions[0].ws.request is not None
    assert exchange.log.sessions[0].ws.request.path == "/stream"


def test_coinm_records_carry_the_contract_size(broker: EmbeddedBroker, topic_prefix: str) -> None:
    with LocalExchange(CM, market="cm", contract_sizes={"BTCUSD_PERP": 100}) as exchange:
        settings = settings_for(exchange, topic_prefix, ("BTCUSD_PERP",))
        with running_ingestor(settings, broker.bootstrap_servers):
            exchange.wait_done(60)
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(CM))
    trades = trades_of(records)
    assert_exactly_once_in_order(trades, CM)
    assert {t.contract_size for t in trades} == {100}
    assert exchange.log.exchange_info_calls >= 1, "read for the contract sizes, names or not"


def test_a_coinm_symbol_without_a_contract_size_stops_the_start() -> None:
    with LocalExchange(CM, market="cm") as exchange:
        settings = Settings(MARKET="cm", BINANCE_REST_URL=exchange.rest_url)

        async def start() -> None:
            rest = RestBackfill.from_settings(settings)
            try:
                await initial_symbols(SymbolSelection.of(("BTCUSD_PERP", "XRPUSD_PERP")), rest, {})
            finally:
                await rest.aclose()

        with pytest.raises(ConfigError, match="SYMBOLS: XRPUSD_PERP has no contractSize"):
            asyncio.run(start())


def test_a_futures_gap_is_filled_from_agg_trades_cut_exactly(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    # The dropped frames start and end inside aggregates, and hold the insurance-fund trade,
    # which aggTrades leaves out (not a market trade).
    start = _inside_run(UM, 5030)
    end = _inside_run(UM, 5070)
    assert start < 5048 < end
    faults = [Fault(start, Drop(end - start))]
    with LocalExchange(UM, faults, market="um") as exchange:
        settings = settings_for(exchange, topic_prefix, ("BTCUSDT",))
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            exchange.wait_done(60)
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(UM) - 60)
            _, health = app.health()
    trades = trades_of(records)
    assert exchange.log.agg_trades_calls, "filled from aggTrades"
    assert not exchange.log.rest_calls, "historicalTrades needs an API key on futures"
    backfilled = [t for t in trades if t.backfilled]
    assert backfilled and any(t.event_type == "aggTrade" for t in backfilled)
    # Both edges cut an aggregate: its first trades were produced live, its last ones held.
    aggregates = aggregates_of(UM)
    assert any(a["f"] < UM[start].id <= a["l"] for a in aggregates)
    assert any(a["f"] <= UM[end - 1].id < a["l"] for a in aggregates)
    assert backfilled[0].trade_id == UM[start].id
    assert backfilled[-1].last_trade_id == UM[end - 1].id
    # Each id once, in order, no id of the gap missing but the insurance-fund trade.
    covered = [i for t in trades for i in range(t.trade_id, t.last_trade_id + 1)]
    assert covered == sorted(set(covered))
    assert set(covered) == {t.id for t in UM} - {INSURANCE_FUND_TRADE_ID}
    # The bars of what reached Kafka equal the bars of the market trades, to the last digit.
    captured = [_message(t) for t in UM]
    assert reference_klines(_market_only(trades)) == reference_klines(_market_only(captured))
    symbol = health["symbols"]["BTCUSDT"]
    assert symbol["unfilled"] == 0 and symbol["heldBehindGap"] == 0
    assert symbol["notMarketPassed"] == 1, "the insurance-fund trade is in no aggregate"


def test_trades_missed_at_the_tail_are_found_by_the_futures_ticker(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    trades = UM[:2000]
    start = _inside_run(trades, 1985)  # the last frames are dropped, from inside an aggregate
    faults = [Fault(start, Drop(len(trades) - start))]
    with LocalExchange(trades, faults, market="um", tail_guard=0) as exchange:
        settings = settings_for(
            exchange, topic_prefix, ("BTCUSDT",), quiet_after_s=0.3, tail_check_s=0.2
        )
        with running_ingestor(settings, broker.bootstrap_servers):
            exchange.wait_done(60)
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, start + 1)
    got = trades_of(records)
    covered = [i for t in got for i in range(t.trade_id, t.last_trade_id + 1)]
    assert covered == [t.id for t in trades], "no later trade: the ticker shows the gap"
    assert exchange.log.ticker_calls and all(
        len(symbols) == 1 for _, symbols in exchange.log.ticker_calls
    ), "one symbol per futures ticker call"
    assert reference_klines(got) == reference_klines([_message(t) for t in trades])


def test_after_a_restart_the_first_aggregate_is_cut_where_kafka_ends(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    trades = UM[:3000]
    stop = _inside_run(trades, 1000)  # the first run ends inside an aggregate
    tail_guard = 50
    release = threading.Event()
    hold = Hold(release)
    bootstrap = broker.bootstrap_servers
    with LocalExchange(
        trades, [Fault(stop, hold)], market="um", advance_when_idle=True, tail_guard=tail_guard
    ) as exchange:
        settings = settings_for(exchange, topic_prefix, ("BTCUSDT",))
        with running_ingestor(settings, bootstrap) as first:
            assert hold.reached.wait(20), "the market never reached the stop point"
            wait_until(lambda: first.health()[1]["produced"] == stop, 20, "not all acked")
        release.set()  # nobody listens: the market trades on, unseen
        wait_until(lambda: exchange.happened() == len(trades) - tail_guard, 20, "no trading")
        with running_ingestor(settings_for(exchange, topic_prefix, ("BTCUSDT",)), bootstrap) as app:
            exchange.wait_done(30)
            records = read_topic(bootstrap, settings.KAFKA_TOPIC, len(trades) - 1000)
            wait_until(
                lambda: app.health()[1]["symbols"]["BTCUSDT"]["heldBehindGap"] == 0,
                20,
                "trades still held behind the gap",
            )
            _, health = app.health()
    got = trades_of(records)
    covered = [i for t in got for i in range(t.trade_id, t.last_trade_id + 1)]
    assert covered == [t.id for t in trades], "each id once, in order"
    assert got[stop].backfilled and got[stop].trade_id == trades[stop].id
    assert reference_klines(got) == reference_klines([_message(t) for t in trades])
    assert health["symbols"]["BTCUSDT"]["unfilled"] == 0


def test_futures_connections_carry_200_streams_at_10_messages_a_second(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    symbols = tuple(f"F{n:03d}USDT" for n in range(450))
    trades = synthetic_market(symbols, 2)
    with LocalExchange(trades, market="um", message_rate_limit=10, ping_interval_s=1.0) as exchange:
        settings = settings_for(exchange, topic_prefix, ("ALL",), silence_timeout_s=30)
        with running_ingestor(settings, broker.bootstrap_servers) as app:
            exchange.wait_done(120)
            records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(trades), 60)
            _, health = app.health()
    assert_exactly_once_in_order(trades_of(records), trades)
    assert sorted(c["streams"] for c in health["connections"]) == [50, 200, 200]
    log = exchange.log
    assert log.rate_disconnects == 0 and log.refused_subscriptions == 0
    assert max(s.max_messages_per_s for s in log.sessions) <= 10


def test_the_futures_ticker_is_asked_one_symbol_at_a_time_or_all_at_once() -> None:
    with LocalExchange(synthetic_market(("AUSDT", "BUSDT"), 1), market="um") as exchange:
        exchange.log.ticker_calls.clear()
        settings = Settings(MARKET="um", BINANCE_REST_URL=exchange.rest_url)

        async def ask() -> tuple[dict[str, TickerRow], dict[str, TickerRow]]:
            rest = RestBackfill.from_settings(settings)
            try:
                return await rest.latest_trade_ids(["AUSDT"]), await rest.latest_trade_ids(
                    [f"S{n}" for n in range(41)]
                )
            finally:
                await rest.aclose()

        asyncio.run(ask())
    asked = [symbols for _, symbols in exchange.log.ticker_calls]
    assert asked == [("AUSDT",), ("AUSDT", "BUSDT")], "41 symbols cost more one by one than all"


def test_historical_trades_is_not_asked_on_futures() -> None:
    settings = Settings(MARKET="cm", BINANCE_REST_URL="http://127.0.0.1:9")

    async def ask() -> None:
        rest = RestBackfill.from_settings(settings)
        try:
            await rest.trades("BTCUSD_PERP", 1, 10)
        finally:
            await rest.aclose()

    with pytest.raises(BackfillError, match="historicalTrades needs an API key on MARKET=cm"):
        asyncio.run(ask())


def test_healing_on_futures_produces_the_aggregates_inside_a_hole(empty_store: Store) -> None:
    trades = UM[:3000]
    aggregates = aggregates_of(trades)
    first = aggregates[100]["f"]  # the hole starts where an aggregate starts ...
    across = next(a for a in aggregates[110:] if a["l"] > a["f"])  # ... and ends inside one
    last = across["f"]
    produced: list[TradeMessage] = []
    with LocalExchange(trades, market="um", rest_serves_all=True) as exchange:
        settings = Settings(MARKET="um", BINANCE_REST_URL=exchange.rest_url)
        rest = RestBackfill.from_settings(settings)
        sequences = {"BTCUSDT": SymbolSequence("BTCUSDT", lambda _trade: None)}
        heal = Healer(empty_store, rest, produced.append, sequences, settings.INGEST)
        end_ms = across["T"] + 60_000
        result = asyncio.run(heal.fetch_range("BTCUSDT", first, last, end_ms=end_ms))
        asyncio.run(rest.aclose())
    covered = [i for t in produced for i in range(t.trade_id, t.last_trade_id + 1)]
    assert covered == list(range(first, across["f"])), "whole aggregates inside the hole"
    inside = [t for t in trades if first <= t.id < across["f"]]
    assert reference_klines(produced) == reference_klines([_message(t) for t in inside])
    assert result.unfilled is not None and "cannot be cut" in result.unfilled
    assert not exchange.log.rest_calls, "no historicalTrades on futures"


# -- cutting aggregates to a gap (plain values) ------------------------------------------------


def _trade(trade_id: int, qty: str, time_ms: int = 1000, price: str = "10.5") -> TradeMessage:
    return TradeMessage("trade", time_ms, "X", trade_id, price, qty, time_ms, False)


def _agg(a: int, f: int, last: int, qty: str, time_ms: int = 1000) -> AggTrade:
    return AggTrade(a, "10.5", qty, f, last, time_ms, False)


def test_an_aggregate_across_both_edges_is_cut_to_the_missing_quantity() -> None:
    edges = Edges()
    for trade in (_trade(9, "1", 999), _trade(10, "0.25"), _trade(11, "0.5")):
        edges.note(trade)
    held = {15: _trade(15, "2"), 16: _trade(16, "0.125", 1001)}
    aggregates = [_agg(7, 10, 15, "5.75")]  # 10..15: 0.25 + 0.5 produced, 2 held
    steps = cut_to_gap(aggregates, "X", 12, 14, before=edges.runs["X"], held=held,
                       contract_size=10, now_ms=2000)  # fmt: skip
    assert len(steps) == 1 and isinstance(steps[0], TradeMessage)
    piece = steps[0]
    assert (piece.trade_id, piece.last_trade_id, piece.trade_count) == (12, 14, 3)
    assert Decimal(piece.quantity) == Decimal("3")
    assert piece.event_type == "aggTrade" and piece.backfilled and piece.contract_size == 10


def test_ids_no_aggregate_covers_are_passed_and_an_uncuttable_one_is_given_up() -> None:
    held = {20: _trade(20, "1", 3000)}
    # 12..13 aggregated; 14 is not (an insurance-fund trade); 15..19 after a restart: the
    # aggregate starting at 11 has no known front, so its part cannot be cut.
    steps = cut_to_gap(
        [_agg(1, 11, 13, "3"), _agg(2, 15, 19, "5"), _agg(3, 20, 20, "1", 3000)],
        "X", 12, 19, before=None, held=held, contract_size=None, now_ms=4000,
    )  # fmt: skip
    assert steps[0] == Pass(13, True, "aggregate 1 (11..13) cannot be cut")
    assert steps[1] == Pass(14, False, "not in aggTrades: not a market trade")
    assert isinstance(steps[2], TradeMessage) and steps[2].trade_count == 5


def _message(trade: MarketTrade) -> TradeMessage:
    """A captured frame as the trade message it stands for."""
    data = trade.data
    return TradeMessage(
        "trade", data["E"], data["s"], data["t"], data["p"], data["q"], data["T"], data["m"],
        trade_type=data.get("X"),
    )  # fmt: skip


def test_a_jump_in_aggregate_ids_is_no_proof_of_a_non_market_trade() -> None:
    # Aggregate 2 is missing from the answer: ids 14..15 may be in it, so they stay missing.
    steps = cut_to_gap(
        [_agg(1, 10, 13, "4"), _agg(3, 16, 16, "1")],
        "X", 12, 16, before=None, held={17: _trade(17, "1", 1001)}, contract_size=None,
        now_ms=4000,
    )  # fmt: skip
    assert steps == [Pass(13, True, "aggregate 1 (10..13) cannot be cut")]


def test_an_aggregate_whose_last_trades_are_not_held_yet_is_asked_again() -> None:
    # 15..16 are one aggregate with 13..14; only 15 is held so far: nothing is concluded.
    held = {15: _trade(15, "2")}
    steps = cut_to_gap(
        [_agg(1, 10, 11, "1"), _agg(2, 12, 12, "1"), _agg(3, 13, 16, "7")],
        "X", 12, 14, before=None, held=held, contract_size=None, now_ms=4000,
    )  # fmt: skip
    assert len(steps) == 1 and isinstance(steps[0], TradeMessage) and steps[0].trade_id == 12
