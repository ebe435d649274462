"""The vectorised fold equals the monoid on every field: random trades of several symbols, ids
with repeats and holes, amounts up to 2**63 - 1 (every limb of the exact sums), any order, any
chunk boundaries, with and without COIN-M base quantities."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from binance_metrics.bars import Bar, merge
from binance_metrics.columnar import TradeColumns, fold_columns
from binance_metrics.fragments import FoldedTrade

WINDOW_MS = 60_000
BASE_MS = 1_723_161_600_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SHIBUSDT")
MAX_INT64 = 2**63 - 1

# symbol, first, last, price, qty, time, maker, base quantity (COIN-M; 0 elsewhere)
Row = tuple[int, int, int, int, int, int, bool, int]

amounts = st.one_of(
    st.integers(1, 10**13), st.integers(1, MAX_INT64), st.just(MAX_INT64), st.just(1)
)


@st.composite
def rows(draw: st.DrawFn) -> list[Row]:
    out: list[Row] = []
    coin_m = draw(st.booleans())
    for symbol in range(draw(st.integers(1, len(SYMBOLS)))):
        trade_id = draw(st.integers(0, 10**12))
        time_ms = BASE_MS + draw(st.integers(0, 59_999))
        for _ in range(draw(st.integers(1, 30))):
            span = draw(st.sampled_from([0, 0, 0, 1, 5]))  # 0: a raw trade
            time_ms += draw(st.sampled_from([0, 1, 700, 30_000, 61_000, 250_000]))
            base = draw(amounts) if coin_m else 0
            row = (symbol, trade_id, trade_id + span, draw(amounts), draw(amounts), time_ms,
                   draw(st.booleans()), base)  # fmt: skip
            out.append(row)
            trade_id += span + 1 + draw(st.sampled_from([0, 0, 0, 0, 3]))  # sometimes a hole
    # Repeats (a row twice, a file twice), then any order.
    out += draw(st.lists(st.sampled_from(out), max_size=8))
    return list(draw(st.permutations(out)))


def columns(chunk: list[Row]) -> TradeColumns:
    def column(k: int) -> npt.NDArray[np.int64]:
        return np.array([row[k] for row in chunk], dtype=np.int64)

    return TradeColumns(
        SYMBOLS,
        np.array([row[0] for row in chunk], dtype=np.int32),
        column(1),
        column(2),
        column(3),
        column(4),
        column(5),
        np.array([row[6] for row in chunk], dtype=np.bool_),
        column(7) if any(row[7] for row in chunk) else None,
    )


def monoid(chunk: list[Row]) -> dict[tuple[str, int], Bar]:
    """The plain fold: Bar.add per trade, per (symbol, window)."""
    bars: dict[tuple[str, int], Bar] = defaultdict(Bar)
    for symbol, first, last, price, qty, time_ms, maker, base in chunk:
        bars[(SYMBOLS[symbol], time_ms // WINDOW_MS)].add(price, qty, first, last, maker, base)
    return dict(bars)


@settings(max_examples=300, deadline=None)
@given(rows(), st.data())
def test_each_fragment_is_the_monoid_fold_of_its_trades(
    trades: list[Row], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(trades)), max_size=4)))
    chunks = [trades[a:b] for a, b in zip([0, *cuts], [*cuts, len(trades)], strict=True)]
    total: dict[tuple[str, int], Bar] = defaultdict(Bar)
    for chunk in chunks:
        folded = fold_columns(columns(chunk), WINDOW_MS)
        expected = monoid(chunk)
        assert sorted((f.symbol, f.window) for f in folded.fragments) == sorted(expected)
        assert folded.trades == sum(last - first + 1 for _, first, last, *_ in chunk)
        for index, fragment in enumerate(folded.fragments):
            key = (fragment.symbol, fragment.window)
            assert fragment.bar == expected[key], key  # every field of the bar
            mine = [r for r in chunk if (SYMBOLS[r[0]], r[5] // WINDOW_MS) == key]
            assert fragment.max_trade_time_ms == max(r[5] for r in mine)
            trades_of = folded.trades_of(index)
            assert sorted(fragment.trades or trades_of) == sorted(
                FoldedTrade(first, last, price, qty, maker, base)
                for _, first, last, price, qty, _, maker, base in mine
            )
            ids = sorted((r[1], r[2]) for r in mine)
            one_run = all(b[0] == a[1] + 1 for a, b in pairwise(ids))
            assert fragment.consecutive == one_run
            assert bool(fragment.trades) == (not one_run)  # kept back while consecutive
            total[key] = merge(total[key], fragment.bar)
    assert dict(total) == monoid(trades)


def test_a_window_of_more_rows_than_a_reduction_takes_comes_as_several_exact_fragments() -> None:
    n = 2**19 + 5
    chunk = TradeColumns(
        ["BTCUSDT"],
        np.zeros(n, np.int32),
        np.arange(n, dtype=np.int64),
        np.arange(n, dtype=np.int64),
        np.full(n, MAX_INT64, np.int64),
        np.full(n, MAX_INT64, np.int64),
        np.full(n, BASE_MS, np.int64),
        np.zeros(n, np.bool_),
        np.full(n, MAX_INT64, np.int64),
    )
    folded = fold_columns(chunk, WINDOW_MS)
    assert len(folded.fragments) == 2
    bar = merge(folded.fragments[0].bar, folded.fragments[1].bar)
    assert bar.quote_volume == bar.taker_buy_quote_volume == n * MAX_INT64 * MAX_INT64
    assert bar.volume == bar.base_volume == bar.taker_buy_base_volume == n * MAX_INT64
    assert (bar.trade_count, bar.first_trade_id, bar.last_trade_id) == (n, 0, n - 1)
