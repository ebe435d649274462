"""The cost at scale: the whole market through ``binance-metrics up`` as users run it.

    python benchmarks/market_bench.py [--minutes 10] [--symbols 2000] [--rate 5000]
        [--burst-factor 10] [--burst-minutes 1] [--baseline-seconds 30]

A local exchange (in this process) lists ``--symbols`` symbols in ``exchangeInfo`` and trades
them at ``--rate`` trades a second in all, spread like Binance's volume (Zipf: a few symbols
carry most trades, :class:`~binance_metrics.testing.market.WholeMarket`), with a burst of
``--burst-factor`` times the rate for ``--burst-minutes`` in the middle of the run. Trade times
are "now": each frame goes at its own trade time ``T``. ``binance-metrics up`` runs in its own
process with ``SYMBOLS=ALL``, the embedded broker (its child) and the embedded store, as a user
runs it. Measured:

* **baseline** (same invocation, first): a bare WebSocket client subscribed to every stream,
  reading each frame and nothing else, on the same market shape for ``--baseline-seconds``: what
  receiving the frames costs at all. The ingestor's CPU per trade is reported against it;
* **ingestor CPU**: ``up``'s main thread (the event loop: WebSocket frames, sequencing, produce)
  in CPU seconds, its share of one core over the run, and per trade; the whole process and the
  broker besides (the dataflow and the store share the process and its GIL);
* **memory**: the resident memory of every process, each minute;
* **latency**: trade time ``T`` to the trade visible through ``/api/bars`` (the forming bar's
  ``last_trade_id`` reaches it, or its closed bar appears), for a sample of symbols (the five
  busiest and five of the tail) polled every ``--poll-ms``; p50 / p99;
* **every bar right**: after ``up`` stopped (Ctrl-C: it writes everything), the stored 1m bars of
  every symbol equal a plain reference of the trades the exchange made, and
  ``binance-metrics audit`` exits 0.

The exchange keeps the whole market in memory (about 1 KB a trade): ``--minutes 60`` at 5,000
trades a second needs about 20 GB here.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from binance_metrics.kafka.broker import free_port
from binance_metrics.testing.bars_poller import poll_bars
from binance_metrics.testing.exchange import LocalExchange, RealTime
from binance_metrics.testing.market import Burst, MarketTrade, WholeMarket

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' helpers: up's processes, the plain reference
from tests.cli.local_up import ALL_BARS, as_message, children_of, rss_bytes  # noqa: E402
from tests.support.oracle import FIELDS, reference_klines  # noqa: E402

MINUTE_MS = 60_000
#: ``up`` starts (store, broker, dataflow, exchangeInfo, connections) before the market opens.
LEAD_S = 40.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (or one of its threads), 0 once gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def symbols_of(count: int) -> tuple[str, ...]:
    return tuple(f"W{n:04d}USDT" for n in range(count))


# -- baseline: a bare client ------------------------------------------------------------------


async def bare_client(url: str, streams: Sequence[str], total: int) -> None:
    """Subscribe to every stream (1024 a connection), read ``total`` trade frames, and print the
    CPU seconds used from the first to the last (start-up left out)."""
    seen = 0
    first_cpu = 0.0
    done = asyncio.Event()

    async def read(part: Sequence[str]) -> None:
        nonlocal seen, first_cpu
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": list(part), "id": 1}))
            async for message in ws:
                text = message if isinstance(message, str) else message.decode()
                if '"e":"trade"' in text:
                    seen += 1
                    if seen == 1:
                        first_cpu = time.process_time()
                    if seen >= total:
                        done.set()
                        return

    tasks = [asyncio.create_task(read(streams[i : i + 1024])) for i in range(0, len(streams), 1024)]
    await done.wait()
    print(json.dumps({"cpu_s": time.process_time() - first_cpu, "trades": seen}))
    for task in tasks:
        task.cancel()


def baseline(symbols: Sequence[str], rate: float, seconds: float) -> float:
    """CPU seconds per trade of a bare client process reading the market's frames."""
    start_ms = now_ms() + 5_000
    trades = WholeMarket(symbols, rate, seconds, seed=11).trades(start_ms)
    streams = [f"{s.lower()}@trade" for s in symbols]
    with LocalExchange(trades, pace=RealTime(1.0, on_the_clock=True), ping_interval_s=20.0,
                       ping_timeout_s=20.0) as exchange:  # fmt: skip
        script = (
            "import asyncio, json, sys; sys.path.insert(0, sys.argv[1]); "
            "from market_bench import bare_client; "
            "asyncio.run(bare_client(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])))"
        )
        client = subprocess.run(
            [sys.executable, "-c", script, str(REPO / "benchmarks"), exchange.ws_url,
             json.dumps(streams), str(len(trades))],
            capture_output=True, text=True, check=True, timeout=seconds + 120,
        )  # fmt: skip
    used = json.loads(client.stdout.strip().splitlines()[-1])
    return float(used["cpu_s"]) / int(used["trades"])


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Samples:
    """Resident memory (MiB) of each process and CPU seconds, by wall-clock second."""

    rss: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    cpu: list[tuple[float, float, float, float]] = field(default_factory=list)  # main, up, broker


def sample(up_pid: int, stop: threading.Event, samples: Samples) -> None:
    broker_cpu: dict[int, float] = {}  # the broker may be started afresh: sum every one
    while not stop.wait(0.5):
        brokers = children_of(up_pid)
        for pid in brokers:
            broker_cpu[pid] = max(broker_cpu.get(pid, 0.0), cpu_s(pid))
        rss = {"up": rss_bytes(up_pid) / 2**20, "broker": sum(map(rss_bytes, brokers)) / 2**20}
        samples.rss.append((time.time(), rss))
        samples.cpu.append(
            (time.time(), cpu_s(up_pid, up_pid), cpu_s(up_pid), sum(broker_cpu.values()))
        )


@dataclass
class Seen:
    """(symbol, minute) -> (poll time, last trade id) of each version whose ids are whole."""

    bars: dict[tuple[str, int], list[tuple[int, int]]] = field(default_factory=dict)

    def note(self, symbol: str, bars: list[dict[str, Any]], at: int) -> None:
        for bar in bars:
            first, last = bar.get("first_trade_id"), bar.get("last_trade_id")
            # Every id from first to last counted: each trade up to last is visible.
            if first is not None and last is not None and bar["trade_count"] == last - first + 1:
                self.bars.setdefault((symbol, bar["open_time"]), []).append((at, last))


def latencies(trades: Sequence[MarketTrade], symbols: Sequence[str], seen: Seen) -> list[float]:
    """Trade time to first visible (a version of its minute's bar counts it), for every trade
    of ``symbols``."""
    reached: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
    for key, versions in seen.bars.items():
        times, highest = reached.setdefault(key, ([], []))
        for at, last in sorted(versions):
            if not highest or last > highest[-1]:
                times.append(at)
                highest.append(last)
    wanted = set(symbols)
    out: list[float] = []
    for trade in trades:
        if trade.symbol not in wanted:
            continue
        key = (trade.symbol, trade.trade_time // MINUTE_MS * MINUTE_MS)
        if key in reached:
            times, highest = reached[key]
            index = bisect.bisect_left(highest, trade.id)
            if index < len(highest):
                out.append(times[index] - trade.trade_time)
    return out


def all_read(base: str, total: int) -> bool:
    """Whether the dataflow has read every trade (its count on ``/metrics``)."""
    try:
        text = httpx.get(f"{base}/metrics", timeout=10).text
    except httpx.HTTPError:
        return False
    for line in text.splitlines():
        if line.startswith("binance_metrics_dataflow_trades_total "):
            return float(line.split()[1]) >= total
    return True  # no such metric: rely on the stop reading to the end


def rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def differences(stored: Sequence[dict[str, Any]], trades: Sequence[MarketTrade]) -> list[str]:
    """How the stored 1m bars of one symbol differ from the plain reference of its trades."""
    got = {bar["open_time"]: bar for bar in stored}
    out = []
    for (_, start), fields in sorted(reference_klines(as_message(t) for t in trades).items()):
        bar = got.pop(start, None)
        if bar is None:
            out.append(f"minute {start}: not stored")
            continue
        for name in FIELDS:
            # As numbers: a volume of no trade is "0" here, "0.00000000" as stored.
            if Decimal(str(bar[name])) != Decimal(fields[name]):
                out.append(f"minute {start}: {name} {bar[name]} != {fields[name]}")
                break
    out += [f"minute {start}: stored, not in the reference" for start in got]
    return out


def check_bars(work: Path, env: dict[str, str], trades: Sequence[MarketTrade],
               symbols: Sequence[str]) -> tuple[int, int, list[str]]:  # fmt: skip
    """(symbols whose bars equal the reference, bars compared, the first failures)."""
    stored = subprocess.run(
        [sys.executable, "-c", ALL_BARS, *symbols], env=env, cwd=work, capture_output=True,
        text=True, check=True, timeout=1200,
    )  # fmt: skip
    bars: dict[str, list[dict[str, Any]]] = json.loads(stored.stdout)
    by_symbol: dict[str, list[MarketTrade]] = {}
    for trade in trades:
        by_symbol.setdefault(trade.symbol, []).append(trade)
    right, compared, failures = 0, 0, []
    for symbol in symbols:
        mine = bars.get(symbol, [])
        compared += len(mine)
        wrong = differences(mine, by_symbol.get(symbol, []))
        if wrong:
            failures.append(f"{symbol}: {len(wrong)} minutes differ, {'; '.join(wrong[:3])}")
        else:
            right += 1
    return right, compared, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the market trades")
    parser.add_argument("--symbols", type=int, default=2000, help="symbols listed and traded")
    parser.add_argument("--rate", type=float, default=5000.0, help="trades a second, in all")
    parser.add_argument("--burst-factor", type=float, default=10.0, help="the burst's rate factor")
    parser.add_argument("--burst-minutes", type=float, default=1.0, help="the burst's length")
    parser.add_argument("--baseline-seconds", type=float, default=30.0, help="0: no baseline")
    parser.add_argument("--poll-ms", type=float, default=250.0, help="/api/bars sampling period")
    args = parser.parse_args()
    symbols = symbols_of(args.symbols)
    seconds = args.minutes * 60
    bare = baseline(symbols, args.rate, args.baseline_seconds) if args.baseline_seconds else 0.0
    burst_at = max(0.0, (seconds - args.burst_minutes * 60) / 2)
    market = WholeMarket(
        symbols, args.rate, seconds, bursts=(Burst(burst_at, args.burst_minutes * 60,
                                                   args.burst_factor),)
    )  # fmt: skip
    made = time.monotonic()
    opened_ms = now_ms() + int(LEAD_S * 1000)
    trades = market.trades(opened_ms)
    print(f"market: {len(trades):,} trades of {len(symbols)} symbols over {seconds:g} s "
          f"(made in {time.monotonic() - made:.0f} s); burst x{args.burst_factor:g} from "
          f"{burst_at:g} s for {args.burst_minutes * 60:g} s", flush=True)  # fmt: skip
    shares = market.shares()
    polled = [*symbols[:5], *symbols[len(symbols) // 2 :: max(1, len(symbols) // 10)][:5]]
    work = Path(tempfile.mkdtemp(prefix="market-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CLICKHOUSE_URL", "SYMBOLS", "KAFKA_BOOTSTRAP_SERVERS")}  # fmt: skip
    samples, seen, stop = Samples(), Seen(), threading.Event()
    with LocalExchange(
        trades, pace=RealTime(1.0, on_the_clock=True), ping_interval_s=20.0,
        ping_timeout_s=20.0, message_rate_limit=5,
    ) as exchange:  # fmt: skip
        env.update({
            "DATA_DIR": str(work / "data"), "SYMBOLS": "ALL", "PYTHONUNBUFFERED": "1",
            "BINANCE_WS_URL": exchange.ws_url, "BINANCE_REST_URL": exchange.rest_url,
            "RECONCILE_EVERY_S": "0",  # the local exchange serves no klines here
        })  # fmt: skip
        log = (work / "up.log").open("w")
        up = subprocess.Popen(
            [sys.executable, "-m", "binance_metrics.cli", "up", "--port", str(port)],
            env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        sampler = threading.Thread(target=sample, args=(up.pid, stop, samples), daemon=True)
        poller = threading.Thread(
            target=poll_bars, args=(base, polled, args.poll_ms / 1000, stop, seen.note), daemon=True
        )
        sampler.start()
        poller.start()
        status = None
        try:
            exchange.wait_done(LEAD_S + 5 * seconds + 600)  # a machine too slow falls behind
            ended = time.time()
            print(f"market ended; up's log: {work / 'up.log'}", flush=True)
            # The dataflow catches up (a backlog after a burst), the last minute closes.
            caught_up = time.monotonic() + 900
            while time.monotonic() < caught_up and not all_read(base, len(trades)):
                time.sleep(5)
            time.sleep(10)
        finally:
            stop.set()
            up.send_signal(signal.SIGINT)
            try:
                status = up.wait(600)
            except subprocess.TimeoutExpired:
                up.kill()
            log.close()
    print(f"up exited with {status}", flush=True)
    right, compared, failures = check_bars(work, env, trades, symbols)
    audit = subprocess.run(
        [sys.executable, "-m", "binance_metrics.cli", "audit", "--format", "json"],
        env=env, cwd=work, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    opened = opened_ms / 1000
    during = [c for c in samples.cpu if opened <= c[0] <= ended]
    main_s = during[-1][1] - during[0][1]
    up_s = during[-1][2] - during[0][2]
    broker_s = during[-1][3] - during[0][3]
    wall = during[-1][0] - during[0][0]
    lat = latencies(trades, polled, seen)
    print(f"\n{len(trades):,} trades, {len(symbols)} symbols, {seconds:g} s "
          f"({len(trades) / seconds:,.0f} trades/s on average, top symbol "
          f"{shares[0]:.1%}, top 10 {sum(shares[:10]):.1%})")  # fmt: skip
    print(f"ingestor (up's main thread): {main_s:.1f} CPU s = {main_s / wall:.0%} of one core, "
          f"{main_s / len(trades) * 1e6:.1f} µs a trade"
          + (f" = {main_s / len(trades) / bare:.1f}x the bare client's "
             f"{bare * 1e6:.1f} µs" if bare else ""))  # fmt: skip
    print(
        f"up process (ingestor, dataflow, store, page): {up_s:.1f} CPU s = "
        f"{up_s / wall:.0%} of one core, {up_s / len(trades) * 1e6:.1f} µs a trade; "
        f"broker {broker_s:.1f} CPU s ({broker_s / len(trades) * 1e6:.1f} µs a trade)"
    )
    print("memory (MiB), at each minute of the market:")
    for minute in range(int(seconds // 60) + 1):
        at = opened + minute * 60
        near = min(samples.rss, key=lambda s: abs(s[0] - at))[1]
        print(f"  minute {minute:3d}: up {near['up']:7.0f}  broker {near['broker']:6.0f}")
    peak_up = max(s[1]["up"] for s in samples.rss)
    peak_broker = max(s[1]["broker"] for s in samples.rss)
    last = samples.rss[-1][1]
    print(f"  peak: up {peak_up:.0f}, broker {peak_broker:.0f}; at the stop (the dataflow "
          f"caught up): up {last['up']:.0f}, broker {last['broker']:.0f}")  # fmt: skip
    if lat:
        print(f"latency T -> visible in /api/bars ({len(polled)} symbols, {len(lat):,} trades): "
              f"p50 {rank(lat, 0.5):,.0f} ms, p99 {rank(lat, 0.99):,.0f} ms, "
              f"max {max(lat):,.0f} ms")  # fmt: skip
    else:
        print("latency: no sample")
    print(f"bars: {right} of {len(symbols)} symbols equal the reference ({compared:,} bars)")
    for failure in failures[:5]:
        print(f"  {failure}")
    holes = json.loads(audit.stdout or "null")
    print(f"audit: exit {audit.returncode}, {len(holes) if isinstance(holes, list) else '?'} "
          "holes")  # fmt: skip
    return 0 if right == len(symbols) and audit.returncode == 0 and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
