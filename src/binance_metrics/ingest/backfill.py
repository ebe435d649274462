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

``GET /api/v3/ticker/24hr?symbols=["BTCUSDT","ETHUSDT"]&type=MINI`` carries each symbol's
``lastId``, the newest trade id, and ``closeTime``, the moment (Binance's clock) its statistics
are of: :meth:`RestBackfill.latest_trade_ids` asks it for up to 20 symbols per call (weight 2),
or for every symbol at once (weight 80) when that is cheaper (:func:`ticker_weight`), so that
trades missed at the tail of a quiet market are found without waiting for the next trade, and a
quiet symbol whose trades are all in can be vouched for (:mod:`~binance_metrics.ingest.quiet`).

The futures markets (``MARKET=um|cm``, paths ``/fapi/v1``, ``/dapi/v1``) differ: their
``historicalTrades`` needs an API key, so their gaps are filled from the public ``aggTrades``
(:meth:`RestBackfill.aggregates`, cut to the gap by :mod:`~binance_metrics.ingest.aggregates`);
their ``ticker/24hr`` has no ``symbols=[...]`` batch: one symbol per call (weight 1) or every
symbol (weight 40).

Every call goes through :class:`~binance_metrics.rest_client.RestClient` (serialised, within
the request-weight budget, ``Retry-After`` honoured): :meth:`RestBackfill.get` serves any public
GET (``exchangeInfo`` uses it too, :mod:`~binance_metrics.ingest.discovery`), so every REST call
of the process shares one budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Final, TypeVar

import msgspec

from binance_metrics.errors import BinanceMetricsError
from binance_metrics.ingest.tuning import (
    AGG_TRADES_WEIGHT,
    FUTURES_TICKER_ALL_WEIGHT,
    FUTURES_TICKER_WEIGHT,
    HISTORICAL_TRADES_WEIGHT,
    TICKER_ALL_WEIGHT,
    TICKER_SYMBOLS_PER_CALL,
    TICKER_WEIGHT,
)
from binance_metrics.markets import MARKET_DEFAULTS, MarketDefaults
from binance_metrics.rest_client import RestClient, RestTuning
from binance_metrics.settings import Settings
from binance_metrics.trades import TradeMessage, now_ms

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_LIMIT: Final = 1000


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


class TickerRow(msgspec.Struct, frozen=True):
    """What the ingestor reads of a ``/api/v3/ticker/24hr`` row (-1: no trade in 24 h)."""

    symbol: str
    lastId: int
    #: When the row's 24-hour window ends (epoch ms, Binance's clock); -1: not given.
    closeTime: int = -1


class AggTrade(msgspec.Struct, frozen=True):
    """A row of ``aggTrades``: raw trades ``f..l``, one taker order at one price and time."""

    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741 - Binance's key
    T: int
    m: bool


_decoder: Final = msgspec.json.Decoder(list[HistoricalTrade])
_agg_decoder: Final = msgspec.json.Decoder(list[AggTrade])
_ticker_decoder: Final = msgspec.json.Decoder(list[TickerRow])
_ticker_row_decoder: Final = msgspec.json.Decoder(TickerRow)


def ticker_weight(symbols: int) -> int:
    """The weight of asking the ticker of ``symbols`` symbols: 2 per 20, or 80 for all."""
    return min(-(-symbols // TICKER_SYMBOLS_PER_CALL) * TICKER_WEIGHT, TICKER_ALL_WEIGHT)


class BackfillError(BinanceMetricsError):
    """REST kept failing; the caller decides whether to give the gap up."""


class RestBackfill(RestClient):
    """One HTTP client for all symbols; calls are serialised so gaps never burst the limits."""

    error = BackfillError

    def __init__(
        self, base_url: str, tuning: RestTuning, market: MarketDefaults = MARKET_DEFAULTS["spot"]
    ) -> None:
        super().__init__(base_url, tuning)
        self.market = market

    @classmethod
    def from_settings(cls, settings: Settings) -> RestBackfill:
        """The client on ``BINANCE_REST_URL`` with the ``INGEST__BACKFILL_*`` tuning."""
        return cls(
            settings.BINANCE_REST_URL, RestTuning.of(settings.INGEST), settings.market_defaults
        )

    async def trades(self, symbol: str, from_id: int, limit: int) -> list[TradeMessage]:
        """Raw trades with ``id >= from_id`` (at most ``limit``, capped at 1000), oldest first.

        Spot only: the futures' ``historicalTrades`` needs an API key (:meth:`aggregates`)."""
        if not self.market.public_historical_trades:
            raise BackfillError(
                f"{symbol}: historicalTrades needs an API key on MARKET={self.market.market}; "
                "its gaps are filled from aggTrades by the ingestor"
            )
        params = {"symbol": symbol, "fromId": str(from_id), "limit": str(min(limit, MAX_LIMIT))}
        rows = await self.get(
            self.market.path("historicalTrades"),
            params,
            _decoder.decode,
            weight=HISTORICAL_TRADES_WEIGHT,
            what=f"backfill {symbol} fromId={from_id}",
        )
        now = now_ms()
        return [row.to_message(symbol, now) for row in rows]

    async def aggregates(
        self,
        symbol: str,
        *,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> list[AggTrade]:
        """Up to 1000 aggregate trades, oldest first: from aggregate id ``from_id``, or with a
        time in ``[start_ms, end_ms]`` (Binance: at most an hour apart). Public on every
        market; weight 20 on futures."""
        params = {"symbol": symbol, "limit": str(MAX_LIMIT)}
        if from_id is not None:
            params["fromId"] = str(from_id)
        if start_ms is not None:
            params["startTime"] = str(start_ms)
        if end_ms is not None:
            params["endTime"] = str(end_ms)
        return await self.get(
            self.market.path("aggTrades"),
            params,
            _agg_decoder.decode,
            weight=AGG_TRADES_WEIGHT,
            what=f"aggTrades {symbol} {params}",
        )

    async def latest_trade_ids(self, symbols: Sequence[str]) -> dict[str, TickerRow]:
        """The ticker row (newest trade id, ``closeTime``) of each of ``symbols`` that had a
        trade in the last 24 h."""
        if self.market.futures:
            return await self._futures_latest_trade_ids(symbols)
        wanted = set(symbols)
        if ticker_weight(len(wanted)) == TICKER_ALL_WEIGHT:
            batches: list[list[str]] = [[]]  # every symbol in one call is cheaper
        else:
            ordered = sorted(wanted)
            batches = [
                ordered[i : i + TICKER_SYMBOLS_PER_CALL]
                for i in range(0, len(ordered), TICKER_SYMBOLS_PER_CALL)
            ]
        latest: dict[str, TickerRow] = {}
        for batch in batches:
            params = {"type": "MINI"}
            if batch:
                params["symbols"] = json.dumps(batch, separators=(",", ":"))
            weight = TICKER_WEIGHT if batch else TICKER_ALL_WEIGHT
            rows = await self.get(
                self.market.path("ticker/24hr"),
                params,
                _ticker_decoder.decode,
                weight=weight,
                what="ticker",
            )
            latest.update((r.symbol, r) for r in rows if r.symbol in wanted and r.lastId >= 0)
        return latest

    async def _futures_latest_trade_ids(self, symbols: Sequence[str]) -> dict[str, TickerRow]:
        """Futures tickers: one symbol per call (weight 1), or all of them (40) when cheaper."""
        wanted = sorted(set(symbols))
        path = self.market.path("ticker/24hr")
        if len(wanted) * FUTURES_TICKER_WEIGHT > FUTURES_TICKER_ALL_WEIGHT:
            rows = await self.get(
                path, {}, _ticker_decoder.decode, weight=FUTURES_TICKER_ALL_WEIGHT, what="ticker"
            )
        else:
            rows = []
            for symbol in wanted:
                rows.extend(
                    await self.get(
                        path,
                        {"symbol": symbol},
                        _one_or_more_tickers,
                        weight=FUTURES_TICKER_WEIGHT,
                        what=f"ticker {symbol}",
                    )
                )
        chosen = set(wanted)
        return {r.symbol: r for r in rows if r.symbol in chosen and r.lastId >= 0}


def _one_or_more_tickers(content: bytes) -> list[TickerRow]:
    """USDⓈ-M answers ``symbol=`` with one object, COIN-M with a list."""
    if content.lstrip().startswith(b"["):
        return _ticker_decoder.decode(content)
    return [_ticker_row_decoder.decode(content)]
