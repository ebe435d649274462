"""``binance-metrics up`` as its own process on a local exchange that runs in the test's process,
so that the market outlives every start, stop and ``kill -9`` of the pipeline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec

from binance_metrics.kafka.broker import free_port
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.market import MarketTrade
from binance_metrics.trades import TradeMessage
from tests.cli.support import CLI, cli_env


def as_message(trade: MarketTrade) -> TradeMessage:
    """The trade a local exchange made, as the pipeline's reference reads it."""
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


def rss_bytes(pid: int) -> int:
    """The resident memory of ``pid`` (Linux /proc), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


#: ``python -c ALL_BARS SYMBOL...``: the 1m bars of each symbol as ``bars --format json`` prints
#: them, as one JSON object by symbol: one process opens the store once for them all.
ALL_BARS = """
import io, json, sys
from binance_metrics.export import klines, write_text
from binance_metrics.settings import load_settings
from binance_metrics.store.clickhouse import open_store
from binance_metrics.store.queries import fetch_bars
settings = load_settings()
store, out = open_store(settings.clickhouse_dsn, settings.MARKET), {}
for symbol in sys.argv[1:]:
    text = io.StringIO()
    write_text(klines(symbol, fetch_bars(store, symbol), "1m"), "json", text)
    out[symbol] = json.loads(text.getvalue())
print(json.dumps(out))
"""


class UpRuns:
    """``binance-metrics up`` on the local exchange, started again and again in one DATA_DIR."""

    def __init__(
        self, tmp_path: Path, exchange: LocalExchange, symbols: tuple[str, ...], **settings: str
    ) -> None:
        self.cwd = tmp_path
        self.symbols = symbols
        self.port = free_port()
        self.env = {
            **cli_env(
                tmp_path / "data",
                BINANCE_WS_URL=exchange.ws_url,
                BINANCE_REST_URL=exchange.rest_url,
                SYMBOLS=",".join(symbols),
                RECONNECT_DELAY_S="0.2",
                MAX_RECONNECT_DELAY_S="1",
                # The sped-up market runs ahead of the clock and is moved back (replaying).
                INGEST__MAX_TRADE_TIME_SKEW_S="0",
                INGEST__BACKFILL_GRACE_S="0.2",
                INGEST__TAIL_CHECK_S="1",
                INGEST__QUIET_AFTER_S="2",
                **settings,
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
        for symbol in self.symbols:
            body = httpx.get(
                f"http://127.0.0.1:{self.port}/api/bars",
                params={"symbol": symbol, "interval": "1h", "limit": 100}, timeout=10,
            ).json()  # fmt: skip
            total += sum(bar["trade_count"] for bar in body["bars"])
        return total

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=10).json()
        return body

    def stop(self) -> int:
        """Ctrl-C; the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(120)

    def stored_bars_of(self, symbols: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
        """:meth:`stored_bars` of many symbols at once (``up`` stopped)."""
        result = subprocess.run(
            [sys.executable, "-c", ALL_BARS, *symbols],
            env=self.env, cwd=self.cwd, capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        bars: dict[str, list[dict[str, Any]]] = json.loads(result.stdout)
        return bars

    def stored_bars(self, symbol: str) -> list[dict[str, object]]:
        bars = subprocess.run(
            [*CLI, "bars", "--symbol", symbol, "--format", "json"],
            env=self.env, cwd=self.cwd, capture_output=True, text=True, check=True,
        )  # fmt: skip
        result: list[dict[str, object]] = json.loads(bars.stdout)
        return result
