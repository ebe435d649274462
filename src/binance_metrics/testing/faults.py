"""The fault script of a :class:`~binance_metrics.testing.exchange.LocalExchange`.

A fault is applied just before the market's frame number ``at`` (``Fault(at, action)``); several
faults may share an index and apply in the order given. What each action does to the connections
open at that moment:

* :class:`Cut`: closes them, with a close frame or by dropping the TCP connection;
* :class:`Drop`: the next ``count`` trades happen (REST serves them) but are not sent;
* :class:`Silence`: they stop receiving data, but still answer pings (a stalled connection);
* :class:`Shutdown`: a ``serverShutdown`` event, then a cut after ``grace_s``;
* :class:`Refuse`: the next ``count`` handshakes are refused with HTTP 503;
* :class:`Garbage`: extra frames that are not trades (text, or binary when not UTF-8);
* :class:`Hold`: the market stops until ``release`` is set (``reached`` tells it got there);
* :class:`Listing`: ``exchangeInfo`` lists ``symbol`` as ``TRADING`` from now on;
* :class:`Delisting`: ``exchangeInfo`` lists ``symbol`` as ``BREAK`` from now on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cut:
    close_frame: bool = True


@dataclass(frozen=True)
class Drop:
    count: int


@dataclass(frozen=True)
class Silence:
    pass


@dataclass(frozen=True)
class Shutdown:
    grace_s: float = 0.3


@dataclass(frozen=True)
class Refuse:
    count: int


@dataclass(frozen=True)
class Garbage:
    frames: tuple[str | bytes, ...]


@dataclass(frozen=True)
class Hold:
    """The market stops before frame ``at`` (``reached`` is set) until ``release`` is set."""

    release: threading.Event
    reached: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Listing:
    symbol: str


@dataclass(frozen=True)
class Delisting:
    symbol: str


Action = Cut | Drop | Silence | Shutdown | Refuse | Garbage | Hold | Listing | Delisting


@dataclass(frozen=True)
class Fault:
    at: int
    action: Action
