"""The demo's time shift: whole minutes (every trade keeps its second, every bar its trades),
trades "now" and sent when they happen, never before, at any speed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.testing.exchange import RealTime
from binance_metrics.testing.market import MINUTE_MS, Burst, WholeMarket, shifted_to_now
from binance_metrics.trades import TradeMessage

RECORDED_AT = 1_572_000_000_000  # October 2019


@st.composite
def recordings(draw: st.DrawFn) -> list[TradeMessage]:
    """Trades over up to an hour, with Binance's own small delay between T and E."""
    times = sorted(draw(st.lists(st.integers(0, 3_600_000), min_size=1, max_size=40)))
    return [
        TradeMessage("trade", RECORDED_AT + t + draw(st.integers(0, 50)), "BTCUSDT", i,
                     "1.00000000", "1.00000000", RECORDED_AT + t, False)
        for i, t in enumerate(times)
    ]  # fmt: skip


@pytest.mark.parametrize("speed", [0.5, 1.0, 2.5, 10.0])
@given(trades=recordings(), now_ms=st.integers(1_700_000_000_000, 1_800_000_000_000))
def test_shifted_by_whole_minutes_sent_on_time_never_before_it_happened(
    speed: float, trades: list[TradeMessage], now_ms: int
) -> None:
    shifted = shifted_to_now(trades, speed, now_ms)
    shifts = {s.trade_time - t.trade_time_ms for s, t in zip(shifted, trades, strict=True)}
    (shift,) = shifts
    assert shift % MINUTE_MS == 0
    assert all(
        s.event_time - t.event_time_ms == shift for s, t in zip(shifted, trades, strict=True)
    )
    if speed == 1.0:
        # On the clock: each frame is sent at its own event time, so the latency is the
        # recording's own, after what is already due at the start (less than a minute) went.
        pace = RealTime(speed, on_the_clock=True)
        first = min(s.event_time for s in shifted)
        last = max(s.event_time for s in shifted)
        due = [pace.due_ms(s.event_time, first, last) for s in shifted]
        assert due == [s.event_time for s in shifted]
        assert now_ms - MINUTE_MS < min(due) <= now_ms
    else:
        # Paced from a market that opens now (or later, which only delays every frame).
        due = [now_ms + (s.trade_time - shifted[0].trade_time) / speed for s in shifted]
        # ... and the shift as large as that allows: the first frame is dated less than a
        # minute (plus how far a faster playback runs ahead) before the start.
        first, last = min(s.event_time for s in shifted), max(s.event_time for s in shifted)
        assert now_ms - first < MINUTE_MS + max(0, 1 - 1 / speed) * (last - first)
    # Never sent before it happened (no trade from the future, no bar dated ahead of time).
    assert all(d >= s.trade_time for d, s in zip(due, shifted, strict=True))


def test_a_whole_market_is_shaped_like_binances_volume_with_its_bursts() -> None:
    symbols = tuple(f"S{n:03d}USDT" for n in range(100))
    market = WholeMarket(symbols, rate=2000, seconds=20, bursts=(Burst(10, 5, 4),), seed=3)
    trades = market.trades(start_ms=1_000_000)
    per_symbol: dict[str, list[int]] = {}
    for trade in trades:
        per_symbol.setdefault(trade.symbol, []).append(trade.id)
        assert trade.data["s"] == trade.symbol and trade.data["T"] == trade.trade_time
    # Each symbol's ids run 1, 2, 3, ... in time order: a market with no gap.
    assert all(ids == list(range(1, len(ids) + 1)) for ids in per_symbol.values())
    assert [t.trade_time for t in trades] == sorted(t.trade_time for t in trades)
    # Zipf: the busiest symbol about twice the second, the top ten most of the trades' third.
    counts = [len(per_symbol.get(s, [])) for s in symbols]
    assert counts[0] > 1.6 * counts[1] and sum(counts[:10]) > 0.5 * sum(counts)
    # 2,000 a second, four times that for five seconds: 20 * 2,000 + 5 * 6,000 = 70,000.
    assert 66_000 < len(trades) < 74_000
    in_burst = sum(1 for t in trades if 1_010_000 <= t.trade_time < 1_015_000)
    assert 36_000 < in_burst < 44_000
