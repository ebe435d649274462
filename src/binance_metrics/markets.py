"""Binance's three markets: spot, USDⓈ-M futures (``um``) and COIN-M futures (``cm``).

One process serves one market (``MARKET``); every stored bar carries its market, so spot
BTCUSDT and USDⓈ-M BTCUSDT never collide. :data:`MARKET_DEFAULTS` holds what differs between
them, once: where Binance serves each (WebSocket, REST and its path prefix, the archive), its
limits, and the default topics, so that one broker can carry all three. ``Settings`` takes a
market's values for every variable not set explicitly (docs/markets.md says where each comes
from and how sure it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

Market = Literal["spot", "um", "cm"]
MARKETS: Final[tuple[Market, ...]] = get_args(Market)


@dataclass(frozen=True, slots=True)
class MarketDefaults:
    """What one market is at Binance, and this project's defaults for it."""

    market: Market
    #: The combined-stream endpoint (``/stream``; streams are subscribed by ``SUBSCRIBE``).
    ws_url: str
    rest_url: str
    #: Every REST path of the market starts with it: ``/api/v3``, ``/fapi/v1``, ``/dapi/v1``.
    rest_prefix: str
    #: Streams one connection may carry.
    max_streams_per_connection: int
    #: Messages a connection may send per second (pings and pongs included).
    messages_per_second: int
    #: Connection attempts per IP and window (seconds).
    connection_attempts: int
    connection_attempt_window_s: float
    topic: str
    dlq_topic: str
    #: data.binance.vision's root of the market's archives.
    archive_root: str
    #: ``historicalTrades`` is public (spot) or needs an API key (futures: gaps are filled
    #: from ``aggTrades`` instead, ``ingest/aggregates.py``).
    public_historical_trades: bool
    #: The weight of one page of 1000 klines.
    klines_weight: int
    #: COIN-M: volume is in contracts, each trade carries its symbol's ``contractSize``.
    contracts: bool = False

    @property
    def futures(self) -> bool:
        return self.market != "spot"

    def path(self, endpoint: str) -> str:
        """``/api/v3/exchangeInfo`` for ``endpoint="exchangeInfo"`` on spot, and so on."""
        return f"{self.rest_prefix}/{endpoint}"

    def variables(self) -> dict[str, str]:
        """The ``Settings`` variables whose default is this market's."""
        return {
            "BINANCE_WS_URL": self.ws_url,
            "BINANCE_REST_URL": self.rest_url,
            "KAFKA_TOPIC": self.topic,
            "KAFKA_DLQ_TOPIC": self.dlq_topic,
        }

    @property
    def subscribe_messages_per_s(self) -> int:
        """SUBSCRIBE messages per second that leave room for a pong and a keepalive ping."""
        return self.messages_per_second - 2


MARKET_DEFAULTS: Final[dict[Market, MarketDefaults]] = {
    "spot": MarketDefaults(
        "spot",
        ws_url="wss://data-stream.binance.vision/stream",
        rest_url="https://data-api.binance.vision",
        rest_prefix="/api/v3",
        max_streams_per_connection=1024,
        messages_per_second=5,
        connection_attempts=300,
        connection_attempt_window_s=300.0,
        topic="binance-trades",
        dlq_topic="binance-trades-dlq",
        archive_root="data/spot",
        public_historical_trades=True,
        klines_weight=2,
    ),
    "um": MarketDefaults(
        "um",
        # /public carries @trade (with @depth and @bookTicker); /market carries @aggTrade.
        ws_url="wss://fstream.binance.com/public/stream",
        rest_url="https://fapi.binance.com",
        rest_prefix="/fapi/v1",
        max_streams_per_connection=200,
        messages_per_second=10,
        connection_attempts=300,
        connection_attempt_window_s=300.0,
        topic="binance-um-trades",
        dlq_topic="binance-um-trades-dlq",
        archive_root="data/futures/um",
        public_historical_trades=False,
        klines_weight=5,
    ),
    "cm": MarketDefaults(
        "cm",
        ws_url="wss://dstream.binance.com/stream",
        rest_url="https://dapi.binance.com",
        rest_prefix="/dapi/v1",
        max_streams_per_connection=200,
        messages_per_second=10,
        connection_attempts=300,
        connection_attempt_window_s=300.0,
        topic="binance-cm-trades",
        dlq_topic="binance-cm-trades-dlq",
        archive_root="data/futures/cm",
        public_historical_trades=False,
        klines_weight=5,
        contracts=True,
    ),
}
