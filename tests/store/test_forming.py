"""Forming bars in the store: shown after the closed bars while their window is newer, never in
place of a closed bar, whatever the order in which closed bars and snapshots are written."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.forming import FormingUpdate
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.forming import insert_forming
from binance_metrics.store.queries import fetch_bars
from tests.support.oracle import FIELDS

MINUTE_MS = 60_000
T0 = 1_723_161_600_000
_symbols = itertools.count()


def bar(minute: int, trades: int) -> Bar:
    """A bar of ``trades`` trades (ids consecutive), its close telling minute and count apart."""
    folded = Bar()
    for i in range(trades):
        folded.add(10**8 * (minute + 1) + trades, 10**8, minute * 1000 + i, minute * 1000 + i, True)
    return folded


# A write: ("closed" | "forming", minute, trade count). Forming snapshots of a minute grow.
writes = st.lists(
    st.tuples(st.sampled_from(["closed", "forming"]), st.integers(0, 3), st.integers(1, 4)),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes)
def test_a_closed_bar_is_never_replaced_by_a_forming_version(
    store: Store, schedule: list[tuple[str, int, int]]
) -> None:
    symbol = f"FORMING{next(_symbols)}USDT"
    closed: dict[int, Bar] = {}
    forming: tuple[int, int, Bar] | None = None  # (minute, trades, bar) the table keeps
    for kind, minute, trades in schedule:
        start = T0 + minute * MINUTE_MS
        written = bar(minute, trades)
        if kind == "closed":
            store.insert_bars([BarUpdate(symbol, start, written)])
            if minute not in closed or trades >= closed[minute].trade_count:
                closed[minute] = written
        else:
            insert_forming(store, [FormingUpdate(symbol, start, written)])
            if forming is None or (minute, trades) >= forming[:2]:
                forming = (minute, trades, written)
        shown = fetch_bars(store, symbol, include_open=True)
        expected = [(T0 + m * MINUTE_MS, b, True) for m, b in sorted(closed.items())]
        if forming is not None and (not closed or forming[0] > max(closed)):
            expected.append((T0 + forming[0] * MINUTE_MS, forming[2], False))
        got = [(b.open_time_ms, b.close, b.trade_count, b.closed) for b in shown]
        assert got == [(t, _dec(b.close), b.trade_count, c) for t, b, c in expected]
        for stored in shown:
            assert (stored.first_trade_id, stored.last_trade_id) == (
                (stored.open_time_ms - T0) // MINUTE_MS * 1000,
                (stored.open_time_ms - T0) // MINUTE_MS * 1000 + stored.trade_count - 1,
            )


def _dec(value: int) -> object:
    return Bar(close=value).decimals()["close"]


def test_limit_counts_the_forming_bar_and_rollups_mark_their_open_last_bar(store: Store) -> None:
    symbol = f"FORMING{next(_symbols)}USDT"
    store.insert_bars([BarUpdate(symbol, T0 + m * MINUTE_MS, bar(m, 2)) for m in range(7)])
    insert_forming(store, [FormingUpdate(symbol, T0 + 7 * MINUTE_MS, bar(7, 1))])
    shown = fetch_bars(store, symbol, include_open=True, limit=3)
    assert [(b.open_time_ms - T0) // MINUTE_MS for b in shown] == [5, 6, 7]
    assert [b.closed for b in shown] == [True, True, False]
    assert [b.closed for b in fetch_bars(store, symbol, limit=3)] == [True, True, True]
    five = fetch_bars(store, symbol, interval="5m", include_open=True)
    # 00:00-00:05 is complete; 00:05-00:10 has minutes 5 and 6 only: still open.
    assert [b.closed for b in five] == [True, False]


@pytest.mark.parametrize(
    ("closed_trades", "forming_trades"),
    [([2, 0, 3, 1, 0, 2, 0], 3), ([2, 0, 3, 1, 0, 0, 0], 0), ([1, 0, 0, 0, 0, 0, 0], 4),
     ([1, 0, 0, 0, 0, 2, 1], 0)],
)  # fmt: skip
def test_a_rollup_holds_the_forming_minute_as_the_view_will_once_it_closed(
    store: Store, closed_trades: list[int], forming_trades: int
) -> None:
    """Minutes 0..6 closed (0 trades: a filler), minute 7 forming: the last 5-minute bar
    (minutes 5..9) is exactly the view's once minute 7 is closed with the same trades."""
    symbol = f"FORMING{next(_symbols)}USDT"
    closed = [
        BarUpdate(symbol, T0 + m * MINUTE_MS, _sized(m, n)) for m, n in enumerate(closed_trades)
    ]
    close = [b.bar.close for b in closed if not b.bar.is_empty][-1]
    seventh = _sized(7, forming_trades) if forming_trades else Bar.filler(close)
    for i, update in enumerate(closed):  # fillers carry the previous close
        if update.bar.is_empty:
            before = [b.bar.close for b in closed[:i] if not b.bar.is_empty][-1]
            closed[i] = BarUpdate(symbol, update.window_start_ms, Bar.filler(before))
    store.insert_bars(closed)
    insert_forming(store, [FormingUpdate(symbol, T0 + 7 * MINUTE_MS, seventh)])
    shown = fetch_bars(store, symbol, interval="5m", include_open=True)
    assert [b.closed for b in shown] == [True, False]
    store.insert_bars([BarUpdate(symbol, T0 + 7 * MINUTE_MS, seventh)])
    expected = fetch_bars(store, symbol, interval="5m")
    assert [{n: getattr(b, n) for n in FIELDS} for b in shown] == [
        {n: getattr(b, n) for n in FIELDS} for b in expected
    ]


def _sized(minute: int, trades: int) -> Bar:
    """``trades`` trades of odd prices and large quantities (quote volumes beyond 28 digits)."""
    folded = Bar()
    for i in range(trades):
        price = 10**8 * (50 + (minute * 7 + i * 3) % 11) + 12_345_678
        folded.add(price, 10**19 + 987_654_321, minute * 1000 + i, minute * 1000 + i, i % 2 == 0)
    return folded


def test_without_the_forming_table_the_closed_bars_are_still_served(tmp_path: Path) -> None:
    """A server whose administrator has not created the table yet (docs/operations.md)."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_FORMING_TABLE, f"chdb://{tmp_path}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["1", "True"]
    assert "no forming bar (closed bars only)" in result.stderr


#: In a process of its own: chDB serves one directory per process (the session's is open).
WITHOUT_FORMING_TABLE = """
import sys
from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.store.clickhouse import open_store
from binance_metrics.store.queries import fetch_bars
store = open_store(sys.argv[1], 'spot')
store.command("DROP TABLE binance.ohlcv_forming")
store.insert_bars([BarUpdate("BTCUSDT", 1723161600000, Bar().add(1, 1, 1, 1, True))])
bars = fetch_bars(store, "BTCUSDT", include_open=True)
print(len(bars), bars[0].closed)
"""
