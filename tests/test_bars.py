"""The bar is a commutative monoid, and it agrees with the Decimal reference."""

from __future__ import annotations

import random
from functools import reduce

from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from binance_metrics.bars import Bar, merge
from binance_metrics.trades import TradeMessage
from tests.support.oracle import as_fields, reference_klines
from tests.support.strategies import symbol_trades

trade_lists = symbol_trades("BTCUSDT", max_trades=12)


def fold(trades: list[TradeMessage]) -> Bar:
    bar = Bar.empty()
    for trade in trades:
        bar.add_trade(trade)
    return bar


def single(trade: TradeMessage) -> Bar:
    return Bar.empty().add_trade(trade)


@st.composite
def three_bars(draw: st.DrawFn) -> tuple[Bar, Bar, Bar]:
    """Three bars over disjoint parts of one symbol's trades."""
    trades = draw(trade_lists)
    cut1 = draw(st.integers(0, len(trades)))
    cut2 = draw(st.integers(cut1, len(trades)))
    order = draw(st.permutations(trades))
    return fold(order[:cut1]), fold(order[cut1:cut2]), fold(order[cut2:])


@given(three_bars())
def test_empty_is_identity(bars: tuple[Bar, Bar, Bar]) -> None:
    a = bars[0]
    assert merge(a, Bar.empty()) == a
    assert merge(Bar.empty(), a) == a


@given(three_bars())
def test_merge_is_associative(bars: tuple[Bar, Bar, Bar]) -> None:
    a, b, c = bars
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(three_bars())
def test_merge_is_commutative(bars: tuple[Bar, Bar, Bar]) -> None:
    a, b, _ = bars
    assert merge(a, b) == merge(b, a)


@given(trade_lists)
def test_add_equals_merge_of_singletons(trades: list[TradeMessage]) -> None:
    assert fold(trades) == reduce(merge, map(single, trades), Bar.empty())


@given(trade_lists, st.randoms())
def test_arrival_order_does_not_matter(trades: list[TradeMessage], rnd: random.Random) -> None:
    shuffled = list(trades)
    rnd.shuffle(shuffled)
    assert fold(shuffled) == fold(trades)


@given(trade_lists)
def test_matches_decimal_reference(trades: list[TradeMessage]) -> None:
    one_window = [replace(t, trade_time_ms=trades[0].trade_time_ms) for t in trades]
    (expected,) = reference_klines(one_window, window_ms=10**15).values()
    assert as_fields(fold(one_window)) == expected


def test_open_and_close_follow_trade_ids_not_arrival() -> None:
    late_first = Bar.empty().add(price=200, qty=1, first_id=9, last_id=9, buyer_is_maker=True)
    late_first.add(price=100, qty=1, first_id=5, last_id=5, buyer_is_maker=False)
    assert (late_first.open, late_first.close) == (100, 200)
    assert late_first.taker_buy_volume == 1
    assert late_first.quote_volume == 300


def test_huge_quantities_do_not_overflow() -> None:
    shib = Bar.empty()
    for trade_id in range(1000):
        shib.add(price=1, qty=10**9 * 10**8, first_id=trade_id, last_id=trade_id,
                 buyer_is_maker=False)  # fmt: skip
    assert shib.volume == 10**12 * 10**8
    assert str(shib.decimals()["volume"]) == "1000000000000.00000000"
