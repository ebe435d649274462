"""A failing store is visible within seconds, and a batch job fails instead of hanging.

The failure is the engine's own: ClickHouse's MergeTree setting
``min_free_disk_bytes_to_perform_insert`` set beyond any disk makes every insert fail with
NOT_ENOUGH_SPACE, exactly as a full disk does; setting it back to 0 ends the "outage". chDB
serves a directory to one process, so each test runs the command in a process of its own, with
its own DATA_DIR, and ``up`` takes the statements on its stdin (tests/pipeline/support.py).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from binance_metrics.kafka.broker import free_port
from binance_metrics.recordings import read_recording
from binance_metrics.trades import TradeMessage
from tests.cli.support import error_line, on_the_store, run_cli
from tests.pipeline.support import (
    FILL_DISK,
    FREE_DISK,
    Up,
    assert_bars_equal_reference,
    wait_for,
)
from tests.support.data import DATA

CAPTURE = DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"
XRPETH_TRADES = DATA / "XRPETH-aggTrades-2019-10-11_2019-10-12.csv"


def _degraded(up: Up) -> dict[str, Any] | None:
    response = up.health()
    body: dict[str, Any] = response.json()
    return body if response.status_code == 503 and not body["store"]["ok"] else None


def test_replay_into_a_full_store_fails_with_one_line(tmp_path: Path) -> None:
    # The setting is kept in the table's metadata: the replay's own process finds it.
    on_the_store(tmp_path, FILL_DISK)
    result = run_cli(tmp_path, "replay", str(XRPETH_TRADES), STORE_GIVE_UP_S="2")

    line = error_line(result, 1, alone=False)
    assert line.startswith("binance-metrics: error: giving up with "), line
    assert " bar updates not written: the store has failed for " in line, line
    assert "(NOT_ENOUGH_SPACE)" in line, line


def test_up_reports_a_full_store_on_health_and_loses_no_trade(tmp_path: Path) -> None:
    trades = [r for r in read_recording(CAPTURE) if isinstance(r, TradeMessage)]
    up = Up(tmp_path, CAPTURE, speed=30, port=free_port(), SYMBOLS="BTCUSDT")
    try:
        wait_for(lambda: up.health().status_code == 200, 60, "a healthy ingestor")
        assert up.health().json()["store"] == {"ok": True, "problem": None}
        wait_for(lambda: up.produced() >= 2000, 60, "trades flowing")
        up.store(FILL_DISK)
        body = wait_for(lambda: _degraded(up), 60, "/health to report the full store")
        assert body["status"] == "degraded"
        assert "(NOT_ENOUGH_SPACE)" in body["store"]["problem"]
        assert [p for p in body["problems"] if p.startswith("store: writes failing for ")]
        assert up.produced() < len(trades), "the capture ended before the outage was seen"

        up.store(FREE_DISK)
        wait_for(lambda: up.health().status_code == 200, 120, "/health ok once writes succeed")
        assert up.health().json()["store"] == {"ok": True, "problem": None}
        wait_for(lambda: up.produced() == len(trades), 120, "every trade produced")
        assert up.stop() == 0, up.log()[-3000:]
    finally:
        up.kill()

    assert_bars_equal_reference(up.stored_bars("BTCUSDT"), trades)


def test_up_stopped_while_the_store_is_full_exits_1_with_one_line(tmp_path: Path) -> None:
    up = Up(tmp_path, CAPTURE, speed=30, port=free_port(), SYMBOLS="BTCUSDT")
    try:
        wait_for(lambda: up.health().status_code == 200, 60, "a healthy ingestor")
        up.store(FILL_DISK)
        wait_for(lambda: _degraded(up), 60, "/health to report the full store")
        code = up.stop(signal.SIGINT)
    finally:
        up.kill()

    log = up.log()
    assert code == 1, log[-3000:]
    assert "Traceback" not in log and "panicked" not in log, log[-3000:]
    line = log.splitlines()[-1]
    assert line.startswith("binance-metrics: error: stopping with "), line
    assert " bar updates not written: the store fails (" in line, line
    assert "(NOT_ENOUGH_SPACE)" in line, line
