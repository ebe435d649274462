"""A restart loses no trade: the new ingestor resumes after the last trade id in Kafka and
backfills what the exchange traded while nobody listened; a resume gap too large is given up."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from binance_metrics.ingest.resume import Resume, TailScan
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.ingest.tuning import IngestTuning
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.testing.exchange import LocalExchange, RestCall
from binance_metrics.testing.faults import Fault, Hold
from binance_metrics.testing.market import MarketTrade, merge_by_event_time

from .captures import real_trades
from .harness import (
    assert_exactly_once_in_order,
    read_topic,
    running_ingestor,
    settings_for,
    trades_of,
    wait_until,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT")
#: The first 3000 trades of both captures on one timeline (both symbols trade to the end).
TRADES = merge_by_event_time(*(real_trades(s) for s in SYMBOLS))[:3000]
#: The first ingestor sees the trades before this index, then stops.
STOP_AT = 1000
TAIL_GUARD = 50  # the exchange waits for a listener before its last 50 trades (LocalExchange)
SEEN_BEFORE = TRADES[:STOP_AT]
UNSEEN = TRADES[STOP_AT : len(TRADES) - TAIL_GUARD]  # traded while no ingestor ran
SEEN_AFTER = TRADES[len(TRADES) - TAIL_GUARD :]


def by_symbol(trades: list[MarketTrade]) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {s: [] for s in SYMBOLS}
    for trade in trades:
        ids[trade.symbol].append(trade.id)
    return ids


def test_the_scenario_covers_both_symbols_in_every_phase() -> None:
    for phase in (SEEN_BEFORE, UNSEEN, SEEN_AFTER):
        assert all(by_symbol(phase).values()), "each symbol must trade in each phase"


@dataclass
class Restarted:
    records: list[tuple[int, bytes | None, bytes]]
    health: dict[str, Any]  # the second ingestor's /health
    rest_calls: list[RestCall]


def run_with_restart(
    broker: EmbeddedBroker, prefix: str, second: dict[str, object], expected: int = len(TRADES)
) -> Restarted:
    """Ingest TRADES[:STOP_AT], stop; the market trades UNSEEN; a new ingestor takes over.

    ``second`` is the new ingestor's tuning (over FAST). The topic is read until ``expected``
    records are in (and a moment more, for extras).
    """
    release = threading.Event()
    hold = Hold(release)
    bootstrap = broker.bootstrap_servers
    with LocalExchange(
        TRADES, [Fault(STOP_AT, hold)], advance_when_idle=True, tail_guard=TAIL_GUARD
    ) as exchange:
        settings = settings_for(exchange, prefix, SYMBOLS)
        with running_ingestor(settings, bootstrap) as first:
            assert hold.reached.wait(20), "the market never reached the stop point"
            wait_until(
                lambda: first.health()[1]["produced"] == STOP_AT, 20, "first run not all acked"
            )
        # The first ingestor is stopped (flushed, connection closed): trades now go unseen.
        release.set()
        wait_until(
            lambda: exchange.happened() == len(TRADES) - TAIL_GUARD,
            20,
            "the market did not trade on while nobody listened",
        )
        # The same topics, a port of its own.
        with running_ingestor(settings_for(exchange, prefix, SYMBOLS, **second), bootstrap) as app:
            exchange.wait_done(30)
            records = read_topic(bootstrap, settings.KAFKA_TOPIC, expected)

            def settled() -> bool:
                symbols = app.health()[1]["symbols"]
                return all(symbols[s]["heldBehindGap"] == 0 for s in SYMBOLS)

            wait_until(settled, 20, "trades still held behind a gap")
            _, health = app.health()
        with exchange.lock:
            rest_calls = list(exchange.log.rest_calls)
    return Restarted(records, health, rest_calls)


def test_restart_resumes_where_kafka_ends_and_loses_no_trade(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    # A small tail bound: the resume starts at Tansu's (low) high watermark - 50, reads to EOF.
    run = run_with_restart(broker, topic_prefix, {"resume_tail_records": 50})

    assert_exactly_once_in_order(trades_of(run.records), TRADES)
    before, unseen = by_symbol(SEEN_BEFORE), by_symbol(UNSEEN)
    for symbol in SYMBOLS:
        state = run.health["symbols"][symbol]
        assert state["resumedAfter"] == before[symbol][-1]
        assert state["backfilled"] == len(unseen[symbol])
        assert state["unfilled"] == 0 and state["gaps"] == 1
        first_call = next(c for c in run.rest_calls if c.symbol == symbol)
        assert first_call.from_id == before[symbol][-1] + 1, "backfill must start after Kafka"
    backfilled = {t.trade_id for t in trades_of(run.records) if t.backfilled}
    assert backfilled == {t.id for t in UNSEEN}


def test_without_resume_the_downtime_is_lost(broker: EmbeddedBroker, topic_prefix: str) -> None:
    """The control: the scenario really loses trades when the resume is off."""
    kept = len(SEEN_BEFORE) + len(SEEN_AFTER)
    run = run_with_restart(broker, topic_prefix, {"resume_from_kafka": False}, expected=kept)
    got = {t.trade_id for t in trades_of(run.records)}
    assert got == {t.id for t in SEEN_BEFORE + SEEN_AFTER}
    assert not run.rest_calls


def test_a_resume_gap_above_the_cap_is_given_up_and_counted(
    broker: EmbeddedBroker, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    unseen = by_symbol(UNSEEN)
    cap = min(len(ids) for ids in unseen.values()) - 1
    expected = len(SEEN_BEFORE) + len(SEEN_AFTER)
    with caplog.at_level(logging.ERROR, logger="binance_metrics.ingest"):
        run = run_with_restart(broker, topic_prefix, {"max_resume_gap": cap}, expected)

    assert_exactly_once_in_order(trades_of(run.records), SEEN_BEFORE + SEEN_AFTER)
    assert not run.rest_calls, "a gap above max_resume_gap must not be fetched"
    for symbol in SYMBOLS:
        state = run.health["symbols"][symbol]
        assert state["unfilled"] == len(unseen[symbol]) and state["backfilled"] == 0
        assert state["heldBehindGap"] == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert sum("max_resume_gap" in e for e in errors) == len(SYMBOLS), errors


def test_the_first_live_trade_after_a_resume_is_judged_once() -> None:
    """Without a network: a gap within the cap is backfilled, above it given up, and a live
    stream far behind Kafka's last id (another stream's topic) starts afresh."""

    def resumed_after(last: int) -> tuple[Resume, SymbolSequence]:
        resume = Resume("trades", IngestTuning(max_resume_gap=100))
        sequence = SymbolSequence("BTCUSDT", lambda trade: None)
        resume.apply(TailScan(last_ids={"BTCUSDT": last}), {"BTCUSDT": sequence})
        assert resume.after == {"BTCUSDT": last} and resume.awaiting == {"BTCUSDT": last + 1}
        assert sequence.next_id == last + 1
        return resume, sequence

    resume, sequence = resumed_after(1000)
    assert resume.judge(sequence, 1101) is None  # 100 missed: fetch
    assert resume.awaiting == {} and resume.after == {"BTCUSDT": 1000}  # judged once
    resume, sequence = resumed_after(1000)
    assert "max_resume_gap" in (resume.judge(sequence, 1102) or "")  # 101 missed: give up
    resume, sequence = resumed_after(1000)
    assert resume.judge(sequence, 950) is None and sequence.next_id == 1001  # duplicates, kept
    resume, sequence = resumed_after(1000)
    assert resume.judge(sequence, 899) is None and sequence.next_id is None  # far behind: afresh


def test_a_failed_tail_read_resumes_nothing() -> None:
    resume = Resume("trades", IngestTuning())
    sequence = SymbolSequence("BTCUSDT", lambda trade: None)
    resume.apply(TailScan(last_ids={"BTCUSDT": 5}, error="timed out"), {"BTCUSDT": sequence})
    assert resume.after == {} and resume.awaiting == {} and sequence.next_id is None
