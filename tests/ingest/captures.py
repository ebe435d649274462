"""The real captures the ingestor's tests trade on the local exchange (see tests/data/README.md)."""

from __future__ import annotations

from binance_metrics.testing.market import MarketTrade, load_capture
from tests.support.data import DATA

CAPTURES = {
    "BTCUSDT": DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl",
    "ETHUSDT": DATA / "ETHUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl",
}


def real_trades(symbol: str, limit: int | None = None) -> list[MarketTrade]:
    """The first ``limit`` captured ``@trade`` frames of ``symbol``, exactly as recorded."""
    return load_capture(CAPTURES[symbol], limit)
