"""Binance's klines over REST: paged by 1000, within the request-weight budget.

``GET /api/v3/klines?symbol=XRPETH&interval=1m&startTime=1570752000000&endTime=...&limit=1000``
answers, oldest first, the klines whose open time is in ``[startTime, endTime]``::

    [[1570752000000, "0.00141342", "0.00141557", "0.00141266", "0.00141418", "1482.00000000",
      1570752059999, "2.09620110", 12, "711.00000000", "1.00579524", "0"], ...]

USDⓈ-M futures serve the same at ``/fapi/v1/klines``, COIN-M at ``/dapi/v1/klines``, where
volume is in contracts and columns 8 and 11 are base-asset volumes (compared with the stored
base volumes). A page asks from the open time after the last one received until the
end, through the same client as the trade backfill (:mod:`binance_metrics.rest_client`: calls
serialised, the weight used and ``Retry-After`` honoured); other 4xx answers are errors at once,
with Binance's message (an unknown symbol is ``-1121 Invalid symbol.``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import msgspec

from binance_metrics.errors import BinanceMetricsError
from binance_metrics.markets import MARKET_DEFAULTS
from binance_metrics.reconcile.compare import FIELDS, Kline, Value
from binance_metrics.rest_client import RestClient, RestTuning
from binance_metrics.settings import Settings

log = logging.getLogger(__name__)

PAGE_LIMIT: Final = 1000


@dataclass(frozen=True, slots=True)
class Market:
    """Where a market's klines are, what a page of 1000 costs, which fields compare with ours."""

    path: str
    weight: int
    fields: tuple[str, ...]
    default_url: str | None  # None: BINANCE_REST_URL


MARKETS: Final[dict[str, Market]] = {
    # COIN-M's "quote" columns are base-asset volumes: compared with ours (reconcile.stored).
    name: Market(
        market.path("klines"),
        market.klines_weight,
        FIELDS,
        market.rest_url if market.futures else None,
    )
    for name, market in MARKET_DEFAULTS.items()
}
#: The row's columns, by position, that are fields of ours.
_COLUMNS: Final = ((1, "open"), (2, "high"), (3, "low"), (4, "close"), (5, "volume"),
                   (7, "quote_volume"), (8, "trade_count"), (9, "taker_buy_volume"),
                   (10, "taker_buy_quote_volume"))  # fmt: skip
_decoder: Final = msgspec.json.Decoder(list[list[Any]])


class KlinesError(BinanceMetricsError):
    """Binance refused the request, or kept failing; the message says which and why."""


class RestKlines(RestClient):
    """One HTTP client; calls are serialised, so pages never burst the weight limit."""

    error = KlinesError
    refusals_are_final = True

    def __init__(self, base_url: str, tuning: RestTuning, market: str = "spot") -> None:
        super().__init__(base_url, tuning)
        self.market = MARKETS[market]

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        market: str = "spot",
        *,
        base_url: str | None = None,
        weight_budget: int | None = None,
    ) -> RestKlines:
        """The client of ``market`` (at ``base_url``, else its default or BINANCE_REST_URL)
        with the backfill's retry tuning (``INGEST__BACKFILL_*``)."""
        url = base_url or MARKETS[market].default_url or settings.BINANCE_REST_URL
        tuning = RestTuning.of(settings.INGEST)
        if weight_budget:
            tuning = replace(tuning, weight_budget=weight_budget)
        return cls(url.rstrip("/"), tuning, market)

    async def klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int, max_pages: int | None = None
    ) -> list[Kline]:
        """Klines of ``symbol`` with ``start_ms <= open time < end_ms``, oldest first (at most
        ``max_pages`` pages of 1000)."""
        found: list[Kline] = []
        cursor, pages = start_ms, 0
        while cursor < end_ms and (max_pages is None or pages < max_pages):
            params = {
                "symbol": symbol.upper(),
                "interval": interval,
                "startTime": str(cursor),
                "endTime": str(end_ms - 1),  # Binance's endTime is inclusive
                "limit": str(PAGE_LIMIT),
            }
            rows = await self._page(params)
            pages += 1
            page = [self._kline(row, symbol) for row in rows]
            page = [kline for kline in page if start_ms <= kline.open_time_ms < end_ms]
            if not page:
                break
            found.extend(page)
            cursor = page[-1].open_time_ms + 1
            if len(rows) < PAGE_LIMIT:
                break
        return found

    async def _page(self, params: dict[str, str]) -> list[list[Any]]:
        path = self.market.path
        what = f"{self.base_url}{path} {params['symbol']} from {params['startTime']}"
        return await self.get(path, params, _decoder.decode, weight=self.market.weight, what=what)

    def _kline(self, row: list[Any], symbol: str) -> Kline:
        try:
            values: dict[str, Value] = {}
            for index, name in _COLUMNS:
                if name in self.market.fields:
                    cell = row[index]
                    values[name] = int(cell) if name == "trade_count" else Decimal(str(cell))
            return Kline(int(row[0]), values)
        except (IndexError, ValueError, TypeError, InvalidOperation):
            raise KlinesError(f"{self.market.path} {symbol}: not a kline row: {row!r}") from None
