"""Reconnect pacing: exponential backoff with jitter, and Binance's connection-attempt budget.

Binance allows 300 connection attempts per 5 minutes per IP; exceeding it bans the IP
(:data:`~binance_metrics.ingest.tuning.BINANCE_MAX_ATTEMPTS`). The backoff spreads retries out;
the :class:`AttemptLimiter`, shared by every connection of the process, makes the budget a hard
guarantee even with a tiny ``RECONNECT_DELAY_S``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque


class Backoff:
    """``base * 2**n`` capped at ``cap``, with "equal jitter": a delay is uniform in [d/2, d].

    Half the delay stays fixed so retries really spread out; the random half keeps many clients
    (or many connections of one client) from reconnecting in lockstep.
    """

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The un-jittered delay for the next attempt."""
        return min(self.cap_s, self.base_s * 2.0 ** min(self.failures, 62))

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


class AttemptLimiter:
    """At most ``max_attempts`` calls to :meth:`acquire` in any ``window_s`` seconds."""

    def __init__(self, max_attempts: int, window_s: float) -> None:
        self.max_attempts = max_attempts
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._times and now - self._times[0] >= self.window_s:
                    self._times.popleft()
                if len(self._times) < self.max_attempts:
                    self._times.append(now)
                    return
                await asyncio.sleep(self._times[0] + self.window_s - now)
