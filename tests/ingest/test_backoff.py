"""Reconnect pacing: exponential backoff with jitter, and the connection-attempt budget."""

from __future__ import annotations

import asyncio
import random

from binance_metrics.ingest.backoff import AttemptLimiter, Backoff
from binance_metrics.ingest.stream import shard_symbols, stream_url


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays), "jitter: no two delays alike"
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_attempt_limiter_never_exceeds_its_budget_in_any_window() -> None:
    async def attempts() -> list[float]:
        limiter = AttemptLimiter(max_attempts=5, window_s=0.2)
        loop = asyncio.get_running_loop()
        times = []
        for _ in range(12):
            await limiter.acquire()
            times.append(loop.time())
        return times

    times = asyncio.run(attempts())
    for i, start in enumerate(times):
        in_window = [t for t in times[i:] if t - start < 0.2 * 0.99]
        assert len(in_window) <= 5


def test_streams_are_split_1024_per_connection_lower_case() -> None:
    symbols = [f"S{i:04d}USDT" for i in range(2500)]
    shards = shard_symbols(symbols, 1024)
    assert [len(s) for s in shards] == [1024, 1024, 452]
    assert shard_symbols(symbols, 5000)[0] == tuple(symbols[:1024]), "never above Binance's limit"
    url = stream_url("wss://data-stream.binance.vision/stream", ("BTCUSDT", "ETHUSDT"))
    assert url == "wss://data-stream.binance.vision/stream?streams=btcusdt@trade/ethusdt@trade"
