"""Poll ``/api/bars`` of a running ``up`` as a chart would, for the latency benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from binance_metrics.trades import now_ms

#: What a poll saw: the symbol, its newest bars as ``/api/bars`` answers them, and when (ms).
Seen = Callable[[str, list[dict[str, Any]], int], None]


def poll_bars(
    base: str, symbols: Sequence[str], every_s: float, stop: threading.Event, seen: Seen
) -> None:
    """The last 3 bars of each of ``symbols`` every ``every_s`` until ``stop``; a failed or
    malformed answer is skipped (``up`` may be starting or stopping)."""
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            began = time.monotonic()
            for symbol in symbols:
                try:
                    bars = client.get(
                        f"{base}/api/bars", params={"symbol": symbol, "limit": 3}
                    ).json()["bars"]
                except (httpx.HTTPError, ValueError, KeyError):
                    continue
                seen(symbol, bars, now_ms())
            stop.wait(max(0.0, every_s - (time.monotonic() - began)))
