"""The feed's heartbeat on the trades topic: "every trade of this symbol up to T is delivered".

The ingestor produces one per symbol and second while the symbol's feed is healthy, keyed by
symbol like its trades, so it lands in the same partition after every trade it vouches for::

    {"e": "heartbeat", "s": "BTCUSDT", "T": 1723161659999, "E": 1723161660012}

``T`` (epoch ms, inclusive) is the last millisecond of a second that had passed when the
ingestor last read a frame from the symbol's connection; ``E`` is when it was produced. The
dataflow closes a minute without trades when a heartbeat has vouched for all of it
(docs/live.md); a minute during an outage has no heartbeat and is not filled.

A heartbeat is not a trade: every reader of the topic recognises it by ``"e": "heartbeat"``
(:func:`decode_heartbeat`) and skips it rather than dead-lettering it.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import msgspec

EVENT_TYPE: Final = "heartbeat"


class HeartbeatMessage(msgspec.Struct, frozen=True):
    """A heartbeat as produced to the trades topic (Binance-style one-letter keys)."""

    event_type: str = msgspec.field(name="e")
    symbol: str = msgspec.field(name="s")
    #: Every trade with a trade time up to this (epoch ms, inclusive) is delivered.
    through_ms: int = msgspec.field(name="T")
    produced_ms: int = msgspec.field(name="E")


class Heartbeat(NamedTuple):
    """A decoded heartbeat, placed in the window that holds ``through_ms``."""

    symbol: str
    window: int
    through_ms: int


_decoder: Final = msgspec.json.Decoder(HeartbeatMessage)
_encoder: Final = msgspec.json.Encoder()


def encode_heartbeat(symbol: str, through_ms: int, produced_ms: int) -> bytes:
    return _encoder.encode(HeartbeatMessage(EVENT_TYPE, symbol, through_ms, produced_ms))


def decode_heartbeat(payload: bytes) -> HeartbeatMessage | None:
    """The heartbeat in ``payload``, or None when it is not one (then it is a trade, or bad)."""
    if b'"heartbeat"' not in payload:  # cheap: most records are trades
        return None
    try:
        message = _decoder.decode(payload)
    except msgspec.DecodeError:
        return None
    if message.event_type != EVENT_TYPE or not message.symbol.isupper() or message.through_ms < 0:
        return None
    return message
