"""Fetch the raw trades a reconnect missed from Binance REST, honouring its rate limits.

``GET /api/v3/historicalTrades?symbol=BTCUSDT&fromId=3735683259&limit=1000`` answers::

    [{"id": 3735683259, "price": "61837.63000000", "qty": "0.02000000",
      "quoteQty": "1236.75260000", "time": 1723161255342, "isBuyerMaker": true,
      "isBestMatch": true}, ...]

Why historicalTrades and not aggTrades: the gap is a range of *raw* trade ids, and
``historicalTrades?fromId=`` takes a raw trade id and returns raw trades, so every missing trade
comes back exactly once and nothing overlaps the live stream. ``aggTrades?fromId=`` takes an
*aggregate* id; fetching by time instead returns aggregates whose raw range ``[f, l]`` can
straddle the gap edge, and an aggregate cannot be split (its quantity is a sum), so the edges
would be doubled or lost. The price is weight (25 instead of 4 per call): gaps are rare.

On 429 (too many requests) and 418 (IP banned) Binance sends ``Retry-After`` (seconds); we sleep
that long before the next call. Other failures retry with exponential backoff. To stay clear of
429s in the first place, calls are serialised, and when ``X-MBX-USED-WEIGHT-1M`` (the IP's weight
used in the current minute, limit 6000) leaves no room for another call under ``weight_budget``,
the next call waits for the minute to roll over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

import httpx
import msgspec

from binance_metrics.errors import BinanceMetricsError
from binance_metrics.ingest.backoff import Backoff
from binance_metrics.ingest.tuning import HISTORICAL_TRADES_WEIGHT
from binance_metrics.settings import Settings
from binance_metrics.trades import TradeMessage, now_ms

log = logging.getLogger(__name__)

HISTORICAL_TRADES: Final = "/api/v3/historicalTrades"
MAX_LIMIT: Final = 1000
USED_WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"


class HistoricalTrade(msgspec.Struct, frozen=True):
    id: int
    price: str
    qty: str
    time: int
    isBuyerMaker: bool
    isBestMatch: bool | None = None

    def to_message(self, symbol: str, ingestion_ms: int) -> TradeMessage:
        # REST has no event time: the trade time stands in for E, so latencyMs shows the delay.
        return TradeMessage(
            event_type="trade",
            event_time_ms=self.time,
            symbol=symbol,
            trade_id=self.id,
            price=self.price,
            quantity=self.qty,
            trade_time_ms=self.time,
            buyer_is_maker=self.isBuyerMaker,
            best_match=self.isBestMatch,
            ingestion_time_ms=ingestion_ms,
            latency_ms=ingestion_ms - self.time,
            backfilled=True,
        )


_decoder: Final = msgspec.json.Decoder(list[HistoricalTrade])


class BackfillError(BinanceMetricsError):
    """REST kept failing; the caller decides whether to give the gap up."""


class RestBackfill:
    """One HTTP client for all symbols; calls are serialised so gaps never burst the limits."""

    def __init__(
        self,
        base_url: str,
        *,
        retry_base_s: float,
        retry_cap_s: float,
        max_attempts: int,
        timeout_s: float,
        weight_budget: int,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)
        self._lock = asyncio.Lock()
        self._retry_base_s = retry_base_s
        self._retry_cap_s = retry_cap_s
        self._max_attempts = max_attempts
        self._weight_budget = weight_budget
        self._not_before = 0.0  # wall clock: no call before this (weight budget used up)

    @classmethod
    def from_settings(cls, settings: Settings) -> RestBackfill:
        """The client on ``BINANCE_REST_URL`` with the ``INGEST__BACKFILL_*`` tuning."""
        tuning = settings.INGEST
        return cls(
            settings.BINANCE_REST_URL,
            retry_base_s=tuning.backfill_retry_base_s,
            retry_cap_s=tuning.backfill_retry_cap_s,
            max_attempts=tuning.backfill_max_attempts,
            timeout_s=tuning.backfill_timeout_s,
            weight_budget=tuning.rest_weight_budget,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def trades(self, symbol: str, from_id: int, limit: int) -> list[TradeMessage]:
        """Raw trades with ``id >= from_id`` (at most ``limit``, capped at 1000), oldest first."""
        params = {"symbol": symbol, "fromId": str(from_id), "limit": str(min(limit, MAX_LIMIT))}
        backoff = Backoff(self._retry_base_s, self._retry_cap_s)
        for _ in range(self._max_attempts):
            async with self._lock:
                if (wait := self._not_before - time.time()) > 0:
                    log.warning("REST weight budget used up: waiting %.1f s", wait)
                    await asyncio.sleep(wait)
                try:
                    response = await self._client.get(HISTORICAL_TRADES, params=params)
                except httpx.HTTPError as exc:
                    delay, why = backoff.next_delay(), f"request failed: {exc!r}"
                else:
                    self._note_weight(response)
                    if response.status_code == 200:
                        try:
                            rows = _decoder.decode(response.content)
                        except msgspec.DecodeError as exc:
                            delay, why = backoff.next_delay(), f"bad response: {exc}"
                        else:
                            now = now_ms()
                            return [row.to_message(symbol, now) for row in rows]
                    elif response.status_code in (418, 429):
                        delay = _retry_after(response) or backoff.next_delay()
                        why = f"HTTP {response.status_code}, Retry-After {delay:g} s"
                    else:
                        delay = backoff.next_delay()
                        why = f"HTTP {response.status_code}: {response.text[:200]}"
                log.warning(
                    "backfill %s fromId=%d: %s; retrying in %.2f s", symbol, from_id, why, delay
                )
                # Sleeping under the lock holds every other symbol back too: a 429/418 is per IP.
                await asyncio.sleep(delay)
        raise BackfillError(f"{symbol} fromId={from_id}: gave up after {self._max_attempts} tries")

    def _note_weight(self, response: httpx.Response) -> None:
        used = response.headers.get(USED_WEIGHT_HEADER)
        if used is not None and used.isdigit():
            self._not_before = max(self._not_before, next_call_at(int(used), self._weight_budget))


def next_call_at(
    used_weight: int, budget: int, now: float | None = None, cost: int = HISTORICAL_TRADES_WEIGHT
) -> float:
    """Wall-clock time of the next allowed call (of weight ``cost``): now, or the next minute
    if over budget."""
    now = time.time() if now is None else now
    if used_weight + cost <= budget:
        return now
    return now - now % 60 + 60  # Binance's weight window is the calendar minute


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
