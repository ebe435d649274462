"""Bars for the candle page tests, an app around the router, and uvicorn on a free port."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import uvicorn
from fastapi import FastAPI

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.store.clickhouse import Store
from binance_metrics.web import LiveBars, create_live_router, create_router
from binance_metrics.web.live import Status

SCALE = 10**8
MINUTE_MS = 60_000


@dataclass(frozen=True)
class Series:
    """One symbol's 1-minute bars, as inserted."""

    symbol: str
    start_ms: int
    bars: list[Bar]

    def rows(self) -> list[BarUpdate]:
        return [
            BarUpdate(self.symbol, self.start_ms + i * MINUTE_MS, bar)
            for i, bar in enumerate(self.bars)
        ]

    @property
    def open_times(self) -> list[int]:
        return [self.start_ms + i * MINUTE_MS for i in range(len(self.bars))]


def random_walk(
    symbol: str, start: datetime, minutes: int, price: int, *, seed: int, quiet_every: int = 7
) -> Series:
    """A random walk of trades folded into exact bars; every ``quiet_every``-th minute has no
    trades and is a filler bar (trade_count 0, O = H = L = C = previous close), as Binance's."""
    rng = random.Random(seed)
    bars: list[Bar] = []
    trade_id = 1_000_000
    close = price
    for minute in range(minutes):
        if minute % quiet_every == quiet_every - 1:
            bars.append(Bar.filler(close))
            continue
        bar = Bar()
        for _ in range(rng.randint(1, 12)):
            close = max(SCALE // 1000, close + rng.randint(-price // 400, price // 400))
            qty = rng.randint(1, 5 * SCALE) // 1000 * 1000 + 1  # odd last digit: exactness shows
            count = rng.randint(1, 3)  # an aggregate of ``count`` raw trades
            bar.add(close, qty, trade_id, trade_id + count - 1, rng.random() < 0.5)
            trade_id += count
        bars.append(bar)
    return Series(symbol, int(start.timestamp() * 1000), bars)


#: 300 minutes of BTCUSDT from 20:00 UTC, and 200 minutes of ETHUSDT from a later, different
#: start: the chart differs in candle count and first open time when the symbol changes.
BTC = random_walk("BTCUSDT", datetime(2024, 8, 8, 20, 0, tzinfo=UTC), 300, 61_000 * SCALE, seed=1)
ETH = random_walk("ETHUSDT", datetime(2024, 8, 9, 2, 0, tzinfo=UTC), 200, 2_600 * SCALE, seed=2)
SERIES = (BTC, ETH)


def fill(store: Store, series: Sequence[Series] = SERIES) -> None:
    """Empty the bars table, then insert ``series``."""
    store.command("TRUNCATE TABLE binance.ohlcv")
    store.command("TRUNCATE TABLE binance.ohlcv_forming")
    for one in series:
        store.insert_bars(one.rows())


def bar_count(store: Store) -> int:
    return int(store.query("SELECT count() FROM binance.ohlcv FINAL")[0][0])


def make_app(store: Store, default_symbols: Sequence[str], status: Status | None = None) -> FastAPI:
    """The page's routers around ``store``; ``status`` stands in for ``up``'s feed status."""
    app = FastAPI()
    app.include_router(create_router(lambda: store, default_symbols))
    app.include_router(create_live_router(LiveBars(lambda: store), status))
    return app


@contextmanager
def serve(app: FastAPI, *, timeout: float = 10.0) -> Iterator[str]:
    """Run ``app`` under a real uvicorn in a thread on a free port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The page's event stream never ends on its own: a shutdown cancels it after a second.
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port} within {timeout} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
