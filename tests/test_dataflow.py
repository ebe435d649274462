"""Window correctness: the dataflow's bars equal the plain-Python reference, whatever the input's
order, batching, partitioning, worker count or lateness (hypothesis, through bytewax.testing)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, cluster_main, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binance_metrics.bars import BarUpdate
from binance_metrics.dataflow import FlowStats, build_bars
from binance_metrics.heartbeats import encode_heartbeat
from binance_metrics.trades import Rejected, TradeMessage, encode_trade
from tests.support.oracle import as_fields, materialize, reference_klines
from tests.support.sources import FROZEN_NOW, ListPartitionsSource
from tests.support.strategies import market_trades


def run_bars(
    partitions: Sequence[Sequence[bytes]],
    *,
    batch_size: int = 100,
    workers: int = 1,
    wait: timedelta = timedelta(seconds=2),
) -> tuple[list[BarUpdate], list[Rejected], FlowStats]:
    flow = Dataflow("test_bars")
    stats = FlowStats()
    payloads = op.input("in", flow, ListPartitionsSource(partitions, batch_size))
    bars, rejected = build_bars(payloads, wait=wait, stats=stats, now_getter=lambda: FROZEN_NOW)
    bar_out: list[Any] = []
    rejected_out: list[Any] = []
    op.output("bars", bars, TestingSink(bar_out))
    op.output("rejected", rejected, TestingSink(rejected_out))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return bar_out, rejected_out, stats


def assert_bars_equal_reference(updates: list[BarUpdate], trades: list[TradeMessage]) -> None:
    table = materialize(updates)
    expected = reference_klines(trades)
    assert set(table) == set(expected), "bars for other minutes than the reference"
    for key, fields in expected.items():
        assert as_fields(table[key]) == fields, f"bar {key} differs"
    assert sum(bar.trade_count for bar in table.values()) == sum(t.trade_count for t in trades)


@st.composite
def arrangements(draw: st.DrawFn) -> dict[str, Any]:
    """Trades, and a way to deliver them: order, partitions, batch size, workers, lateness."""
    trades = draw(market_trades())
    # Either as they happened, or in any order within and across symbols.
    order = draw(st.permutations(trades)) if draw(st.booleans()) else trades
    n_partitions = draw(st.integers(min_value=1, max_value=3))
    partitions: list[list[bytes]] = [[] for _ in range(n_partitions)]
    for trade in order:
        partitions[draw(st.integers(0, n_partitions - 1))].append(encode_trade(trade))
    return {
        "trades": trades,
        "partitions": partitions,
        "batch_size": draw(st.sampled_from([1, 3, 17, 1000])),
        "workers": draw(st.sampled_from([1, 1, 2])),
        "wait": draw(st.sampled_from([timedelta(0), timedelta(seconds=2), timedelta(hours=1)])),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrangements())
def test_bars_equal_reference_however_delivered(case: dict[str, Any]) -> None:
    updates, rejected, stats = run_bars(
        case["partitions"], batch_size=case["batch_size"], workers=case["workers"],
        wait=case["wait"],
    )  # fmt: skip
    assert rejected == []
    assert stats.trades == sum(t.trade_count for t in case["trades"])
    assert_bars_equal_reference(updates, case["trades"])


@settings(max_examples=25, deadline=None)
@given(market_trades())
def test_every_version_of_a_bar_is_complete_so_far(trades: list[TradeMessage]) -> None:
    """Late trades produce corrected bars, never a lone partial bar that could replace one."""
    reversed_order = [encode_trade(t) for t in reversed(trades)]  # everything after the first
    updates, _, stats = run_bars([reversed_order], batch_size=1, wait=timedelta(0))
    seen: dict[tuple[str, int], int] = {}
    for symbol, start, bar in updates:
        assert bar.trade_count >= seen.get((symbol, start), 0), "a bar shrank"
        seen[(symbol, start)] = bar.trade_count
    assert_bars_equal_reference(updates, trades)
    if len({t.trade_time_ms // 60_000 for t in trades}) > 1:
        assert stats.late_trades > 0, "reversed input should have produced late trades"


def test_zero_trade_minutes_carry_previous_close() -> None:
    def trade(trade_id: int, minute: int, price: str) -> TradeMessage:
        time_ms = 1_723_161_600_000 + minute * 60_000 + 5
        return TradeMessage(
            event_type="trade",
            event_time_ms=time_ms,
            symbol="BTCUSDT",
            trade_id=trade_id,
            price=price,
            quantity="1",
            trade_time_ms=time_ms,
            buyer_is_maker=True,
        )

    trades = [trade(1, 0, "10"), trade(2, 0, "11"), trade(3, 3, "12")]
    updates, _, _ = run_bars([[encode_trade(t) for t in trades]])
    table = materialize(updates)
    starts = sorted(start for _, start in table)
    assert len(starts) == 4
    for start in starts[1:3]:
        filler = table[("BTCUSDT", start)]
        assert (filler.open, filler.high, filler.low, filler.close) == (11 * 10**8,) * 4
        assert (filler.volume, filler.trade_count) == (0, 0)

    # A late trade in a filled minute turns it into a real bar and re-prices the next filler.
    updates_late, _, stats = run_bars([[encode_trade(t) for t in [*trades, trade(0, 1, "20")]]],
                                      batch_size=1, wait=timedelta(0))  # fmt: skip
    table = materialize(updates_late)
    assert stats.late_trades == 1
    assert table[("BTCUSDT", starts[1])].close == 20 * 10**8
    assert table[("BTCUSDT", starts[2])].open == 20 * 10**8


def test_a_trade_after_a_heartbeat_that_vouched_for_its_minute_is_merged_not_lost() -> None:
    """A heartbeat that vouched too far (the ticker trailed a trade) fills the minute; the trade
    that comes after it replaces the zero-trade bar and re-prices the fillers after it."""
    base = 1_723_161_600_000

    def trade(trade_id: int, at_ms: int, price: str) -> TradeMessage:
        return TradeMessage("trade", at_ms, "BTCUSDT", trade_id, price, "1", at_ms, False)

    late = trade(2, base + 60_000 + 30_000, "20")
    trades = [trade(1, base + 5, "10"), late, trade(3, base + 4 * 60_000 + 5, "12")]
    # Minutes 1 and 2 vouched for, wrongly: trade 2 of minute 1 comes after.
    wrong = [encode_heartbeat("BTCUSDT", base + m * 60_000 - 1, 0) for m in (2, 3)]
    for wait in (timedelta(0), timedelta(seconds=2)):
        updates, rejected, stats = run_bars(
            [[encode_trade(trades[0]), *wrong, encode_trade(late), encode_trade(trades[2])]],
            batch_size=1, wait=wait,
        )  # fmt: skip
        assert rejected == []
        filled = [u for u in updates if u.window_start_ms == base + 60_000]
        assert filled[0].bar.trade_count == 0, "the heartbeat filled minute 1 first"
        assert stats.late_trades == 1
        assert_bars_equal_reference(updates, trades)


def test_undecodable_records_are_rejected_with_reason_not_dropped() -> None:
    good = TradeMessage(
        event_type="trade",
        event_time_ms=1,
        symbol="BTCUSDT",
        trade_id=1,
        price="1",
        quantity="1",
        trade_time_ms=1_723_161_600_000,
        buyer_is_maker=False,
    )
    garbage = [b"{not json", b'{"e":"trade"}', encode_trade(good).replace(b'"q":"1"', b'"q":"0"')]
    updates, rejected, stats = run_bars([[*garbage, encode_trade(good)]])
    assert [r.payload for r in rejected] == garbage
    assert all(r.error for r in rejected)
    assert stats.rejected == 3 and stats.trades == 1
    assert_bars_equal_reference(updates, [good])
