"""Real-time OHLCV bars from Binance trade streams, exact to Binance's own klines."""

__version__ = "0.1.0"
