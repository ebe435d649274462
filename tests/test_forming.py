"""The forming bar: the current window's trades so far, exactly, and the previous close while
the current window has none."""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.bars import Bar, merge
from binance_metrics.forming import FormingWindow


def bar(trade_id: int, price: int) -> Bar:
    return Bar().add(price, 1, trade_id, trade_id, buyer_is_maker=False)


def test_a_new_window_without_trades_shows_the_previous_close() -> None:
    forming = FormingWindow()
    assert forming.snapshot() is None
    assert not forming.reach(3)  # nothing to show before a first trade
    assert forming.add(4, bar(1, 100)) and forming.add(4, bar(2, 120))
    assert forming.snapshot() == (4, merge(bar(1, 100), bar(2, 120)))
    assert forming.reach(5)
    assert forming.snapshot() == (5, Bar.filler(120))
    assert not forming.add(3, bar(0, 1))  # a closed window's trade
    assert forming.snapshot() == (5, Bar.filler(120))
    # The last trade of window 4, overtaken by the heartbeat: the close moves.
    assert forming.add(4, bar(3, 130))
    assert forming.snapshot() == (5, Bar.filler(130))
    assert pickle.loads(pickle.dumps(forming)) == forming


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """Trades (window, price) in window order, ids rising, and heartbeats ("reach", window) at
    any place: a heartbeat may overtake the trades before it."""
    windows = sorted(draw(st.lists(st.integers(0, 8), max_size=25)))
    events: list[tuple[str, int, int]] = [("trade", w, draw(st.integers(1, 99))) for w in windows]
    for _ in range(draw(st.integers(0, 6))):
        events.insert(draw(st.integers(0, len(events))), ("reach", draw(st.integers(0, 10)), 0))
    return events


@given(arrivals())
def test_the_snapshot_is_the_monoid_over_the_current_windows_trades_so_far(
    events: list[tuple[str, int, int]],
) -> None:
    forming = FormingWindow()
    seen: list[tuple[int, int, int]] = []  # (window, id, price)
    current = -1
    for kind, window, price in events:
        current = max(current, window)
        if kind == "trade":
            seen.append((window, len(seen) + 1, price))
            forming.add(window, bar(len(seen), price))
        else:
            forming.reach(window)
        in_current = [bar(i, p) for w, i, p in seen if w == current]
        earlier = [w for w, _, _ in seen if w < current]
        expected: tuple[int, Bar] | None = None
        if in_current:
            expected = (current, _fold(in_current))
        elif earlier:
            latest = _fold([bar(i, p) for w, i, p in seen if w == max(earlier)])
            expected = (current, Bar.filler(latest.close))
        assert forming.snapshot() == expected


def _fold(bars: list[Bar]) -> Bar:
    total = Bar()
    for one in bars:
        total = merge(total, one)
    return total
