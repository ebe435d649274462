"""The dataflow's forming bars and quiet windows, through bytewax.testing with a frozen clock:
windows close by event time (heartbeats included) and at the end of the input."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.dataflow import build_bar_streams
from binance_metrics.forming import FormingUpdate
from binance_metrics.heartbeats import encode_heartbeat
from binance_metrics.trades import TradeMessage, encode_trade
from tests.support.oracle import as_fields, materialize, reference_klines
from tests.support.sources import FROZEN_NOW, ListPartitionsSource

MINUTE_MS = 60_000
T0 = 1_723_161_600_000  # a minute boundary
W0 = T0 // MINUTE_MS


def trade(symbol: str, trade_id: int, time_ms: int, price: str) -> TradeMessage:
    return TradeMessage("trade", time_ms, symbol, trade_id, price, "0.50000000", time_ms, False)


def run(payloads: list[bytes]) -> tuple[list[BarUpdate], list[FormingUpdate]]:
    flow = Dataflow("test_forming")
    source = op.input("in", flow, ListPartitionsSource([payloads], batch_size=2))
    streams = build_bar_streams(
        source,
        wait=timedelta(seconds=2),
        now_getter=lambda: FROZEN_NOW,
        forming_every=timedelta(milliseconds=250),
    )
    bars: list[Any] = []
    forming: list[Any] = []
    op.output("bars", streams.bars, TestingSink(bars))
    assert streams.forming is not None
    op.output("forming_out", streams.forming, TestingSink(forming))
    run_main(flow)
    return bars, forming


def test_a_quiet_window_is_filled_only_when_a_heartbeat_vouched_for_all_of_it() -> None:
    trades = [trade("AAAUSDT", 1, T0 + 10, "1.00000000"), trade("AAAUSDT", 2, T0 + 20, "2.0")]
    payloads = [encode_trade(t) for t in trades]
    # Vouched through the end of window 1; window 2 only half way (then an outage).
    payloads += [encode_heartbeat("AAAUSDT", T0 + k * 1000 - 1, 0) for k in range(1, 151)]
    bars, _ = run(payloads)
    table = materialize(bars)
    assert sorted(table) == [("AAAUSDT", T0), ("AAAUSDT", T0 + MINUTE_MS)]
    assert table[("AAAUSDT", T0 + MINUTE_MS)] == Bar.filler(2 * 10**8)
    assert as_fields(table[("AAAUSDT", T0)]) == reference_klines(trades)[("AAAUSDT", T0)]


def test_the_last_forming_bar_is_the_reference_of_its_windows_trades() -> None:
    trades = [trade("AAAUSDT", i, T0 + MINUTE_MS + i * 100, f"{i}.25") for i in range(1, 40)]
    trades += [trade("BBBUSDT", 7, T0 + 5, "3.00000000")]
    payloads = [encode_trade(t) for t in trades]
    payloads.append(encode_heartbeat("BBBUSDT", T0 + 3 * MINUTE_MS + 999, 0))
    _, forming = run(payloads)
    last = {update.symbol: update for update in forming}
    assert last["AAAUSDT"].window_start_ms == T0 + MINUTE_MS
    expected = reference_klines(trades)[("AAAUSDT", T0 + MINUTE_MS)]
    assert as_fields(last["AAAUSDT"].bar) == expected
    # BBB: a heartbeat in window 3 and no trade there: the close of its window 0 repeated.
    assert last["BBBUSDT"] == FormingUpdate("BBBUSDT", T0 + 3 * MINUTE_MS, Bar.filler(3 * 10**8))
    # Throttled: the clock is frozen, so after the first snapshot only the end flushes one.
    assert len([u for u in forming if u.symbol == "AAAUSDT"]) == 2
