"""The heal loop's REST side on the real store (chDB) and the local exchange's REST: one minute
fetched again (``heal_minute``), and an id range REST does not have reported, never dropped."""

from __future__ import annotations

import asyncio
import json
from itertools import groupby

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.ingest.backfill import RestBackfill
from binance_metrics.ingest.heal import Healer
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.ingest.tuning import IngestTuning
from binance_metrics.rest_client import RestTuning
from binance_metrics.store.clickhouse import Store
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.market import MarketTrade
from binance_metrics.trades import TradeMessage, decode_priced_trade

from .captures import real_trades

MINUTE_MS = 60_000
SYMBOL = "BTCUSDT"


def bar_of(trades: list[MarketTrade]) -> Bar:
    bar = Bar()
    for trade in trades:
        _, price, qty = decode_priced_trade(json.dumps(trade.data))
        bar.add(price, qty, trade.id, trade.id, trade.data["m"])
    return bar


def minutes(trades: list[MarketTrade]) -> list[tuple[int, list[MarketTrade]]]:
    return [
        (start, list(group))
        for start, group in groupby(trades, key=lambda t: t.trade_time // MINUTE_MS * MINUTE_MS)
    ]


def healer(exchange: LocalExchange, store: Store, produced: list[TradeMessage]) -> Healer:
    rest = RestBackfill(exchange.rest_url, RestTuning(0.01, 0.05, 2, 10, 5000))
    sequences = {SYMBOL: SymbolSequence(SYMBOL, lambda _trade: None)}
    return Healer(store, rest, produced.append, sequences, IngestTuning())


def test_heal_minute_fetches_every_id_between_the_stored_bars_around_it(
    empty_store: Store,
) -> None:
    trades = real_trades(SYMBOL, 3000)
    by_minute = minutes(trades)
    assert len(by_minute) >= 3
    (lost_start, lost), kept = by_minute[1], [by_minute[0], *by_minute[2:]]
    empty_store.insert_bars([BarUpdate(SYMBOL, start, bar_of(group)) for start, group in kept])
    # The minute is stored, but with its first half only: the ids it lacks are fetched too.
    empty_store.insert_bars([BarUpdate(SYMBOL, lost_start, bar_of(lost[: len(lost) // 2]))])
    produced: list[TradeMessage] = []
    with LocalExchange(trades, rest_serves_all=True) as exchange:
        result = asyncio.run(
            healer(exchange, empty_store, produced).heal_minute(SYMBOL, lost_start)
        )
    assert result.unfilled is None
    assert [t.trade_id for t in produced] == [t.id for t in lost]
    assert all(t.backfilled for t in produced), "healed trades are marked as fetched over REST"
    assert [(t.price, t.quantity, t.trade_time_ms) for t in produced] == [
        (t.data["p"], t.data["q"], t.data["T"]) for t in lost
    ]


def test_ids_rest_does_not_have_are_reported_not_dropped(empty_store: Store) -> None:
    trades = real_trades(SYMBOL, 500)
    first = trades[0].id
    produced: list[TradeMessage] = []
    with LocalExchange(trades, rest_serves_all=True) as exchange:
        heal = healer(exchange, empty_store, produced)
        # Older than the exchange keeps: the ids before its first trade cannot come.
        result = asyncio.run(heal.fetch_range(SYMBOL, first - 10, first + 9))
    assert [t.trade_id for t in produced] == list(range(first, first + 10))
    assert result.produced == 10
    assert (
        result.unfilled
        == f"REST has no trades {first - 10}..{first - 1} (older than Binance keeps?)"
    )
