"""Healing inside ``binance-metrics up``: a hole in the stored bars (a gap whose backfill was given
up) is found by the ledger, fetched over REST and produced again, and the bars come out exact; a
hole REST cannot fill stays reported, with its exact ids, on ``/health``, in the metrics and by
``audit``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from binance_metrics.testing.exchange import LocalExchange, RealTime
from binance_metrics.testing.faults import Drop, Fault
from binance_metrics.testing.market import load_trades, shifted_to_now
from tests.cli.local_up import UpRuns, as_message
from tests.cli.support import run_cli
from tests.pipeline.support import assert_bars_equal_reference, wait_for
from tests.support.data import BTCUSDT_CAPTURE

SPEED = 20.0
TRADES = 8000
DROPPED_AT, DROPPED = 3000, 300
#: The gap filler gives up after two failed REST calls; the ledger is checked every 2 s.
HEAL = {
    "INGEST__BACKFILL_MAX_ATTEMPTS": "2",
    "INGEST__BACKFILL_RETRY_BASE_S": "0.05",
    "INGEST__HEAL_EVERY_S": "2",
    "INGEST__HEAL_SETTLE_S": "0",
}


def exchange_with_a_lost_run(rest_errors: int) -> LocalExchange:
    """BTCUSDT trading on; ``DROPPED`` trades never sent live, and the first ``rest_errors``
    REST calls answered 500 (the gap filler's two tries among them: it gives the gap up)."""
    trades = shifted_to_now(load_trades([BTCUSDT_CAPTURE])[:TRADES], SPEED)
    return LocalExchange(
        trades, [Fault(DROPPED_AT, Drop(DROPPED))], pace=RealTime(SPEED), advance_when_idle=True,
        tail_guard=0, open_on_first_listener=True, rest_errors=[(500, 0.0)] * rest_errors,
    )  # fmt: skip


def missing_metric(runs: UpRuns) -> float:
    text = httpx.get(f"http://127.0.0.1:{runs.port}/metrics", timeout=10).text
    match = re.search(r'^binance_metrics_missing_trades\{symbol="BTCUSDT"\} (\S+)$', text, re.M)
    assert match, "binance_metrics_missing_trades is not exported"
    return float(match.group(1))


def test_a_hole_the_backfill_gave_up_is_healed_and_the_bars_are_exact(tmp_path: Path) -> None:
    with exchange_with_a_lost_run(rest_errors=2) as exchange:
        runs = UpRuns(tmp_path, exchange, ("BTCUSDT",), **HEAL)
        runs.start()
        try:
            exchange.wait_done(120)
            wait_for(lambda: runs.stored_trades() >= TRADES, 120, "every trade stored")
            health = runs.health()
            assert runs.stop() == 0, runs.logs()
        finally:
            if runs.process is not None and runs.process.poll() is None:
                runs.process.kill()
    dropped = [t.id for t in exchange.log.dropped]
    assert len(dropped) == DROPPED
    assert health["symbols"]["BTCUSDT"]["unfilled"] == DROPPED, "the gap filler gave the gap up"
    assert health["ledger"]["healedTrades"] >= DROPPED, health["ledger"]
    assert_bars_equal_reference(
        runs.stored_bars("BTCUSDT"), [as_message(t) for t in exchange.trades]
    )
    audit = run_cli(tmp_path, "audit", "--format", "json")
    assert (audit.returncode, json.loads(audit.stdout)) == (0, []), audit.stderr[-2000:]


def test_a_hole_rest_cannot_fill_is_reported_with_its_exact_ids(tmp_path: Path) -> None:
    with exchange_with_a_lost_run(rest_errors=10**6) as exchange:  # REST down for good
        runs = UpRuns(tmp_path, exchange, ("BTCUSDT",), **HEAL)
        runs.start()
        try:
            exchange.wait_done(120)
            wait_for(
                lambda: runs.stored_trades() >= TRADES - DROPPED, 120, "the other trades stored"
            )
            ledger = wait_for(
                lambda: (body := runs.health()["ledger"])["holes"]
                and body["holes"][0]["unfillable"] and body,
                60, "the hole reported as unfillable on /health",
            )  # fmt: skip
            missing = missing_metric(runs)
            assert runs.stop() == 0, runs.logs()
        finally:
            if runs.process is not None and runs.process.poll() is None:
                runs.process.kill()
    dropped = [t.id for t in exchange.log.dropped]
    (hole,) = ledger["holes"]
    assert (hole["kind"], hole["firstMissingId"], hole["lastMissingId"], hole["missingTrades"]) == (
        "gap", dropped[0], dropped[-1], DROPPED,
    )  # fmt: skip
    assert "REST failed" in hole["unfillable"]
    assert ledger["symbols"]["BTCUSDT"]["missingTrades"] == DROPPED
    assert ledger["symbols"]["BTCUSDT"]["completeThrough"] == hole["firstMinute"]
    assert missing == DROPPED
    audit = run_cli(tmp_path, "audit", "--format", "json")
    assert audit.returncode == 1, audit.stderr[-2000:]
    (audited,) = json.loads(audit.stdout)
    assert (audited["first_missing_id"], audited["last_missing_id"]) == (dropped[0], dropped[-1])
