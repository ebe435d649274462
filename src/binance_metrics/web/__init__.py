"""The live candle page: an HTML page drawing stored bars with plotly, and its JSON API."""

from binance_metrics.web.live import LiveBars, create_live_router
from binance_metrics.web.routes import create_router

__all__ = ["LiveBars", "create_live_router", "create_router"]
