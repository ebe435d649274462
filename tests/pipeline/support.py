"""What the pipeline tests share: many trades, producing them, and ``up`` as its own process."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from binance_metrics.demo import demo_data_dir
from binance_metrics.export import plain as _plain
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.replay import make_producer
from binance_metrics.trades import TradeMessage, encode_trade, format_scaled
from tests.cli.support import CLI, cli_env
from tests.support.oracle import FIELDS, MINUTE_MS, reference_klines

BASE_TIME_MS = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC

#: ``binance-metrics up`` (its real ``main``, in the main thread) with one more thread that runs
#: each line of stdin as a statement on the store ``up`` holds, and answers "done" on stdout:
#: chDB serves its directory to one process, so this is the honest way to make that store full.
UP_WITH_STORE_CONTROL = """
import sys, threading
from binance_metrics.cli import main
from binance_metrics.demo import demo_data_dir
from binance_metrics.settings import load_settings
from binance_metrics.store.clickhouse import open_store

def control():
    # The store up --exchange replay: writes: the demo's own.
    dsn = load_settings(DATA_DIR=demo_data_dir(load_settings().DATA_DIR)).clickhouse_dsn
    for line in sys.stdin:
        open_store(dsn, "spot").command(line)
        print("done", flush=True)

threading.Thread(target=control, daemon=True).start()
sys.exit(main(sys.argv[1:]))
"""

#: The MergeTree setting that makes every insert fail with NOT_ENOUGH_SPACE, as a full disk
#: does; 0 ends the "outage".
FULL = "ALTER TABLE binance.ohlcv MODIFY SETTING min_free_disk_bytes_to_perform_insert = {}"
FILL_DISK = FULL.format(10**18)
FREE_DISK = FULL.format(0)
#: A slow store, the engine's own way: ClickHouse delays an insert into a partition that holds
#: more parts than ``parts_to_delay_insert``, and merges are off, so every insert waits 1.5 s.
SLOW_INSERTS = (
    "SYSTEM STOP MERGES binance.ohlcv",
    "ALTER TABLE binance.ohlcv MODIFY SETTING parts_to_delay_insert = 1, "
    "min_delay_to_insert_ms = 1500, max_delay_to_insert = 2",
)


def many_trades(
    count: int, symbols: Sequence[str] = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
) -> list[TradeMessage]:
    """``count`` raw trades spread over the symbols, ids consecutive per symbol, a few ms apart
    (so many minutes), exact decimal prices and quantities; the same list at every call."""
    rng = random.Random(count)
    ids = dict.fromkeys(symbols, 1000)
    times = dict.fromkeys(symbols, BASE_TIME_MS)
    trades = []
    for _ in range(count):
        symbol = rng.choice(symbols)
        times[symbol] += rng.choice([0, 1, 5, 20, 60])
        ids[symbol] += 1
        trades.append(
            TradeMessage(
                event_type="trade",
                event_time_ms=times[symbol],
                symbol=symbol,
                trade_id=ids[symbol],
                price=format_scaled(rng.randint(10**8, 10**13)),
                quantity=format_scaled(rng.randint(1, 10**10)),
                trade_time_ms=times[symbol],
                buyer_is_maker=rng.random() < 0.5,
            )
        )
    return trades


def produce(kafka: KafkaConnection, topic: str, trades: Iterable[TradeMessage]) -> None:
    """Produce ``trades`` keyed by symbol (as the ingestor does) and wait until all are taken."""
    producer = make_producer(kafka)
    for trade in trades:
        while True:
            try:
                producer.produce(topic, key=trade.symbol.encode(), value=encode_trade(trade))
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """The first true value of ``condition`` (an HTTP error counts as false)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = condition()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Up:
    """``binance-metrics up --exchange replay:...`` in its own process and DATA_DIR."""

    def __init__(self, cwd: Path, capture: Path, speed: float, port: int, **settings: str):
        self.cwd = cwd
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = cwd / "up.log"
        self.env = {**cli_env(cwd / "data", **settings), "PYTHONUNBUFFERED": "1"}
        args = ["up", "--exchange", f"replay:{capture}", "--speed", str(speed), "--port", str(port)]
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", UP_WITH_STORE_CONTROL, *args],
            env=self.env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, text=True,
        )  # fmt: skip

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.base}/health", timeout=5)

    def produced(self) -> int:
        return int(self.health().json()["produced"])

    def store(self, statement: str) -> None:
        """Run ``statement`` on the store, inside ``up``'s process."""
        stdin: IO[str] | None = self.process.stdin
        stdout: IO[str] | None = self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(statement + "\n")
        stdin.flush()
        assert stdout.readline().strip() == "done", self.log()

    def stop(self, signum: int = signal.SIGINT) -> int:
        """Signal ``up``, wait for it to exit; its exit status."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(120)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text()

    def last_produced_count(self) -> int:
        """The ingestor's own count, from its last line: "ingestor stopped: N trades produced"."""
        (line,) = [ln for ln in self.log().splitlines() if "ingestor stopped:" in ln]
        return int(line.split("ingestor stopped: ")[1].split(" trades produced")[0])

    def stored_bars(self, symbol: str) -> list[dict[str, Any]]:
        """``binance-metrics bars`` on this run's demo store (``up`` must have exited)."""
        env = {**self.env, "DATA_DIR": str(demo_data_dir(self.cwd / "data"))}
        bars = subprocess.run(
            [*CLI, "bars", "--symbol", symbol, "--format", "json"],
            env=env, cwd=self.cwd, capture_output=True, text=True, check=True,
        )  # fmt: skip
        result: list[dict[str, Any]] = json.loads(bars.stdout)
        return result


def assert_bars_equal_reference(stored: list[dict[str, Any]], trades: list[TradeMessage]) -> None:
    """``bars --format json`` output equals the reference klines of ``trades`` on every field,
    up to the whole minutes by which the local exchange moves time."""
    expected = sorted(reference_klines(trades).items())
    assert len(stored) == len(expected)
    shift = stored[0]["open_time"] - expected[0][0][1]
    assert shift % MINUTE_MS == 0
    for bar, ((_, start), fields) in zip(stored, expected, strict=True):
        assert bar["open_time"] == start + shift
        assert {name: bar[name] for name in FIELDS} == {
            name: value if name == "trade_count" else _plain(value)
            for name, value in fields.items()
        }
