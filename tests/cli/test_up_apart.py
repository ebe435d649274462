"""``up --exchange replay:`` (the demo) and ``up`` (live) as a user runs them, one after the other
in one directory: the demo writes its own store and says it is a replay; its recording ends
cleanly; the live run, with Binance unreachable, says so plainly and never sees a demo bar."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from binance_metrics.demo import demo_data_dir
from binance_metrics.kafka.broker import free_port
from binance_metrics.recordings import read_recording
from binance_metrics.trades import TradeMessage
from tests.cli.support import CLI, cli_env
from tests.pipeline.support import wait_for
from tests.support.data import DATA

CAPTURE = DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"


class Running:
    """``binance-metrics ARGS`` in its own process, its log in a file."""

    def __init__(self, cwd: Path, port: int, *args: str, **settings: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = cwd / f"up-{port}.log"
        env = {**cli_env(cwd / "data", **settings), "PYTHONUNBUFFERED": "1"}
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [*CLI, "up", "--symbols", "BTCUSDT", "--port", str(port), *args],
            env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", timeout=10)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(120)
        finally:
            self._log.close()


def stored(cwd: Path, data_dir: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [*CLI, "bars", "--symbol", "BTCUSDT", "--format", "json"],
        env=cli_env(data_dir), cwd=cwd, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if result.returncode == 2 and "BTCUSDT: no spot bars stored for it" in result.stderr:
        return []  # bars refuses a symbol the store has no bar of (a usage error)
    assert result.returncode == 0, result.stderr[-3000:]
    bars: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return bars


def test_the_demo_then_live_leaves_no_demo_bar_in_the_live_store(tmp_path: Path) -> None:
    trades = [r for r in read_recording(CAPTURE) if isinstance(r, TradeMessage)]
    # A watchdog of 2 s, as a real exchange's silence would trip it: the demo must not.
    demo = Running(
        tmp_path, free_port(), "--exchange", f"replay:{CAPTURE}", "--speed", "60",
        INGEST__SILENCE_TIMEOUT_S="2",
    )  # fmt: skip
    try:
        wait_for(lambda: demo.get("/health").status_code == 200, 90, "a healthy demo")
        exchange = demo.get("/health").json()["exchange"]
        assert exchange["replayed"] is True and exchange["files"] == [CAPTURE.name], exchange
        assert exchange["store"] == str(demo_data_dir(tmp_path / "data")), exchange
        wait_for(lambda: demo.get("/health").json()["produced"] == len(trades), 90, "all trades")
        wait_for(lambda: demo.get("/health").json()["exchange"]["ended"], 60, "the end")
        # After the end: the connection stays, /health stays 200, no reconnect (watched for
        # longer than the watchdog's 2 s would take to trip).
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            health = demo.get("/health")
            assert health.status_code == 200, health.text
            time.sleep(0.5)
        assert health.json()["reconnects"] == 0
        feeds = demo.get("/api/status").json()["feeds"]
        assert feeds["BTCUSDT"]["state"] == "ended", feeds
    finally:
        assert demo.stop() == 0, demo.log()[-3000:]
    log = demo.log()
    assert "DEMO: replaying" in log and "not live Binance data" in log, log[-3000:]
    assert "DEMO: the recording has ended" in log and "silent" not in log, log[-3000:]
    demo_bars = stored(tmp_path, tmp_path / "data" / "demo")
    assert len(demo_bars) >= 10
    # At 60 times the recording's pace, still no bar dated in the future.
    assert max(bar["open_time"] for bar in demo_bars) <= time.time() * 1000

    # Live, with Binance unreachable (a name that never resolves).
    live = Running(
        tmp_path, free_port(), BINANCE_WS_URL="wss://stream.binance.invalid:9443/stream",
        BINANCE_REST_URL="https://api.binance.invalid",
    )  # fmt: skip
    try:
        line = wait_for(
            lambda: next((ln for ln in live.log().splitlines() if "cannot reach" in ln), None),
            90, "the log line saying Binance is unreachable",
        )  # fmt: skip
        assert "cannot reach stream.binance.invalid:9443: DNS lookup failed (gaierror" in line
        assert "`make demo`" in line, line
        health = wait_for(lambda: live.get("/health"), 30, "/health")
        assert health.status_code == 503
        body = health.json()
        assert body["exchange"]["replayed"] is False
        assert any("cannot reach stream.binance.invalid:9443" in p for p in body["problems"])
        assert body["feeds"]["BTCUSDT"]["state"] == "unreachable", body["feeds"]
        assert body["feeds"]["BTCUSDT"]["reason"].startswith("cannot reach stream.binance.invalid")
        page = live.get("/api/status").json()
        assert page["feeds"] == body["feeds"] and page["exchange"]["replayed"] is False
    finally:
        assert live.stop() == 0, live.log()[-3000:]
    assert stored(tmp_path, tmp_path / "data") == [], "a demo bar in the live store"
    assert stored(tmp_path, tmp_path / "data" / "demo") == demo_bars


def test_up_against_a_refused_port_names_it(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    live = Running(tmp_path, free_port(), BINANCE_WS_URL=f"ws://127.0.0.1:{port}/stream")
    try:
        wait_for(
            lambda: f"cannot reach 127.0.0.1:{port}: connection refused" in live.log(),
            90, "the refused connection in the log",
        )  # fmt: skip
        problems = wait_for(lambda: live.get("/health").json()["problems"], 30, "problems")
        assert f"connection 0 is not connected: cannot reach 127.0.0.1:{port}: connection " in (
            " ".join(problems)
        ), problems
    finally:
        assert live.stop() == 0, live.log()[-3000:]


def test_the_demo_refuses_a_clickhouse_server(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "up", "--exchange", f"replay:{CAPTURE}"],
        env={**cli_env(tmp_path / "data"), "CLICKHOUSE_URL": "http://127.0.0.1:1"},
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("binance-metrics: --exchange replay: writes time-shifted demo bars")
    ), result.stderr
