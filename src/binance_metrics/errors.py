"""The one root of every error binance-metrics raises on purpose."""

from __future__ import annotations


class BinanceMetricsError(Exception):
    """Base of all errors this package raises deliberately."""


class ConfigError(BinanceMetricsError):
    """Invalid configuration; the message names the variable. The program stops at start."""


class InvalidTradeError(BinanceMetricsError, ValueError):
    """A message that is not a valid trade; it belongs in the dead-letter topic."""


class BrokerError(BinanceMetricsError):
    """The embedded broker could not be started or reached."""


class StoreError(BinanceMetricsError):
    """The bars store could not be opened."""
