"""The local exchange's ticker as Binance serves it: ``lastId`` and ``closeTime``, so that every
trade of a symbol up to ``closeTime`` has happened, and a clock that stops when the market ends."""

from __future__ import annotations

import json
import time

import httpx
from websockets.sync.client import connect

from binance_metrics.testing.exchange import LocalExchange, RealTime
from binance_metrics.testing.market import MarketTrade
from binance_metrics.trades import TradeMessage


def ticker(exchange: LocalExchange) -> dict[str, dict[str, int]]:
    query = {"symbols": json.dumps(["AAAUSDT", "BBBUSDT"]), "type": "MINI"}
    rows = httpx.get(exchange.rest_url + "/api/v3/ticker/24hr", params=query, timeout=10).json()
    return {row["symbol"]: row for row in rows}


def test_close_time_never_reaches_a_trade_not_yet_happened_and_stops_at_the_end() -> None:
    now = int(time.time() * 1000)
    at = [("AAAUSDT", 1, now - 500), ("BBBUSDT", 7, now - 400), ("AAAUSDT", 2, now + 1_500)]
    trades = [
        MarketTrade.from_message(
            TradeMessage("trade", t, s, i, "1.00000000", "1.00000000", t, False), 0
        )
        for s, i, t in at
    ]  # fmt: skip
    with LocalExchange(trades, pace=RealTime(1.0, on_the_clock=True)) as exchange:
        before = ticker(exchange)  # no listener yet: nothing has happened
        assert before["AAAUSDT"]["lastId"] == -1
        assert before["AAAUSDT"]["closeTime"] == now - 501  # just before its first trade
        with connect(exchange.ws_url + "?streams=aaausdt@trade/bbbusdt@trade") as ws:
            ws.recv(10)
            ws.recv(10)  # the two trades already due
            during = ticker(exchange)
            assert during["AAAUSDT"]["lastId"] == 1
            assert during["AAAUSDT"]["closeTime"] <= now + 1_499  # its next trade is to come
            # BBBUSDT has no trade to come: the clock, Binance's "now".
            assert during["BBBUSDT"]["closeTime"] >= int(time.time() * 1000) - 1_000
            assert during["BBBUSDT"]["openTime"] == during["BBBUSDT"]["closeTime"] - 86_400_000
            ws.recv(10)
            exchange.wait_done(10)
            time.sleep(0.3)
            after = ticker(exchange)
        # The market has ended: its clock stops at its last trade.
        assert after["AAAUSDT"]["lastId"] == 2
        assert after["AAAUSDT"]["closeTime"] == after["BBBUSDT"]["closeTime"] == now + 1_500
