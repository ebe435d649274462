"""Trade-id sequencing: whatever order and repetition trades arrive in, each is emitted once and
in id order, and gaps are reported for backfill."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.trades import TradeMessage


def trade(t: int, backfilled: bool = False) -> TradeMessage:
    return TradeMessage(
        event_type="trade",
        event_time_ms=1,
        symbol="BTCUSDT",
        trade_id=t,
        price="1.0",
        quantity="1.0",
        trade_time_ms=1,
        buyer_is_maker=False,
        backfilled=backfilled,
    )


def test_consecutive_trades_pass_straight_through() -> None:
    out: list[int] = []
    seq = SymbolSequence("BTCUSDT", lambda tr: out.append(tr.trade_id))
    for t in range(100, 110):
        assert seq.offer(trade(t)) is False
    assert out == list(range(100, 110)) and seq.gaps == 0


def test_gap_holds_later_trades_until_filled() -> None:
    out: list[int] = []
    seq = SymbolSequence("BTCUSDT", lambda tr: out.append(tr.trade_id))
    seq.offer(trade(1))
    assert seq.offer(trade(5)) is True  # gap 2..4
    assert seq.offer(trade(6)) is False  # same gap, extends the held run
    assert out == [1] and seq.missing == (2, 4)
    assert seq.fill([trade(t, True) for t in (2, 3, 4)]) == 3
    assert out == [1, 2, 3, 4, 5, 6] and seq.missing is None
    assert seq.backfilled == 3 and seq.gaps == 1


def test_backfill_never_doubles_a_trade_seen_live_meanwhile() -> None:
    out: list[int] = []
    seq = SymbolSequence("BTCUSDT", lambda tr: out.append(tr.trade_id))
    seq.offer(trade(1))
    seq.offer(trade(5))
    seq.offer(trade(2))  # arrived live (another connection) while REST was asked for 2..4
    assert seq.fill([trade(t, True) for t in (2, 3, 4, 5, 6)]) == 2  # 3, 4; not 2, not 5/6
    assert out == [1, 2, 3, 4, 5]


def test_giving_up_a_gap_releases_the_held_trades_and_counts_the_loss() -> None:
    out: list[int] = []
    seq = SymbolSequence("BTCUSDT", lambda tr: out.append(tr.trade_id))
    seq.offer(trade(1))
    seq.offer(trade(10))
    assert seq.skip_gap() == 8
    assert out == [1, 10] and seq.unfilled == 8


@given(st.permutations(list(range(40))), st.lists(st.integers(0, 39), max_size=40))
def test_any_arrival_order_with_repeats_then_backfill_is_exactly_once_in_order(
    order: list[int], repeats: list[int]
) -> None:
    out: list[int] = []
    seq = SymbolSequence("BTCUSDT", lambda tr: out.append(tr.trade_id))
    seq.offer(trade(0))
    arrivals = [t for t in order if t != 0] + repeats
    for t in arrivals:
        seq.offer(trade(t))
    while (gap := seq.missing) is not None:
        seq.fill([trade(t, True) for t in range(gap[0], gap[1] + 1)])
    highest = max(arrivals, default=0)
    assert out == list(range(highest + 1))


def test_a_resumed_sequence_opens_a_gap_over_the_downtime() -> None:
    out: list[int] = []
    seq = SymbolSequence("BTCUSDT", lambda tr: out.append(tr.trade_id))
    seq.resume_after(99)  # the last id already in Kafka
    assert seq.next_id == 100
    assert seq.offer(trade(99)) is False and seq.duplicates == 1  # already in Kafka
    assert seq.offer(trade(105)) is True and seq.missing == (100, 104)
    assert seq.fill([trade(t, True) for t in range(100, 105)]) == 5
    assert out == list(range(100, 106))


def test_a_resumed_sequence_continues_when_nothing_was_missed() -> None:
    out: list[int] = []
    seq = SymbolSequence("BTCUSDT", lambda tr: out.append(tr.trade_id))
    seq.resume_after(99)
    assert seq.offer(trade(100)) is False
    assert out == [100] and seq.gaps == 0


def test_resume_only_before_the_first_trade_and_can_start_afresh() -> None:
    seq = SymbolSequence("BTCUSDT", lambda tr: None)
    seq.offer(trade(1))
    with pytest.raises(RuntimeError):
        seq.resume_after(5)
    fresh = SymbolSequence("BTCUSDT", lambda tr: None)
    fresh.resume_after(1_000_000)
    fresh.start_afresh()
    assert fresh.next_id is None
    assert fresh.offer(trade(7)) is False and fresh.next_id == 8
    held = SymbolSequence("BTCUSDT", lambda tr: None)
    held.resume_after(10)
    held.offer(trade(20))  # held behind the gap 11..19
    with pytest.raises(RuntimeError):
        held.start_afresh()
