"""Latency, live: a local exchange trading at real speed, ``binance-metrics up`` as a user runs it,
and the candle page in headless Chromium.

    python benchmarks/latency_bench.py [--seconds 150] [--symbols 4] [--rate 10] [--poll-ms 100]

The local exchange (:class:`binance_metrics.testing.exchange.LocalExchange`) sends synthetic
trades of several symbols at the moment of their trade time ``T`` (so ``T`` is "now", as on
Binance); ``up`` ingests them into a Kafka broker started here (so that every produced trade, with
its ``ingestionTimeMs``, can be read back afterwards); a poller reads ``/api/bars`` of every symbol
every ``--poll-ms``; Chromium shows the page of the first symbol. Printed, p50 / p99 / count:

* **ingest**: ``ingestionTimeMs - T`` of every trade;
* **forming**: a trade's first visibility through ``/api/bars`` (the forming bar's
  ``last_trade_id`` reaches it, or its minute's closed bar appears) minus ``ingestionTimeMs``;
  "not available" while ``/api/bars`` serves no forming bar (``"closed": false``);
* **closed**: a minute's closed bar first visible through ``/api/bars`` minus the minute's end,
  for every minute traded from its start to its end and for WATERMARK_WAIT_S + 5 s after;
* **page**: the page drew the newest bar's version (open time, close, trade count) minus when
  the poller first saw that version through ``/api/bars``;
* **quiet**: a quiet minute's zero-trade bar first visible through ``/api/bars`` minus the
  minute's end, for LTCUSDT, alone on a connection of its own, which trades for the first
  ``QUIET_AFTER_S`` only: no frame vouches for it, the ticker does (``ingest/quiet.py``).

Visibility is sampled every ``--poll-ms``: forming and closed figures are late by up to that much,
page figures early by up to that much. Targets: forming p99 <= 1 s, closed p99 <=
``WATERMARK_WAIT_S`` + 1 s.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from binance_metrics.heartbeats import decode_heartbeat
from binance_metrics.kafka.broker import EmbeddedBroker, free_port
from binance_metrics.settings import Settings
from binance_metrics.testing.bars_poller import poll_bars
from binance_metrics.testing.exchange import LocalExchange, RealTime
from binance_metrics.testing.market import MarketTrade

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.web.cdp: the DevTools driver of the page tests
from tests.web.cdp import Browser  # noqa: E402

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT", "ADAUSDT", "DOGEUSDT")
QUIET = "LTCUSDT"  # alone on its connection, quiet after QUIET_AFTER_S
QUIET_AFTER_S = 10.0
MINUTE_MS = 60_000
#: ``up`` starts (broker check, store, dataflow, connections) before the market opens.
LEAD_S = 30.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def market(symbols: Sequence[str], start_ms: int, seconds: float, rate: float) -> list[MarketTrade]:
    """Trades of ``symbols`` from ``start_ms`` on, ``rate`` a second each (exponential gaps)."""
    rng = random.Random(7)
    trades: list[MarketTrade] = []
    for index, symbol in enumerate(symbols):
        price, t, trade_id = 100_000 + 1_000 * index, float(start_ms), 1
        while t < start_ms + seconds * 1000:
            price = max(1_000, price + rng.randint(-20, 20))
            data = {
                "e": "trade", "E": int(t), "s": symbol, "t": trade_id,
                "p": f"{price / 100:.8f}", "q": f"{rng.randint(1, 10**6) / 10**5:.8f}",
                "T": int(t), "m": rng.random() < 0.5, "M": True,
            }  # fmt: skip
            frame = {"stream": f"{symbol.lower()}@trade", "data": data}
            trades.append(MarketTrade.from_frame(json.dumps(frame, separators=(",", ":"))))
            trade_id += 1
            t += rng.expovariate(rate) * 1000
    trades.sort(key=lambda trade: trade.trade_time)
    return trades


@dataclass
class Seen:
    """What the poller saw through ``/api/bars``, by wall-clock ms."""

    page_symbol: str  # the symbol the page shows: its newest bar's versions are timed
    closed: dict[tuple[str, int], int] = field(default_factory=dict)  # (symbol, minute) -> first
    forming: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)  # (t, minute, id)
    versions: dict[str, int] = field(default_factory=dict)  # newest bar's "ot|close|n" -> first
    any_forming: bool = False

    def note(self, symbol: str, bars: list[dict[str, Any]], at: int) -> None:
        for bar in bars:
            if bar.get("closed", True):
                self.closed.setdefault((symbol, bar["open_time"]), at)
            elif "last_trade_id" in bar:
                self.any_forming = True
                self.forming.setdefault(symbol, []).append(
                    (at, bar["open_time"], bar["last_trade_id"])
                )
        if symbol == self.page_symbol and bars:
            last = bars[-1]
            key = f"{last['open_time']}|{last['close']}|{last['trade_count']}"
            self.versions.setdefault(key, at)


def produced_trades(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every trade message on ``topic``, read to the end of each partition."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "latency-bench",
        "enable.partition.eof": True, "enable.auto.commit": False,
        "fetch.wait.max.ms": 50,
    })  # fmt: skip
    meta = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta])
    left, out = set(meta), []
    deadline = time.monotonic() + 60
    while left and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                left.discard(message.partition())
            continue
        if decode_heartbeat(message.value() or b"") is None:  # the feed's heartbeats: no trade
            out.append(json.loads(message.value() or b"{}"))
    consumer.close()
    return out


def rank(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-int(q * len(ordered) * 1000) // 1000) - 1))]


def quantiles(values: Sequence[float]) -> str:
    if not values:
        return "not available"
    return f"p50 {rank(values, 0.5):7.0f} ms   p99 {rank(values, 0.99):7.0f} ms   n={len(values)}"


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def forming_latencies(trades: Sequence[dict[str, Any]], seen: Seen) -> list[float]:
    # Per (symbol, minute): when the forming bar first reached each last_trade_id (running max).
    reached: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
    for symbol, samples in seen.forming.items():
        for at, minute, last in sorted(samples):
            times, highest = reached.setdefault((symbol, minute), ([], []))
            if not highest or last > highest[-1]:
                times.append(at)
                highest.append(last)
    out = []
    for trade in trades:
        key = (trade["s"], trade["T"] // MINUTE_MS * MINUTE_MS)
        candidates = []
        if key in reached:
            times, highest = reached[key]
            index = bisect.bisect_left(highest, trade["t"])
            if index < len(highest):
                candidates.append(times[index])
        if (closed := seen.closed.get(key)) is not None:
            candidates.append(closed)
        if candidates:
            out.append(min(candidates) - trade["ingestionTimeMs"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="how long the market trades")
    parser.add_argument("--symbols", type=int, default=4, choices=range(1, len(SYMBOLS) + 1))
    parser.add_argument("--rate", type=float, default=10.0, help="trades per second per symbol")
    parser.add_argument("--poll-ms", type=float, default=100.0, help="/api/bars sampling period")
    parser.add_argument("--no-page", action="store_true", help="skip Chromium (no page figure)")
    args = parser.parse_args()
    symbols = SYMBOLS[: args.symbols]
    wait_s = Settings().WATERMARK_WAIT_S
    start_ms = now_ms() + int(LEAD_S * 1000)
    trades = market(symbols, start_ms, args.seconds, args.rate)
    trades += market([QUIET], start_ms, QUIET_AFTER_S, args.rate)
    trades.sort(key=lambda trade: trade.trade_time)
    gate = threading.Event()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="latency-bench-"))
    browser_binary = None if args.no_page else shutil.which("chromium")
    seen = Seen(symbols[0])
    stop = threading.Event()
    with EmbeddedBroker() as broker, LocalExchange(
        trades, pace=RealTime(1.0), advance_when_idle=True, tail_guard=0,
        ping_interval_s=20.0, ping_timeout_s=20.0, start_gate=gate,
    ) as exchange:  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_URL", "SYMBOLS")}
        env.update({
            "DATA_DIR": str(work / "data"), "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "BINANCE_WS_URL": exchange.ws_url, "BINANCE_REST_URL": exchange.rest_url,
            "PYTHONUNBUFFERED": "1",
            # The busy symbols share a connection; the quiet one has one of its own.
            "INGEST__STREAMS_PER_CONNECTION": str(len(symbols)),
        })  # fmt: skip
        log = (work / "up.log").open("w")
        up = subprocess.Popen(
            [sys.executable, "-m", "binance_metrics.cli", "up", "--symbols",
             ",".join((*symbols, QUIET)), "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        browser: Browser | None = None
        # The market opens at start_ms on a timer of its own: the trades' times are "now" then.
        opened_ms = [0]

        def open_market() -> None:
            time.sleep(max(0.0, (start_ms - now_ms()) / 1000))
            gate.set()
            opened_ms[0] = now_ms()

        opener = threading.Thread(target=open_market, daemon=True)
        opener.start()
        try:
            while not healthy(base):
                if now_ms() > start_ms or up.poll() is not None:
                    print(f"up was not ready before the market opened; see {work / 'up.log'}")
                    return 1
                time.sleep(0.2)
            if browser_binary:
                browser = Browser(browser_binary, work / "profile").__enter__()
                browser.navigate(f"{base}/?symbol={symbols[0]}&interval=1m")
            poller = threading.Thread(
                target=poll_bars,
                args=(base, (*symbols, QUIET), args.poll_ms / 1000, stop, seen.note),
            )
            poller.start()
            opener.join()
            if opened_ms[0] - start_ms > 100:
                print(f"warning: the market opened {opened_ms[0] - start_ms} ms late")
            print(f"market open: {len(trades)} trades of {', '.join(symbols)} over "
                  f"{args.seconds:g} s; up's log: {work / 'up.log'}", flush=True)  # fmt: skip
            exchange.wait_done(args.seconds + 60)
            # The last minute closes after the wait; give it time to show.
            time.sleep(wait_s + 3)
            stop.set()
            poller.join()
            draws = browser.evaluate("window.candleDraws") if browser else []
        finally:
            stop.set()
            if browser is not None:
                browser.close()
            up.send_signal(signal.SIGINT)
            try:
                up.wait(120)
            except subprocess.TimeoutExpired:
                up.kill()
            log.close()
        produced = produced_trades(broker.bootstrap_servers, Settings().KAFKA_TOPIC)

    end_ms = start_ms + int(args.seconds * 1000)
    ingest = [t["ingestionTimeMs"] - t["T"] for t in produced]
    forming = forming_latencies(produced, seen) if seen.any_forming else []
    # Minutes traded from start to end, followed by enough trading for their bars to close.
    first_full = -(-start_ms // MINUTE_MS) * MINUTE_MS
    closed = [
        at - (minute + MINUTE_MS)
        for (symbol, minute), at in seen.closed.items()
        if symbol != QUIET
        and minute >= first_full
        and minute + MINUTE_MS + (wait_s + 5) * 1000 <= end_ms
    ]
    page = [d["at"] - seen.versions[d["key"]] for d in draws if d["key"] in seen.versions]
    # The quiet symbol's minutes after its last trade, closed while the market still ran.
    quiet_last = max(t.trade_time for t in trades if t.symbol == QUIET)
    first_quiet = (quiet_last // MINUTE_MS + 1) * MINUTE_MS
    quiet = [
        at - (minute + MINUTE_MS)
        for (symbol, minute), at in seen.closed.items()
        if symbol == QUIET
        and minute >= first_quiet
        and minute + MINUTE_MS + (wait_s + 5) * 1000 <= end_ms
    ]
    print(f"{len(produced)} of {len(trades)} trades produced; {len(symbols)} symbols; "
          f"poll every {args.poll_ms:g} ms; WATERMARK_WAIT_S={wait_s:g}")  # fmt: skip
    print(f"ingest   (ingestion - trade time)      {quantiles(ingest)}")
    print(f"forming  (visible in API - received)   {quantiles(forming)}"
          + ("" if seen.any_forming else "  (/api/bars serves no forming bar yet)"))  # fmt: skip
    print(f"closed   (visible in API - minute end) {quantiles(closed)}")
    print(f"samples: {len(seen.closed)} closed bars, {sum(map(len, seen.forming.values()))} "
          f"forming samples, {len(seen.versions)} versions of the page's newest bar, "
          f"{len(draws)} page draws")  # fmt: skip
    page_figure = quantiles(page) if browser_binary else "not measured (no chromium, --no-page)"
    print(f"page     (drawn - visible in API)      {page_figure}")
    print(f"quiet    (zero-trade bar - minute end) {quantiles(quiet)}  ({QUIET}, alone, no trades)")
    for name, values, limit in (
        ("forming", forming, 1000.0),
        ("closed", closed, (wait_s + 1) * 1000),
    ):
        if values:
            met = rank(values, 0.99) <= limit
            print(f"target {name} p99 <= {limit:g} ms: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
