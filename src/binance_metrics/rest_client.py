"""Binance's public REST API within its limits: one client, calls serialised, retried.

On 429 (too many requests) and 418 (IP banned) Binance sends ``Retry-After`` (seconds); we sleep
that long before the next call. Other failures retry with exponential backoff. To stay clear of
429s in the first place, calls are serialised, and when ``X-MBX-USED-WEIGHT-1M`` (the IP's weight
used in the current minute, limit 6000) leaves no room for another call under ``weight_budget``,
the next call waits for the minute to roll over.

The trade backfill (:mod:`binance_metrics.ingest.backfill`) and the klines of the reconciliation
(:mod:`binance_metrics.reconcile.rest`) are both this client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, TypeVar

import httpx
import msgspec

from binance_metrics.errors import BinanceMetricsError
from binance_metrics.ingest.backoff import Backoff
from binance_metrics.ingest.tuning import IngestTuning

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The IP's request weight used in the current minute, on every answer.
USED_WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"


@dataclass(frozen=True, slots=True)
class RestTuning:
    """How a client retries and how much of the IP's weight a minute it may use."""

    retry_base_s: float
    retry_cap_s: float
    max_attempts: int
    timeout_s: float
    weight_budget: int

    @classmethod
    def of(cls, tuning: IngestTuning) -> RestTuning:
        """The ``INGEST__BACKFILL_*`` and ``INGEST__REST_WEIGHT_BUDGET`` settings."""
        return cls(
            retry_base_s=tuning.backfill_retry_base_s,
            retry_cap_s=tuning.backfill_retry_cap_s,
            max_attempts=tuning.backfill_max_attempts,
            timeout_s=tuning.backfill_timeout_s,
            weight_budget=tuning.rest_weight_budget,
        )


class RestClient:
    """``GET`` on one base URL, serialised, within the weight budget, retried with backoff."""

    #: Raised when the retries are used up (and for a refusal when ``refusals_are_final``).
    error: ClassVar[type[BinanceMetricsError]] = BinanceMetricsError
    #: A 4xx other than 418/429 (a bad symbol, a bad parameter) fails at once, not retried.
    refusals_are_final: ClassVar[bool] = False

    def __init__(self, base_url: str, tuning: RestTuning) -> None:
        self.base_url = base_url
        self._client = httpx.AsyncClient(base_url=base_url, timeout=tuning.timeout_s)
        self._lock = asyncio.Lock()
        self._retry_base_s = tuning.retry_base_s
        self._retry_cap_s = tuning.retry_cap_s
        self._max_attempts = tuning.max_attempts
        self._weight_budget = tuning.weight_budget
        self._used_weight = 0  # X-MBX-USED-WEIGHT-1M of the last answer ...
        self._used_minute = -1  # ... in this calendar minute (Binance's weight window)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(
        self,
        path: str,
        params: dict[str, str],
        decode: Callable[[bytes], T],
        *,
        weight: int,
        what: str,
    ) -> T:
        """``GET path`` decoded, retried, within the weight budget (``weight``: its cost)."""
        backoff = Backoff(self._retry_base_s, self._retry_cap_s)
        for _ in range(self._max_attempts):
            async with self._lock:
                if (wait := self._wait_for_weight(weight)) > 0:
                    log.warning("REST weight budget used up: waiting %.1f s", wait)
                    await asyncio.sleep(wait)
                try:
                    response = await self._client.get(path, params=params)
                except httpx.HTTPError as exc:
                    delay, why = backoff.next_delay(), f"request failed: {exc!r}"
                else:
                    self._note_weight(response)
                    status = response.status_code
                    if status == 200:
                        try:
                            return decode(response.content)
                        except msgspec.DecodeError as exc:
                            delay, why = backoff.next_delay(), f"bad response: {exc}"
                    elif status in (418, 429):
                        delay = retry_after(response) or backoff.next_delay()
                        why = f"HTTP {status}, Retry-After {delay:g} s"
                    elif self.refusals_are_final and 400 <= status < 500:
                        raise self.error(
                            f"Binance refused {what}: HTTP {status} {binance_message(response)}"
                        )
                    else:
                        delay, why = backoff.next_delay(), f"HTTP {status}: {response.text[:200]}"
                log.warning("%s: %s; retrying in %.2f s", what, why, delay)
                # Sleeping under the lock holds every other call back too: a 429/418 is per IP.
                await asyncio.sleep(delay)
        raise self.error(f"{what}: gave up after {self._max_attempts} tries")

    def _wait_for_weight(self, weight: int) -> float:
        """Seconds to wait before a call of ``weight``: the budget's minute may be used up."""
        now = time.time()
        used = self._used_weight if int(now // 60) == self._used_minute else 0
        return next_call_at(used, self._weight_budget, now, weight=weight) - now

    def _note_weight(self, response: httpx.Response) -> None:
        used = response.headers.get(USED_WEIGHT_HEADER)
        if used is not None and used.isdigit():
            self._used_weight, self._used_minute = int(used), int(time.time() // 60)


def next_call_at(used_weight: int, budget: int, now: float | None = None, *, weight: int) -> float:
    """Wall-clock time of the next allowed call (of ``weight``): now, or the next minute if
    over budget."""
    now = time.time() if now is None else now
    if used_weight + weight <= budget:
        return now
    return now - now % 60 + 60  # Binance's weight window is the calendar minute


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def binance_message(response: httpx.Response) -> str:
    """Binance's ``{"code": -1121, "msg": "Invalid symbol."}`` as ``-1121 Invalid symbol.``."""
    try:
        body = response.json()
        return f"{body['code']} {body['msg']}"
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
