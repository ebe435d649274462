"""Memory is bounded: ``binance-metrics up`` as a user runs it (the embedded broker as its child),
against a local exchange in this process trading 200 symbols at 2,000 trades a second, shaped
like Binance's volume (a few symbols carry most trades), for four minutes.

The resident memory of every process is sampled ten times a second. After the warm-up the
``up`` process must be flat: its growth from the first half of the window to the second, per
trade made in between, is far below the 600 bytes a trade measured before. The broker, which
deletes nothing by itself, must stay within ``KAFKA_RETENTION_BYTES``: it is started afresh
when it holds more, and that loses nothing (every bar equals the reference, nothing needed
healing, the audit finds no hole).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from binance_metrics.testing.exchange import LocalExchange, RealTime
from binance_metrics.testing.market import WholeMarket
from tests.cli.local_up import UpRuns, as_message, children_of, rss_bytes
from tests.cli.support import run_cli
from tests.pipeline.support import assert_bars_equal_reference

SYMBOLS = tuple(f"M{n:03d}USDT" for n in range(200))
RATE = 2000.0  # trades a second, all symbols together
SECONDS = 240.0
LEAD_S = 25.0  # up starts (store, broker, dataflow, connections) before the market opens
#: Until then up's memory settles: the store's code paged in, its caches, the allocators'
#: free lists (measured: ~100 B a trade in the first two minutes, ~20 after three).
WARM_UP_S = 150.0
SAMPLE_EVERY_S = 0.1
RETENTION_BYTES = 32 << 20  # the smallest KAFKA_RETENTION_BYTES: reached within the run
#: Growth of ``up`` a trade: well below the 600 bytes measured before the bounds.
MAX_GROWTH_PER_TRADE = 100
#: What the broker may exceed its bound by: it is checked every 0.5 s and drained first.
BROKER_SLACK = 16 << 20


@dataclass(frozen=True)
class Sample:
    at: float  # time.time()
    happened: int  # trades the exchange made so far
    up: int  # RSS of the up process
    broker: int  # RSS of its children (the broker)
    brokers: tuple[int, ...]


@dataclass
class Run:
    opened_at: float
    total: int
    samples: list[Sample] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)
    bars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    expected: dict[str, list[Any]] = field(default_factory=dict)
    log: str = ""
    status: int | None = None
    audit: tuple[int, Any] = (0, None)


def sample(
    up_pid: int, exchange: LocalExchange, samples: list[Sample], stop: threading.Event
) -> None:
    while not stop.wait(SAMPLE_EVERY_S):
        children = tuple(children_of(up_pid))
        samples.append(
            Sample(time.time(), exchange.happened(), rss_bytes(up_pid),
                   sum(rss_bytes(pid) for pid in children), children)
        )  # fmt: skip


def stored_total(runs: UpRuns) -> int:
    try:
        return runs.stored_trades()
    except Exception:  # noqa: BLE001 - not ready yet
        return -1


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp_path: Path = tmp_path_factory.mktemp("memory")
    opened_at = time.time() + LEAD_S
    trades = WholeMarket(SYMBOLS, RATE, SECONDS).trades(int(opened_at * 1000))
    result = Run(opened_at, len(trades))
    with LocalExchange(
        trades, pace=RealTime(1.0, on_the_clock=True), ping_interval_s=20.0, ping_timeout_s=20.0
    ) as exchange:
        runs = UpRuns(
            tmp_path, exchange, SYMBOLS, KAFKA_RETENTION_BYTES=str(RETENTION_BYTES),
            RECONCILE_EVERY_S="0",  # this exchange serves no klines
        )  # fmt: skip
        up = runs.start()
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(up.pid, exchange, result.samples, stop))
        sampler.start()
        try:
            exchange.wait_done(LEAD_S + SECONDS + 180)
            deadline = time.monotonic() + 180
            while stored_total(runs) < len(trades) and time.monotonic() < deadline:
                time.sleep(2)
            result.health = runs.health()
        finally:
            stop.set()
            sampler.join()
            result.status = runs.stop() if up.poll() is None else up.returncode
        result.log = (tmp_path / "up-1.log").read_text()
    # For a look at a failure: every sample, as JSON.
    (tmp_path / "samples.json").write_text(json.dumps([vars(s) for s in result.samples]))
    result.bars = runs.stored_bars_of(SYMBOLS)
    for trade in trades:
        result.expected.setdefault(trade.symbol, []).append(as_message(trade))
    audit = run_cli(tmp_path, "audit", "--format", "json")
    result.audit = (audit.returncode, json.loads(audit.stdout or "null"))
    yield result


def halves(run: Run) -> tuple[list[Sample], list[Sample]]:
    window = [
        s for s in run.samples if s.at >= run.opened_at + WARM_UP_S and s.happened < run.total
    ]
    assert len(window) > 300, f"{len(window)} samples after the warm-up: the run was too short"
    middle = len(window) // 2
    return window[:middle], window[middle:]


def test_up_stays_flat_and_the_broker_within_its_retention(run: Run) -> None:
    first, second = halves(run)
    trades = statistics.median(s.happened for s in second) - statistics.median(
        s.happened for s in first
    )
    growth = statistics.median(s.up for s in second) - statistics.median(s.up for s in first)
    per_trade = growth / trades
    peak = max(s.broker for s in first + second)
    print(
        f"up: {statistics.median(s.up for s in first) / 2**20:.0f} -> "
        f"{statistics.median(s.up for s in second) / 2**20:.0f} MiB over {trades:.0f} trades "
        f"({per_trade:.1f} B/trade); broker peak {peak / 2**20:.0f} MiB"
    )
    assert trades > 50_000, "too few trades between the halves to measure growth"
    assert per_trade < MAX_GROWTH_PER_TRADE, f"up grows {per_trade:.0f} bytes a trade"
    assert peak <= RETENTION_BYTES + BROKER_SLACK, f"the broker reached {peak / 2**20:.0f} MiB"


def test_the_broker_started_afresh_for_its_size_and_nothing_was_lost(run: Run) -> None:
    assert run.status == 0, run.log
    assert "starting the embedded Kafka broker afresh" in run.log, run.log
    brokers = {pid for s in run.samples for pid in s.brokers}
    assert len(brokers) >= 2, "the broker was never started afresh"
    assert run.health["ledger"]["healedTrades"] == 0, run.health  # nothing had to be fetched
    for symbol in SYMBOLS:
        assert_bars_equal_reference(run.bars[symbol], run.expected[symbol])
    assert run.audit == (0, []), run.audit
