"""``replay`` end to end against a naive pipeline, side by side on the same files, in one run.

It writes N synthetic trades over F symbol files in the data.binance.vision ``trades`` CSV
layout (``id,price,qty,quote_qty,time,is_buyer_maker,is_best_match``, no header, as
``tests/data`` and the archives have them), once, into ``--data`` (kept for reruns). Then each
pipeline runs in a process of its own with an empty DATA_DIR, start-up included:

* **naive**: the files read with ``csv`` -> ``json.dumps`` -> produced to the embedded Tansu
  broker, then Bytewax ``KafkaSource`` -> ``json.loads`` -> ``fold_window`` per trade ->
  ClickHouse (the naive flow of ``dataflow_bench.py``);
* **kafka**: ``binance-metrics replay --through-kafka`` (the previous replay);
* **history**: ``binance-metrics replay`` (the default).

For each it prints the wall time, trades/s, the ratio to naive, the peak RSS of the whole
process tree (every descendant, the broker included, sampled from /proc every 20 ms), and for
``replay`` its steady rate (the trades over the time from the first file to the last write, as
it logs it). It checks that all wrote the same bars (the minutes with trades: the naive flow
writes no zero-trade minutes). Run::

    python benchmarks/replay_bench.py [--trades 5000000] [--files 25] [--runs naive,kafka,history]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

START_MS = 1_722_470_400_000  # 2024-08-01 00:00:00 UTC: the files are monthly, August 2024
REPO = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
_RATE = re.compile(r"history: ([\d,]+) trades folded in ([\d.]+) s .*; ([\d.]+) s of CPU")


def generate(directory: Path, trades: int, files: int, seed: int = 7) -> list[Path]:
    """``files`` monthly trades CSVs of ``trades // files`` trades each (kept if present)."""
    directory.mkdir(parents=True, exist_ok=True)
    rnd = np.random.default_rng(seed)
    per_file = trades // files
    paths = []
    for i in range(files):
        path = directory / f"SYM{i:03d}USDT-trades-2024-08.csv"
        paths.append(path)
        marker = path.with_suffix(".rows")
        if marker.exists() and marker.read_text() == f"{per_file} v2":
            continue
        # A busy spot market: ~1,000 trades a minute, prices on a random walk from a SHIB-like
        # 0.00001 to a BTC-like 60,000, quantities the other way round.
        base = int(10 ** rnd.uniform(3, 12.8))
        gaps = rnd.choice(np.array([0, 0, 1, 5, 20, 60, 150, 240]), per_file)
        times = START_MS + np.cumsum(gaps)
        steps = rnd.integers(-(base // 2000) - 1, base // 2000 + 2, per_file)
        prices = np.maximum(base + np.cumsum(steps), 1)
        quantities = rnd.integers(1, max(2, 10**17 // base), per_file)
        table = pa.table({
            "id": np.arange(10**6, 10**6 + per_file, dtype=np.int64),
            "price": _decimals(prices),
            "qty": _decimals(quantities),
            "quote_qty": _decimals(np.round(prices / 1e8 * quantities).astype(np.int64)),
            "time": times,
            "is_buyer_maker": rnd.random(per_file) < 0.5,
            "is_best_match": np.ones(per_file, np.bool_),
        })  # fmt: skip
        pcsv.write_csv(table, path, pcsv.WriteOptions(include_header=False, quoting_style="none"))
        marker.write_text(f"{per_file} v2")
    return paths


def _decimals(scaled: np.ndarray) -> pa.Array:
    """Scaled integers as Binance writes them: ``61837.63000000`` (8 decimals, never 2.6E-7)."""
    whole = (scaled // 10**8).astype(str)
    fraction = np.char.zfill((scaled % 10**8).astype(str), 8)
    return pa.array(np.char.add(np.char.add(whole, "."), fraction))


@dataclass
class Result:
    seconds: float
    cpu_seconds: float  # user + system of the whole tree (the broker included)
    peak_rss: int
    output: str


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        tree.update(children)
        frontier += children
    total = 0
    for pid in tree:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


def measure(command: list[str], env: dict[str, str]) -> Result:
    """Run ``command``: wall time, peak RSS of its process tree, its stderr and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, _tree_rss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({process.returncode}):\n{output[-3000:]}")
    return Result(seconds, cpu, peak, output)


def digest(data_dir: Path) -> str:
    """A digest of the minutes with trades of the store in ``data_dir`` (in its own process:
    chDB opens one directory per process)."""
    code = (
        "import sys; from binance_metrics.store.clickhouse import open_store; "
        "print(open_store(sys.argv[1], 'spot').query('SELECT count(), sum(cityHash64(symbol, "
        "window_start, open, high, low, close, volume, quote_volume, trade_count, "
        "taker_buy_volume, taker_buy_quote_volume)) FROM binance.ohlcv FINAL "
        "WHERE trade_count > 0')[0])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-c", code, f"chdb://{data_dir}/clickhouse"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def run_naive(paths: list[Path], data_dir: Path) -> None:
    """The naive pipeline, in this process (``--naive``)."""
    from bytewax.testing import run_main
    from confluent_kafka import Producer

    sys.path.insert(0, str(Path(__file__).parent))
    from dataflow_bench import naive_flow

    from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics
    from binance_metrics.recordings import symbol_from_name
    from binance_metrics.store.clickhouse import open_store

    dsn = f"chdb://{data_dir}/clickhouse"
    open_store(dsn, "spot")
    with EmbeddedBroker() as broker:
        ensure_topics(broker.connection, ["trades"], 3)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20,
                             "queue.buffering.max.messages": 500_000})  # fmt: skip
        for path in paths:
            symbol = symbol_from_name(path) or ""
            with path.open(newline="") as f:
                for row in csv.reader(f):
                    trade = {"e": "trade", "s": symbol, "t": int(row[0]), "p": row[1],
                             "q": row[2], "T": int(row[4]), "m": row[5] == "true"}  # fmt: skip
                    value = json.dumps(trade)
                    while True:
                        try:
                            producer.produce("trades", key=symbol.encode(), value=value)
                            break
                        except BufferError:
                            producer.poll(0.1)
                    producer.poll(0)
        assert producer.flush(120) == 0
        run_main(naive_flow(broker.bootstrap_servers, "trades", dsn, timedelta(seconds=2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=5_000_000)
    parser.add_argument("--files", type=int, default=25)
    parser.add_argument("--runs", default="naive,kafka,history",
                        help="which pipelines to run, in order")  # fmt: skip
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "replay-bench")
    parser.add_argument("--naive", nargs="+", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive:
        run_naive(args.naive, args.data_dir)
        return

    paths = generate(args.data / f"{args.trades}-{args.files}", args.trades, args.files)
    total = args.files * (args.trades // args.files)
    size = sum(path.stat().st_size for path in paths)
    print(f"{total:,} trades in {len(paths)} files ({size / 2**20:,.0f} MiB)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "LOG_LEVEL": "INFO"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("CLICKHOUSE_URL", None)
    cli = [sys.executable, "-m", "binance_metrics.cli"]
    results: dict[str, Result] = {}
    digests: dict[str, str] = {}
    for name in args.runs.split(","):
        data_dir = Path(tempfile.mkdtemp(prefix=f"replay-bench-{name}-"))
        run_env = {**env, "DATA_DIR": str(data_dir)}
        if name == "naive":
            command = [sys.executable, __file__, "--naive", *map(str, paths),
                       "--data-dir", str(data_dir)]  # fmt: skip
        elif name == "kafka":
            command = [*cli, "replay", "--through-kafka", *map(str, paths)]
        else:
            command = [*cli, "replay", *map(str, paths)]
        result = results[name] = measure(command, run_env)
        digests[name] = digest(data_dir)
        rss = result.peak_rss / 2**20
        line = (f"{name:8s} {result.seconds:7.1f} s  {total / result.seconds:>11,.0f} trades/s  "
                f"cpu {result.cpu_seconds:6.1f} s  peak RSS {rss:6,.0f} MiB")  # fmt: skip
        if "naive" in results and name != "naive":
            naive = results["naive"]
            line += (f"  {naive.seconds / result.seconds:5.1f}x naive "
                     f"({naive.cpu_seconds / result.cpu_seconds:.1f}x in cpu)")  # fmt: skip
        steady = _RATE.search(result.output)
        if steady:
            trades, seconds = int(steady.group(1).replace(",", "")), float(steady.group(2))
            cpu = float(steady.group(3))
            line += f"  steady {trades / seconds:,.0f} trades/s ({cpu:.1f} s cpu)"
        print(line, flush=True)
    ours = {name: value for name, value in digests.items() if name != "naive"}
    assert len(set(ours.values())) <= 1, f"the replays wrote different bars: {digests}"
    for name, value in digests.items():
        same = value == next(iter(ours.values()), value)
        print(f"bars     {name}: {value}" + ("" if same else "  DIFFERENT (trades dropped late)"))
    print(f"machine  {os.cpu_count()} cores, {platform.machine()}, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{datetime.now(UTC):%Y-%m-%d}")  # fmt: skip


if __name__ == "__main__":
    main()
