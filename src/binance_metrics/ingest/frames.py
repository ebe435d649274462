"""Parse one combined-stream WebSocket frame into a trade, a control message or a rejection.

A trade frame (spot ``<symbol>@trade`` on ``/stream?streams=...``)::

    {"stream": "btcusdt@trade",
     "data": {"e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": 3735683259,
              "p": "61837.63000000", "q": "0.02000000", "T": 1723161255342,
              "m": true, "M": true}}

Control messages, which are handled and logged but are not trades and not dead letters::

    {"result": null, "id": 1}                           reply to SUBSCRIBE / LIST_SUBSCRIPTIONS
    {"code": 2, "msg": "Invalid request: ...", "id": 1}  error reply
    {"e": "serverShutdown", "E": 1730000000000}         the server will cut this connection soon
    {"stream": "...", "data": {"e": "serverShutdown", "E": 1730000000000}}  (same, wrapped)

Everything else is a :class:`Rejected` frame for the dead-letter topic. The hot path is one typed
msgspec decode (``Frame``); only frames that fail it are decoded again, untyped, to tell control
messages from garbage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from binance_metrics.errors import InvalidTradeError
from binance_metrics.trades import Rejected, TradeMessage, validate_trade

#: How much of an oversized frame the dead letter keeps (Kafka messages are bounded too).
OVERSIZED_KEEP_BYTES: Final = 4096


class Frame(msgspec.Struct):
    stream: str
    data: TradeMessage


@dataclass(frozen=True, slots=True)
class Control:
    """A non-trade message from the server: ``kind`` is result, error or serverShutdown."""

    kind: str
    detail: dict[str, Any]


_frame_decoder: Final = msgspec.json.Decoder(Frame)
_any_decoder: Final = msgspec.json.Decoder()


class FrameParser:
    """Turns raw frames into trades for the subscribed symbols (``stream`` -> symbol).

    A frame above ``max_frame_bytes`` is not a trade (those are about 200 bytes) and is rejected
    without being decoded.
    """

    def __init__(
        self, symbols: tuple[str, ...], max_frame_bytes: int, max_skew_ms: int = 0
    ) -> None:
        self._streams: dict[str, str] = {}
        self.add(symbols)
        self._max = max_frame_bytes
        self._max_skew_ms = max_skew_ms

    def add(self, symbols: Iterable[str]) -> None:
        """Accept trades of ``symbols`` too (listed while running). Symbols are never removed:
        trades already in flight when a symbol is unsubscribed are still trades."""
        self._streams.update((f"{s.lower()}@trade", s) for s in symbols)

    def parse(self, raw: bytes, now_ms: int | None = None) -> TradeMessage | Control | Rejected:
        """Never raises: every input becomes exactly one of the three results.

        With ``now_ms`` (and a ``max_skew_ms``), a trade time further than that from now is
        rejected.
        """
        if len(raw) > self._max:
            return Rejected(
                raw[:OVERSIZED_KEEP_BYTES],
                f"frame of {len(raw)} bytes exceeds {self._max}; "
                f"rawPayload keeps the first {OVERSIZED_KEEP_BYTES} bytes",
                "oversized",
            )
        try:
            frame = _frame_decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return self._not_a_trade(raw, exc)
        trade = frame.data
        symbol = self._streams.get(frame.stream)
        if symbol is None:
            return Rejected(raw, f"stream {frame.stream!r} was not subscribed", "unsubscribed")
        if trade.symbol != symbol:
            return Rejected(
                raw, f"stream {frame.stream!r} carries symbol {trade.symbol!r}", "mismatch"
            )
        if trade.event_type != "trade":
            return Rejected(raw, f"unexpected event type {trade.event_type!r} on a trade stream")
        try:
            validate_trade(trade)
        except InvalidTradeError as exc:
            return Rejected(raw, str(exc))
        if now_ms is not None and self._max_skew_ms:
            skew = trade.trade_time_ms - now_ms
            if abs(skew) > self._max_skew_ms:
                return Rejected(
                    raw,
                    f"trade time {trade.trade_time_ms} ms is {skew / 1000:+.0f} s from now "
                    f"(more than INGEST__MAX_TRADE_TIME_SKEW_S={self._max_skew_ms / 1000:g})",
                    "time_skew",
                )
        return trade

    def _not_a_trade(self, raw: bytes, exc: Exception) -> Control | Rejected:
        try:
            message = _any_decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as not_json:
            return Rejected(raw, f"not JSON: {not_json}", "not_json")
        if isinstance(message, dict):
            control = _control(message)
            if control is None and isinstance(message.get("data"), dict):
                control = _control(message["data"])
            if control is not None:
                return control
        return Rejected(raw, f"not a trade frame: {exc}")


def _control(message: dict[str, Any]) -> Control | None:
    if message.get("e") == "serverShutdown":
        return Control("serverShutdown", message)
    if "result" in message and "id" in message:
        return Control("result", message)
    if "code" in message and "msg" in message:
        return Control("error", message)
    return None
