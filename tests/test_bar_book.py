"""The bar book: fragments of a symbol's windows, in any order, become complete bars, with Binance's
zero-trade bars between them, and the book forgets windows older than its history."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterable

from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.bar_book import BarBook, WindowBar
from binance_metrics.bars import Bar
from binance_metrics.fragments import FoldedTrade, Fragment
from binance_metrics.trades import TradeMessage
from tests.support.oracle import MINUTE_MS, as_fields, reference_klines
from tests.support.strategies import symbol_trades

SYMBOL = "BTCUSDT"


def bar(*trades: tuple[int, int]) -> Bar:
    """The bar of ``(trade id, price)`` trades, each of quantity 1."""
    folded = Bar()
    for trade_id, price in trades:
        folded.add(price, 1, trade_id, trade_id, buyer_is_maker=False)
    return folded


def fillers(windows: Iterable[int], close: int) -> list[WindowBar]:
    return [WindowBar(window, Bar.filler(close)) for window in windows]


def test_the_first_fragment_is_its_bar_alone() -> None:
    book = BarBook(history=10)
    assert book.update(5, bar((1, 100))).bars == [WindowBar(5, bar((1, 100)))]


def test_a_second_fragment_of_a_window_emits_the_merged_bar_never_the_fragment() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100), (2, 110)))
    assert book.update(5, bar((3, 90))).bars == [WindowBar(5, bar((1, 100), (2, 110), (3, 90)))]


def test_an_empty_fragment_changes_nothing() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100)))
    assert book.update(6, Bar()).bars == []
    assert book.windows == [5]


def test_windows_without_trades_before_a_new_bar_carry_the_previous_close() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100), (2, 120)))
    assert book.update(8, bar((3, 130))).bars == [
        *fillers([6, 7], 120),
        WindowBar(8, bar((3, 130))),
    ]


def test_a_late_trade_that_changes_a_close_emits_the_fillers_after_it_again() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100)))
    book.update(8, bar((4, 130)))
    assert book.update(5, bar((2, 105))).bars == [
        WindowBar(5, bar((1, 100), (2, 105))),
        *fillers([6, 7], 105),
    ]


def test_a_late_trade_that_keeps_the_close_emits_its_bar_alone() -> None:
    book = BarBook(history=10)
    book.update(5, bar((2, 100)))
    book.update(8, bar((4, 130)))
    assert book.update(5, bar((1, 105))).bars == [WindowBar(5, bar((1, 105), (2, 100)))]


def test_a_late_trade_in_a_filler_window_fills_the_windows_after_it_with_its_close() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100)))
    book.update(9, bar((5, 130)))
    assert book.update(7, bar((3, 110))).bars == [WindowBar(7, bar((3, 110))), *fillers([8], 110)]


def test_a_window_before_every_other_gets_no_fillers_before_it() -> None:
    book = BarBook(history=10)
    book.update(5, bar((3, 100)))
    assert book.update(2, bar((1, 90))).bars == [WindowBar(2, bar((1, 90))), *fillers([3, 4], 90)]


def test_windows_more_than_history_behind_the_newest_are_forgotten() -> None:
    book = BarBook(history=2)
    for window in (1, 2, 3):
        book.update(window, bar((window, 100)))
    assert book.windows == [1, 2, 3]
    book.update(4, bar((4, 100)))
    assert book.windows == sorted(book.bars) == [2, 3, 4]
    book.update(10, bar((10, 100)))
    assert book.windows == sorted(book.bars) == [10]


def test_the_book_survives_a_pickle_round_trip() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100)))
    book.update(8, bar((2, 110)))
    restored = pickle.loads(pickle.dumps(book))
    assert restored == book
    assert restored.update(9, bar((3, 120))).bars == book.update(9, bar((3, 120))).bars


@st.composite
def shuffled_fragments(draw: st.DrawFn) -> list[tuple[int, list[TradeMessage]]]:
    """One symbol's trades cut into fragments ``(window, trades)``, in any order: several
    fragments per window, as several input batches and late trades make them."""
    fragments: list[tuple[int, list[TradeMessage]]] = []
    by_window: dict[int, list[TradeMessage]] = {}
    for trade in draw(symbol_trades(SYMBOL)):
        by_window.setdefault(trade.trade_time_ms // MINUTE_MS, []).append(trade)
    for window, trades in by_window.items():
        cuts = draw(st.lists(st.integers(0, len(trades)), max_size=3))
        edges = sorted({0, len(trades), *cuts})
        fragments += [(window, trades[a:b]) for a, b in itertools.pairwise(edges)]
    return draw(st.permutations(fragments))


def feed(
    book: BarBook, fragments: list[tuple[int, list[TradeMessage]]]
) -> tuple[list[WindowBar], list[TradeMessage]]:
    """Every update of the book, and the trades it was given: as upstream, a fragment of a window
    more than ``history`` behind the newest is not given to it."""
    updates: list[WindowBar] = []
    admitted: list[TradeMessage] = []
    newest: int | None = None
    for window, trades in fragments:
        if newest is not None and window < newest - book.history:
            continue
        newest = window if newest is None else max(newest, window)
        fragment = Bar()
        for trade in trades:
            fragment.add_trade(trade)
        updates += book.update(window, fragment).bars
        admitted += trades
    return updates, admitted


@given(shuffled_fragments(), st.integers(min_value=0, max_value=200))
def test_the_last_version_of_every_window_is_the_reference_bar(
    fragments: list[tuple[int, list[TradeMessage]]], history: int
) -> None:
    updates, admitted = feed(BarBook(history=history), fragments)
    last = {window * MINUTE_MS: bar for window, bar in updates}
    expected = {start: fields for (_, start), fields in reference_klines(admitted).items()}
    assert set(last) == set(expected), "bars for other windows than the reference"
    for start, fields in expected.items():
        assert as_fields(last[start]) == fields, f"window at {start} differs"


@given(shuffled_fragments(), st.integers(min_value=0, max_value=20))
def test_the_book_holds_exactly_the_windows_of_its_history(
    fragments: list[tuple[int, list[TradeMessage]]], history: int
) -> None:
    book = BarBook(history=history)
    _, admitted = feed(book, fragments)
    windows = {trade.trade_time_ms // MINUTE_MS for trade in admitted}
    assert book.windows == sorted(book.bars)
    assert set(book.bars) == {window for window in windows if window >= max(windows) - history}


def _fragment(window: int, *trades: tuple[int, int], backfilled: bool) -> Fragment:
    folded = bar(*trades)
    folded_trades = [FoldedTrade(i, i, price, 1, False) for i, price in trades]
    return Fragment(SYMBOL, window, folded, 0, folded_trades, backfilled=backfilled)


def test_backfilled_trades_of_a_minute_before_the_first_held_go_to_the_stored_bar() -> None:
    # A restarted dataflow holds minutes from 10 on; trades of minute 5 fetched over REST (a hole
    # healed) belong to the bar an earlier run stored: forwarded, never a bar of their own.
    book = BarBook(history=100)
    book.update(10, bar((50, 100)))
    healed = _fragment(5, (7, 90), (8, 95), backfilled=True)
    update = book.update(5, healed)
    assert update.forward is healed and update.bars == []
    assert book.windows == [10]


def test_live_trades_of_a_minute_before_the_first_held_are_the_books_to_merge() -> None:
    book = BarBook(history=100)
    book.update(10, bar((50, 100)))
    late = _fragment(8, (7, 90), backfilled=False)
    update = book.update(8, late)
    assert update.forward is None
    assert update.bars == [WindowBar(8, bar((7, 90))), *fillers([9], 90)]


# -- windows after the last bar: closed without trades, and vouched for by the feed --------


def test_a_quiet_window_is_filled_once_closed_and_vouched_for_in_either_order() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100), (2, 120)))
    assert book.close_quiet(6).bars == []  # closed, not vouched for yet
    assert book.confirm(6).bars == fillers([6], 120)
    assert book.confirm(7).bars == []  # vouched for, not closed yet
    assert book.close_quiet(7).bars == fillers([7], 120)


def test_a_vouched_window_fills_the_quiet_windows_since_the_last_filled_one() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100)))
    book.close_quiet(6)
    book.close_quiet(8)  # 7 opened no window (an outage?): 8 being vouched for covers it
    assert book.confirm(8).bars == fillers([6, 7, 8], 100)
    assert book.confirm(9).bars == []


def test_a_window_closed_during_an_outage_waits_for_the_next_trade() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100)))
    book.confirm(5)
    assert book.close_quiet(6).bars == []  # the feed stopped in window 6: never vouched
    # The next trade (id 2, right after id 1) shows that nothing came in between.
    assert book.update(9, bar((2, 90))).bars == [
        *fillers([6, 7, 8], 100),
        WindowBar(9, bar((2, 90))),
    ]
    assert book.closed_quiet == []


def test_nothing_is_filled_before_the_first_bar() -> None:
    book = BarBook(history=10)
    book.confirm(3)
    assert book.close_quiet(2).bars == []
    assert book.close_quiet(3).bars == []


def test_a_late_trade_in_a_filled_quiet_window_re_emits_the_fillers_after_it() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100)))
    book.confirm(9)
    for window in range(6, 10):
        book.close_quiet(window)
    assert book.filled_through == 9
    assert book.update(7, bar((2, 130))).bars == [
        WindowBar(7, bar((2, 130))),
        *fillers([8, 9], 130),
    ]
    # A trade changing the close of the last bar re-emits them too; the next bar only what is new.
    assert book.update(7, bar((3, 140))).bars == [
        WindowBar(7, bar((2, 130), (3, 140))), *fillers([8, 9], 140),
    ]  # fmt: skip
    assert book.update(11, bar((4, 150))).bars == [
        *fillers([10], 140),
        WindowBar(11, bar((4, 150))),
    ]


@st.composite
def quiet_schedules(draw: st.DrawFn) -> tuple[list[int | None], list[bool], list[tuple[str, int]]]:
    """Windows 0..n: each with a trade's price or none, with the feed vouching for it or not,
    and the events the book gets in an order the dataflow can deliver them in."""
    n = draw(st.integers(min_value=1, max_value=12))
    prices = draw(st.lists(st.one_of(st.none(), st.integers(1, 50)), min_size=n, max_size=n))
    vouched = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    events: list[tuple[str, int]] = []
    for window in range(n):
        close = ("bar", window) if prices[window] is not None else ("quiet", window)
        confirm = [("confirm", window)] if vouched[window] else []
        # A heartbeat reaches the book before or after its window's close (never a trade).
        pair = [close, *confirm] if draw(st.booleans()) else [*confirm, close]
        if prices[window] is None and not vouched[window] and not draw(st.booleans()):
            pair = [e for e in pair if e[0] != "quiet"]  # no heartbeat in it: no window at all
        events += pair
    return prices, vouched, events


@given(quiet_schedules())
def test_quiet_windows_are_filled_exactly_when_known_empty(
    schedule: tuple[list[int | None], list[bool], list[tuple[str, int]]],
) -> None:
    prices, vouched, events = schedule
    book = BarBook(history=100)
    written: dict[int, Bar] = {}
    traded: dict[int, Bar] = {}
    for kind, window in events:
        if kind == "bar":
            price = prices[window]
            assert price is not None
            traded[window] = bar((len(traded) + 1, price))
            update = book.update(window, traded[window])
        elif kind == "quiet":
            update = book.close_quiet(window)
        else:
            update = book.confirm(window)
        for window_bar in update.bars:
            # Never a filler for a window with a trade, never one beyond what is known empty.
            assert prices[window_bar.window] is None or not window_bar.bar.is_empty
            written[window_bar.window] = window_bar.bar
    if not traded:
        assert written == {}
        return
    # Known to be empty: a window before the last trade, or one up to the last window after it
    # that closed without a trade and that the feed vouched for.
    closed = {w for kind, w in events if kind == "quiet"}
    last = max(traded)
    known = max([w for w in closed if w > last and vouched[w]], default=last)
    expected: dict[int, Bar] = {}
    close = 0
    for window in range(min(traded), known + 1):
        if window in traded:
            close = traded[window].close
            expected[window] = traded[window]
        else:
            expected[window] = Bar.filler(close)
    assert written == expected


def test_a_book_snapshotted_before_quiet_windows_existed_is_restored_and_works() -> None:
    book = BarBook(history=10)
    book.update(5, bar((1, 100)))
    for name in ("confirmed", "closed_quiet", "filled_through"):
        del book.__dict__[name]  # the state as an older release pickled it
    restored = pickle.loads(pickle.dumps(book))
    restored.close_quiet(6)
    assert restored.confirm(6).bars == fillers([6], 100)
