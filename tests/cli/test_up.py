"""``binance-metrics up`` end to end, as a user runs it: its own process, the embedded broker and
store, the ingestor on a local exchange replaying a real capture, Ctrl-C, then ``bars``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from binance_metrics.demo import demo_data_dir
from binance_metrics.export import plain as _plain
from binance_metrics.kafka.broker import free_port
from binance_metrics.recordings import read_recording
from binance_metrics.trades import TradeMessage
from tests.cli.support import error_line, run_cli
from tests.pipeline.support import Up, assert_bars_equal_reference, wait_for
from tests.support.data import BTCUSDT_FUTURES_CAPTURE, DATA
from tests.support.oracle import FIELDS, MINUTE_MS, reference_klines

CAPTURE = DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"
CLI = [sys.executable, "-m", "binance_metrics.cli"]


def test_up_ingests_a_replayed_capture_into_exact_bars(tmp_path: Path) -> None:
    trades = [r for r in read_recording(CAPTURE) if isinstance(r, TradeMessage)]
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL", "SYMBOLS"):
        env.pop(name, None)
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [*CLI, "up", "--exchange", f"replay:{CAPTURE}", "--speed", "60", "--symbols", "BTCUSDT",
         "--port", str(port)],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{base}/health").status_code == 200, 60, "healthy ingestor")
        wait_for(
            lambda: httpx.get(f"{base}/health").json()["produced"] == len(trades),
            60, "every trade of the capture produced",
        )  # fmt: skip
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "plotly" in page.text
        assert "binance_metrics_dataflow_trades_total" in httpx.get(f"{base}/metrics").text
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0, (tmp_path / "up.log").read_text()[-3000:]

    demo_store = {**env, "DATA_DIR": str(demo_data_dir(tmp_path / "data"))}
    bars = subprocess.run(
        [*CLI, "bars", "--symbol", "BTCUSDT", "--format", "json"],
        env=demo_store, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    stored = json.loads(bars.stdout)
    expected = sorted(reference_klines(trades).items())
    assert len(stored) == len(expected)
    shift = stored[0]["open_time"] - expected[0][0][1]
    assert shift % MINUTE_MS == 0, "the local exchange moves time by whole minutes"
    for bar, ((_, start), fields) in zip(stored, expected, strict=True):
        assert bar["open_time"] == start + shift
        assert {name: bar[name] for name in FIELDS} == {
            name: value if name == "trade_count" else _plain(value)
            for name, value in fields.items()
        }


FAILING_DATAFLOW = """
import signal, sys, threading, time
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource
from binance_metrics.up import _DataflowThread

terminated = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: terminated.set())
flow = Dataflow("failing")
op.inspect("boom", op.input("in", flow, TestingSource([1])), lambda *_: 1 / 0)
thread = _DataflowThread(flow, threading.Event())
thread.start()
thread.join()
time.sleep(0.2)
print(type(thread.error).__name__, terminated.is_set())
"""


def test_a_dataflow_that_dies_stops_the_whole_process() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FAILING_DATAFLOW], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["BytewaxRuntimeError", "True"], result.stderr[-2000:]


def test_exchange_replay_of_aggregate_trades_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    agg = DATA / "XRPETH-aggTrades-2019-10-11_2019-10-12.csv"
    line = error_line(run_cli(tmp_path, "up", "--exchange", f"replay:{CAPTURE},{agg}"), 2)
    assert line == (
        f"binance-metrics: {agg}: holds aggregate trades (a data.binance.vision aggTrades CSV), "
        "which cannot be sent as @trade frames; --exchange replay: needs raw @trade recordings: "
        "JSON lines of @trade frames or a trade-stream CSV (TimestampOfReceive,Stream,...); a "
        "data.binance.vision trades CSV works too"
    )
    assert not (tmp_path / "data").exists(), "neither the store nor the broker may start"


def test_exchange_replay_of_a_klines_file_names_the_file(tmp_path: Path) -> None:
    klines = DATA / "BTCUSDT-1m-2020-01-01.csv"
    line = error_line(run_cli(tmp_path, "up", "--exchange", f"replay:{klines}"), 2)
    assert line.startswith(f"binance-metrics: {klines}: this is a klines file (12 columns)")
    assert "--exchange replay: needs raw @trade recordings" in line


def test_up_on_usdm_futures_makes_bars_of_the_market_trades(tmp_path: Path) -> None:
    """``MARKET=um``: the local exchange serves the futures paths and frames (with ``X``); the
    insurance-fund trade of the capture is in Kafka but in no bar."""
    trades = [r for r in read_recording(BTCUSDT_FUTURES_CAPTURE) if isinstance(r, TradeMessage)]
    up = Up(tmp_path, BTCUSDT_FUTURES_CAPTURE, speed=60, port=free_port(), MARKET="um",
            SYMBOLS="BTCUSDT")  # fmt: skip
    try:
        wait_for(lambda: up.health().status_code == 200, 60, "a healthy ingestor")
        wait_for(lambda: up.produced() == len(trades), 60, "every trade of the capture produced")
        assert up.stop() == 0, up.log()[-3000:]
    finally:
        up.kill()
    market = [t for t in trades if t.trade_type == "MARKET"]
    assert len(market) == len(trades) - 1
    assert_bars_equal_reference(up.stored_bars("BTCUSDT"), market)
