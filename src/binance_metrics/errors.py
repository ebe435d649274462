"""The one root of every error binance-metrics raises on purpose."""

from __future__ import annotations


class BinanceMetricsError(Exception):
    """Base of all errors this package raises deliberately."""


class ConfigError(BinanceMetricsError):
    """Invalid configuration; the message names the variable. The program stops at start."""


class InvalidTradeError(BinanceMetricsError, ValueError):
    """A message that is not a valid trade; it belongs in the dead-letter topic."""


class BrokerError(BinanceMetricsError):
    """Kafka could not be started (the embedded broker), reached, or used; the message names
    the cause and, for a configured Kafka, ``KAFKA_BOOTSTRAP_SERVERS``."""


class StoreError(BinanceMetricsError):
    """The bars store could not be opened."""


def deliberate_cause(exc: BaseException) -> BinanceMetricsError | None:
    """The innermost error of this package in ``exc`` and its causes, or None.

    Bytewax wraps an error raised inside a step in ``BytewaxRuntimeError`` (and ``up`` wraps
    that again); the innermost one of ours is the message that says what to fix.
    """
    found = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BinanceMetricsError):
            found = current
        current = current.__cause__
    return found
