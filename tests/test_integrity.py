"""No repeat, delay or order of trades corrupts a stored bar.

Trades go through the real dataflow and the real sink into chDB, delivered in any order, with
any of them repeated (a file replayed twice, overlapping files, a producer retrying), late by
any amount (a zero watermark wait makes most of them late), and with a history so short that
trades arrive for minutes the dataflow has already forgotten (merged by the sink into the
stored bar). The stored table must equal the plain reference of the distinct trades.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binance_metrics.dataflow import FlowStats, build_bars
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars
from binance_metrics.store.sink import ClickHouseBarSink, output_bars
from binance_metrics.trades import TradeMessage, encode_trade
from tests.support.oracle import FIELDS, reference_klines
from tests.support.sources import FROZEN_NOW, ListPartitionsSource
from tests.support.strategies import market_trades


@st.composite
def deliveries(draw: st.DrawFn) -> dict[str, Any]:
    """Distinct trades, and a delivery of them with repeats, in any order, over partitions."""
    trades = draw(market_trades())
    repeated = draw(st.lists(st.sampled_from(trades), max_size=len(trades)))
    if draw(st.booleans()):
        repeated += trades  # the whole input twice
    delivered = draw(st.permutations(trades + repeated))
    n_partitions = draw(st.integers(min_value=1, max_value=3))
    partitions: list[list[bytes]] = [[] for _ in range(n_partitions)]
    for trade in delivered:
        partitions[draw(st.integers(0, n_partitions - 1))].append(encode_trade(trade))
    return {
        "trades": trades,
        "partitions": partitions,
        "batch_size": draw(st.sampled_from([1, 4, 1000])),
        "history": draw(st.sampled_from([1, 3, 1440])),
        "wait": draw(st.sampled_from([timedelta(0), timedelta(hours=1)])),
    }


def run_into_store(case: dict[str, Any], store: Store) -> FlowStats:
    flow = Dataflow("integrity")
    stats = FlowStats()
    payloads = op.input("in", flow, ListPartitionsSource(case["partitions"], case["batch_size"]))
    bars, _ = build_bars(
        payloads,
        wait=case["wait"],
        history_windows=case["history"],
        stats=stats,
        now_getter=lambda: FROZEN_NOW,
    )
    output_bars("store", bars, ClickHouseBarSink(store.dsn, stats.add, market="spot"))
    run_main(flow)
    return stats


def stored_table(store: Store, trades: list[TradeMessage]) -> dict[tuple[str, int], dict[str, Any]]:
    return {
        (symbol, bar.open_time_ms): {name: getattr(bar, name) for name in FIELDS}
        for symbol in {t.symbol for t in trades}
        for bar in fetch_bars(store, symbol)
    }


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(deliveries())
def test_stored_bars_equal_the_reference_whatever_is_repeated_late_or_out_of_order(
    store: Store, case: dict[str, Any]
) -> None:
    store.command("TRUNCATE TABLE binance.ohlcv")
    stats = run_into_store(case, store)
    stored = stored_table(store, case["trades"])
    expected = reference_klines(case["trades"])
    with_trades = {key: kline for key, kline in expected.items() if kline["trade_count"]}
    assert {key: bar for key, bar in stored.items() if bar["trade_count"]} == with_trades
    # A zero-trade bar is written only for a minute the dataflow knows to be empty: it is then
    # Binance's (the previous close, nothing traded); with the whole history, every one is.
    for key, bar in stored.items():
        assert bar == expected[key], f"zero-trade bar {key} is not Binance's"
    if case["history"] == 1440:
        assert stored == expected
    assert stats.conflicting_trades == stats.undecided_trades == 0
    distinct = sum(t.trade_count for t in case["trades"])
    assert stats.trades - stats.duplicate_trades == distinct


def test_a_rerun_repairs_a_bar_that_counted_a_trade_twice(store: Store) -> None:
    store.command("TRUNCATE TABLE binance.ohlcv")
    trades = [
        TradeMessage("trade", 1, "BTCUSDT", i, "10.0", "1.0", 1_723_161_600_000 + i, False)
        for i in range(1, 4)
    ]
    doubled = {"trades": trades, "partitions": [[encode_trade(t) for t in trades]]}
    common = {"batch_size": 1000, "history": 1440, "wait": timedelta(hours=1)}
    # An older release (or another writer) stored the minute with trade 2 counted twice.
    from binance_metrics.bars import Bar, BarUpdate

    bad = Bar()
    for trade in [*trades, trades[1]]:
        bad.add_trade(trade)
    store.insert_bars([BarUpdate("BTCUSDT", 1_723_161_600_000, bad)])
    assert fetch_bars(store, "BTCUSDT")[0].trade_count == 4
    run_into_store({**doubled, **common}, store)
    (bar,) = fetch_bars(store, "BTCUSDT")
    assert {name: getattr(bar, name) for name in FIELDS} == reference_klines(trades)[
        ("BTCUSDT", 1_723_161_600_000)
    ]
