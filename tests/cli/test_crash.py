"""``kill -9`` of ``binance-metrics up`` at random moments, restarted each time, against a local
exchange (in this process) whose market keeps trading while the pipeline is down: in the end the
stored bars equal the reference klines of every trade the exchange made, each trade once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import httpx
import msgspec

from binance_metrics.kafka.broker import free_port
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.market import MarketTrade, load_trades
from binance_metrics.trades import TradeMessage
from tests.cli.support import CLI, cli_env
from tests.pipeline.support import assert_bars_equal_reference, wait_for
from tests.support.data import DATA

CAPTURES = [
    DATA / f"{symbol}-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"
    for symbol in ("BTCUSDT", "ETHUSDT")
]
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SPEED = 10.0  # the 11 minutes of the captures in about 65 s
KILLS = 5
SEED = int(os.environ.get("CRASH_SEED", "20240809"))


def as_message(trade: MarketTrade) -> TradeMessage:
    return msgspec.json.decode(json.dumps(trade.data), type=TradeMessage)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class UpRuns:
    """``binance-metrics up`` on the local exchange, started again and again in one DATA_DIR."""

    def __init__(self, tmp_path: Path, exchange: LocalExchange) -> None:
        self.cwd = tmp_path
        self.port = free_port()
        self.env = {
            **cli_env(
                tmp_path / "data",
                BINANCE_WS_URL=exchange.ws_url,
                BINANCE_REST_URL=exchange.rest_url,
                SYMBOLS=",".join(SYMBOLS),
                RECONNECT_DELAY_S="0.2",
                MAX_RECONNECT_DELAY_S="1",
                # The sped-up market runs ahead of the clock and is moved back (replaying).
                INGEST__MAX_TRADE_TIME_SKEW_S="0",
                INGEST__BACKFILL_GRACE_S="0.2",
                INGEST__TAIL_CHECK_S="1",
                INGEST__QUIET_AFTER_S="2",
            ),
            "PYTHONUNBUFFERED": "1",
        }
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        log = (self.cwd / f"up-{self.runs}.log").open("wb")
        self.process = subprocess.Popen(
            [*CLI, "up", "--port", str(self.port)], env=self.env, cwd=self.cwd,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self.process

    def kill(self) -> list[int]:
        """``kill -9``; return the pids of its children (the broker) at that moment."""
        assert self.process is not None
        children = children_of(self.process.pid)
        self.process.kill()
        self.process.wait(30)
        return children

    def logs(self) -> str:
        return "\n".join(
            f"--- run {i}\n" + (self.cwd / f"up-{i}.log").read_text()[-3000:]
            for i in range(1, self.runs + 1)
        )

    def stored_trades(self) -> int:
        total = 0
        for symbol in SYMBOLS:
            body = httpx.get(
                f"http://127.0.0.1:{self.port}/api/bars",
                params={"symbol": symbol, "interval": "1h", "limit": 100}, timeout=10,
            ).json()  # fmt: skip
            total += sum(bar["trade_count"] for bar in body["bars"])
        return total

    def stored_bars(self, symbol: str) -> list[dict[str, object]]:
        bars = subprocess.run(
            [*CLI, "bars", "--symbol", symbol, "--format", "json"],
            env=self.env, cwd=self.cwd, capture_output=True, text=True, check=True,
        )  # fmt: skip
        result: list[dict[str, object]] = json.loads(bars.stdout)
        return result


def test_kill_9_of_up_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    plan = [(round(rng.uniform(1.0, 9.0), 2), round(rng.uniform(0.5, 3.0), 2)) for _ in range(KILLS)]
    # Printed with every failure: the moments (seconds after each start) and the downtimes.
    context = f"seed {SEED}, kill plan (after start s, down s): {plan}"
    trades = load_trades(CAPTURES)
    with LocalExchange.replaying(trades, SPEED) as exchange:
        exchange.ping_interval_s = exchange.ping_timeout_s = 2.0
        runs = UpRuns(tmp_path, exchange)
        try:
            for after_s, down_s in plan:
                runs.start()
                time.sleep(after_s)
                assert runs.process is not None and runs.process.poll() is None, (
                    f"{context}\n{runs.logs()}"
                )
                orphans = runs.kill()
                wait_for(
                    lambda: not any(alive(pid) for pid in orphans), 30,
                    f"the broker {orphans} to die with its parent ({context})",
                )  # fmt: skip
                time.sleep(down_s)  # the market trades on
            runs.start()
            exchange.wait_done(300)
            total = len(exchange.trades)
            wait_for(
                lambda: runs.stored_trades() >= total, 180,
                f"all {total} trades in the stored bars ({context})",
            )  # fmt: skip
            assert runs.process is not None
            runs.process.send_signal(signal.SIGINT)
            assert runs.process.wait(120) == 0, f"{context}\n{runs.logs()}"
        finally:
            if runs.process is not None and runs.process.poll() is None:
                runs.process.kill()
    happened = [as_message(trade) for trade in exchange.trades]
    for symbol in SYMBOLS:
        stored = runs.stored_bars(symbol)
        expected = [t for t in happened if t.symbol == symbol]
        released = len(expected)
        counted = sum(int(str(bar["trade_count"])) for bar in stored)
        print(f"{symbol}: {released} trades released, {counted} counted in the stored bars")
        try:
            assert_bars_equal_reference(stored, expected)
        except AssertionError as exc:
            raise AssertionError(f"{symbol}: {exc} ({context})\n{runs.logs()}") from exc
