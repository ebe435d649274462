"""Klines of every Binance interval and time zone, read from the real store (chDB), equal a plain
Python rollup of the stored 1-minute bars, weeks and months across year ends included."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.intervals import parse_offset
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import INTERVALS, fetch_bars, intervals_for
from tests.support.oracle import FIELDS, as_fields, reference_open_time, reference_rollup

MINUTE = 60_000
DAY = 1440 * MINUTE
OFFSETS = [parse_offset(text) for text in ("0", "+08:00", "+05:45", "-03:30")]
SYMBOL = "ROLLUPUSDT"


@st.composite
def minute_bars(draw: st.DrawFn) -> dict[int, Bar]:
    """A few dozen 1-minute bars within 40 days of a year end: some with trades, some fillers,
    some in runs of consecutive minutes (so that short rollups hold several)."""
    year_end = datetime(draw(st.integers(2018, 2030)), 1, 1, tzinfo=UTC)
    centre = int(year_end.timestamp() * 1000)
    minutes = draw(st.lists(st.integers(-40 * 1440, 40 * 1440), min_size=1, max_size=25))
    runs = draw(st.lists(st.integers(0, 6), min_size=len(minutes), max_size=len(minutes)))
    starts = sorted(
        {
            centre + (m + i) * MINUTE
            for m, run in zip(minutes, runs, strict=True)
            for i in range(run + 1)
        }
    )
    bars: dict[int, Bar] = {}
    trade_id = 1
    for start in starts:
        if draw(st.integers(0, 3)) == 0:
            bars[start] = Bar.filler(draw(st.integers(1, 10**12)))
            continue
        bar = Bar()
        for _ in range(draw(st.integers(1, 3))):
            bar.add(
                price=draw(st.integers(1, 10**12)),
                qty=draw(st.integers(1, 10**13)),
                first_id=trade_id,
                last_id=trade_id,
                buyer_is_maker=draw(st.booleans()),
            )
            trade_id += 1
        bars[start] = bar
    return bars


def _fields(bar: Any) -> dict[str, Any]:
    return {name: getattr(bar, name) for name in FIELDS}


@pytest.mark.parametrize("offset", OFFSETS)
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(bars=minute_bars())
def test_every_interval_is_the_rollup_of_the_minutes(
    store: Store, offset: int, bars: dict[int, Bar]
) -> None:
    store.command("TRUNCATE TABLE binance.ohlcv")
    store.insert_bars([BarUpdate(SYMBOL, start, bar) for start, bar in bars.items()])
    minutes = {start: as_fields(bar) for start, bar in bars.items()}
    for interval in intervals_for(60):
        expected = reference_rollup(minutes, functools.partial(_open, interval, offset))
        stored = fetch_bars(store, SYMBOL, interval=interval, tz_offset_ms=offset)
        got = {bar.open_time_ms: _fields(bar) for bar in stored}
        assert got == expected, (interval, offset)


def test_a_range_holds_the_bars_opening_in_it_whole(empty_store: Store) -> None:
    # 2024-12-30 is a Monday: the week runs into 2025, the month of December ends inside it.
    monday = int(datetime(2024, 12, 30, tzinfo=UTC).timestamp() * 1000)
    empty_store.insert_bars(
        [
            BarUpdate(SYMBOL, monday + day * DAY, Bar().add(5, 7, day + 9, day + 9, False))
            for day in range(-3, 10)
        ]
    )
    week = fetch_bars(empty_store, SYMBOL, interval="1w", start=_utc(monday), end=_utc(monday + 1))
    assert [(b.open_time_ms, b.trade_count) for b in week] == [(monday, 7)]
    # A start inside a bar leaves that bar out rather than returning a part of it.
    assert fetch_bars(empty_store, SYMBOL, interval="1w", start=_utc(monday + 1)) == [
        b for b in fetch_bars(empty_store, SYMBOL, interval="1w") if b.open_time_ms > monday
    ]
    months = fetch_bars(empty_store, SYMBOL, interval="1M", limit=1)
    assert [(b.open_time.isoformat(), b.trade_count) for b in months] == [
        ("2025-01-01T00:00:00+00:00", 8)
    ]


@pytest.mark.parametrize("limit", [1, 2, 3, 5])
def test_the_most_recent_bars_across_a_hole_in_the_history(empty_store: Store, limit: int) -> None:
    # Ten minutes on 2024-01-10, ten on 2024-03-10 (two hours), nothing between.
    jan, mar = (int(datetime(2024, m, 10, tzinfo=UTC).timestamp() * 1000) for m in (1, 3))
    starts = [jan + i * MINUTE for i in range(10)] + [mar + i * 12 * MINUTE for i in range(10)]
    empty_store.insert_bars(
        [BarUpdate(SYMBOL, t, Bar().add(9, 1, n + 1, n + 1, True)) for n, t in enumerate(starts)]
    )
    everything = fetch_bars(empty_store, SYMBOL, interval="1h")
    assert [b.trade_count for b in everything] == [10, 5, 5]
    assert fetch_bars(empty_store, SYMBOL, interval="1h", limit=limit) == everything[-limit:]


def test_1s_needs_the_1s_bars() -> None:
    assert "1s" not in intervals_for(60) and intervals_for(1) == list(INTERVALS)
    with pytest.raises(ValueError, match=r"unknown interval '1s'.*need WINDOW_SECONDS=1"):
        fetch_bars(None, SYMBOL, interval="1s")  # type: ignore[arg-type]  # refused before use


def _open(interval: str, offset: int, time_ms: int) -> int:
    return reference_open_time(time_ms, interval, offset)


def _utc(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


UPGRADE = """
import sys
import clickhouse_connect
from binance_metrics.store.clickhouse import SCHEMA_PATH, open_store, split_sql
from binance_metrics.store.queries import fetch_bars
dsn = sys.argv[1]
# A store made by the release before the klines views: up to the ohlcv_rollup view.
old = SCHEMA_PATH.read_text("utf-8").split("-- 1-second bars")[0]
client = clickhouse_connect.get_client(dsn=dsn)
for statement in split_sql(old):
    client.command(statement)
client.command("INSERT INTO binance.ohlcv (market, symbol, window_start, open, high, low, close, "
               "volume, quote_volume, trade_count, taker_buy_volume, taker_buy_quote_volume, "
               "first_trade_id, last_trade_id, trade_ids) VALUES ('spot', 'OLDUSDT', "
               "'2024-01-03 10:00:00', 1, 2, 1, 2, 5, 10, 3, 1, 2, 1, 3, [(1, 3)])")
client.close()
store = open_store(dsn, 'spot')
(week,) = fetch_bars(store, "OLDUSDT", interval="1w")
print(week.open_time.isoformat(), week.trade_count, week.high)
"""


def test_a_store_of_the_previous_release_gains_the_klines_views(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_URL"}
    done = subprocess.run(
        [sys.executable, "-c", UPGRADE, dsn], env=env, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["2024-01-01T00:00:00+00:00", "3", "2.00000000"]
