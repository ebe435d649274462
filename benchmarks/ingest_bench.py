"""Ingestor throughput and CPU cost per frame, against a naive baseline in the same run.

    python benchmarks/ingest_bench.py [--frames 10000] [--repeat 1] [--market spot|um|cm]

Both contenders read the same real captured frames (``tests/data``) from the local exchange
(:class:`binance_metrics.testing.exchange.LocalExchange`, in its own process, so its CPU is not
counted) over a real WebSocket and produce them to a real embedded
Kafka (Tansu), and the clock stops when Kafka has acknowledged every message:

* ``baseline``: ``json.loads`` each frame, ``json.dumps`` its ``data``, ``Producer.produce``
  (librdkafka defaults), retry on ``BufferError``; no validation, no DLQ, no sequencing, no metrics.
* ``ingestor``: the real :class:`~binance_metrics.ingest.service.Ingestor` (msgspec parse +
  validation, enrichment, dedupe/gap sequencing, idempotent acks=all producer, metrics).

Printed per contender: frames/s and CPU µs per frame (this process, all threads, including
librdkafka's), from the market's start to the last ack, then the ratios ingestor / baseline.
``--market um`` or ``cm`` plays the USDⓈ-M or COIN-M capture on a local futures exchange (the
ingestor then keeps each symbol's last run for the futures gap fill; COIN-M adds ``cs``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from confluent_kafka import Producer
from websockets.asyncio.client import connect

from binance_metrics.ingest.service import Ingestor
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.markets import MARKETS, Market
from binance_metrics.settings import Settings
from binance_metrics.testing.exchange import Bursts, LocalExchange
from binance_metrics.testing.market import load_capture, merge_by_event_time

#: The real captures (the tests' data) of each market, read as input files.
DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
CAPTURES: dict[Market, dict[str, str]] = {
    "spot": {
        s: f"{s}-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"
        for s in ("BTCUSDT", "ETHUSDT")
    },
    "um": {"BTCUSDT": "BTCUSDT-um-trade-stream-20230404T235820Z-20230405T000654Z.jsonl"},
    "cm": {"BTCUSD_PERP": "BTCUSD_PERP-cm-trade-stream-20240808T235417Z-20240809T000504Z.jsonl"},
}
#: Both producers get this long to connect (an idempotent one waits ~0.5 s for its producer id
#: on Tansu) before the market starts; the clock starts with the market.
WARM_UP_S = 1.0


def _exchange_process(frames: int, market: Market, pipe: Connection) -> None:
    captures = (load_capture(DATA / name) for name in CAPTURES[market].values())
    trades = merge_by_event_time(*captures)[:frames]
    go = threading.Event()
    # No pacing: once told to go, the market sends as fast as the client reads.
    with LocalExchange(
        trades,
        pace=Bursts(frames=1000, pause_s=0.0),
        ping_interval_s=5.0,
        start_gate=go,
        market=market,
    ) as exchange:
        pipe.send(exchange.port)
        pipe.recv()
        go.set()
        pipe.recv()  # until told to stop


class ExchangeProcess:
    """The local exchange in its own process; :meth:`go` starts its market."""

    def __init__(self, frames: int, market: Market) -> None:
        self._pipe, child = mp.Pipe()
        self._process = mp.get_context("spawn").Process(
            target=_exchange_process, args=(frames, market, child), daemon=True
        )
        self.port = 0
        self.symbols = tuple(CAPTURES[market])
        self.market = market

    def __enter__(self) -> ExchangeProcess:
        self._process.start()
        if not self._pipe.poll(30):
            raise RuntimeError("the local exchange did not start")
        self.port = int(self._pipe.recv())
        return self

    def go(self) -> None:
        self._pipe.send("go")

    def __exit__(self, *exc: object) -> None:
        self._pipe.send("stop")
        self._process.join(10)


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


async def run_baseline(
    exchange: ExchangeProcess, bootstrap: str, topic: str, frames: int
) -> tuple[float, float]:
    acked = 0

    def on_delivery(err: object, msg: object) -> None:
        nonlocal acked
        acked += 1

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    streams = "/".join(f"{s.lower()}@trade" for s in exchange.symbols)
    url = f"ws://127.0.0.1:{exchange.port}/stream?streams={streams}"
    async with connect(url, ping_interval=None, compression=None) as ws:
        await asyncio.sleep(WARM_UP_S)
        start = _clock()
        exchange.go()
        for _ in range(frames):
            data = json.loads(await ws.recv())["data"]
            value, key = json.dumps(data).encode(), data["s"].encode()
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.01)
            producer.poll(0)
        while acked < frames:
            producer.poll(0.01)
    end = _clock()
    return end[0] - start[0], end[1] - start[1]


async def run_ingestor(
    exchange: ExchangeProcess, bootstrap: str, topic: str, frames: int
) -> tuple[float, float]:
    settings = Settings(
        MARKET=exchange.market,
        SYMBOLS=exchange.symbols,
        KAFKA_TOPIC=topic,
        KAFKA_DLQ_TOPIC=f"{topic}-dlq",
        BINANCE_WS_URL=f"ws://127.0.0.1:{exchange.port}/stream",
        BINANCE_REST_URL=f"http://127.0.0.1:{exchange.port}",
        # The exchange pings (no keepalive of our own) and sends the captures' 2024 times.
        INGEST={"ping_interval_s": 0, "max_trade_time_skew_s": 0},
    )
    ingestor = Ingestor(settings, KafkaConnection(bootstrap))
    await ingestor.start()
    await asyncio.sleep(WARM_UP_S)
    start = _clock()
    exchange.go()
    while sum(ingestor.produced.values()) < frames:
        await asyncio.sleep(0.001)
    end = _clock()
    await ingestor.stop()
    return end[0] - start[0], end[1] - start[1]


def measure(
    name: str, frames: int, bootstrap: str, run: int, market: Market
) -> tuple[float, float]:
    topic = f"bench-{name}-{run}"
    ensure_topics(KafkaConnection(bootstrap), [topic, f"{topic}-dlq"], 3)
    runner = run_baseline if name == "baseline" else run_ingestor
    with ExchangeProcess(frames, market) as exchange:
        wall, cpu = asyncio.run(runner(exchange, bootstrap, topic, frames))
    fps, cpu_us = frames / wall, cpu / frames * 1e6
    print(
        f"{name:9s} run {run}: {frames} frames in {wall:6.3f} s = {fps:9,.0f} frames/s, "
        f"CPU {cpu_us:6.1f} µs/frame"
    )
    return fps, cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--frames", type=int, default=10_000, help="at most 34,419 (um: 12,935; cm: 5,235)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--market", choices=MARKETS, default="spot", help="whose capture")
    args = parser.parse_args()
    available = sum(
        1
        for name in CAPTURES[args.market].values()
        for line in (DATA / name).read_text().splitlines()
        if line.strip()
    )
    frames = min(args.frames, available)
    with EmbeddedBroker() as broker:
        results: dict[str, list[tuple[float, float]]] = {"baseline": [], "ingestor": []}
        for run in range(args.repeat):
            for name in results:
                results[name].append(
                    measure(name, frames, broker.bootstrap_servers, run, args.market)
                )
    best = {name: (max(r[0] for r in rs), min(r[1] for r in rs)) for name, rs in results.items()}
    (b_fps, b_cpu), (i_fps, i_cpu) = best["baseline"], best["ingestor"]
    print(
        f"ingestor / baseline: throughput x{i_fps / b_fps:.2f}, CPU per frame x{i_cpu / b_cpu:.2f}"
        " (best of runs)"
    )


if __name__ == "__main__":
    main()
