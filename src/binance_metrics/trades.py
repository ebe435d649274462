"""Binance trade wire formats, the trade message on Kafka, and the dead-letter record.

Prices and quantities travel as Binance's decimal strings and become integers scaled by 10**8
(:func:`parse_scaled`), so no digit is ever lost to floating point.

A spot ``<symbol>@trade`` frame on the combined stream looks like::

    {"stream": "btcusdt@trade",
     "data": {"e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": 3735683259,
              "p": "61837.63000000", "q": "0.00010000", "T": 1723161255342,
              "m": true, "M": true}}

The message on ``binance-trades`` keeps those keys and adds ``ingestionTimeMs`` and
``latencyMs``. An aggregate trade (data.binance.vision ``aggTrades`` or REST ``/api/v3/aggTrades``)
is carried with ``e = "aggTrade"``, its aggregate id ``a``, ``t = f`` (first raw trade id) and
``l`` (last raw trade id), so trade counts stay right.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from binance_metrics.errors import InvalidTradeError

SCALE_DIGITS: Final = 8
SCALE: Final = 10**SCALE_DIGITS

# Bounds a trade must respect to be stored exactly; anything else is refused at the edge (to the
# dead-letter topic) rather than overflowing a column or flooding the store with fillers.
#: Binance opened in July 2017: an earlier trade time is a corrupt record.
EARLIEST_TRADE_TIME_MS: Final = 1_498_867_200_000  # 2017-07-01T00:00:00Z
#: Far above any real price or quantity (BTC ~1e5, SHIB-like quantities ~1e10), far below what
#: Decimal(38, 8) holds (1e30), so a minute's sums cannot overflow either.
MAX_PRICE: Final = 10**15 * SCALE
MAX_QUANTITY: Final = 10**15 * SCALE
#: price x quantity of one trade, scaled by 10**16; a minute's sum must fit Decimal(38, 16) (1e22).
MAX_QUOTE: Final = 10**16 * SCALE * SCALE
#: Far above any COIN-M contract size (10 or 100 USD), so a base quantity fits its column.
MAX_CONTRACT_SIZE: Final = 10**6


class TradeMessage(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One trade (or one aggregate trade) as produced to the trades topic.

    Attributes have readable names; on the wire they keep Binance's one-letter keys (shown on
    the right), so a message is a Binance trade event plus our enrichment.
    """

    event_type: str = msgspec.field(name="e")  # "trade" or "aggTrade"
    event_time_ms: int = msgspec.field(name="E")
    symbol: str = msgspec.field(name="s")  # upper case
    #: The trade id; for an aggregate, the first raw trade id it covers (Binance's ``f``).
    trade_id: int = msgspec.field(name="t")
    price: str = msgspec.field(name="p")  # decimal string
    quantity: str = msgspec.field(name="q")  # decimal string
    trade_time_ms: int = msgspec.field(name="T")
    #: The buyer is the maker, so a taker buy is ``buyer_is_maker == False``.
    buyer_is_maker: bool = msgspec.field(name="m")
    ingestion_time_ms: int = msgspec.field(default=0, name="ingestionTimeMs")
    latency_ms: int = msgspec.field(default=0, name="latencyMs")
    best_match: bool | None = msgspec.field(default=None, name="M")  # spot only
    #: Futures trade type; only ``"MARKET"`` trades make klines.
    trade_type: str | None = msgspec.field(default=None, name="X")
    aggregate_id: int | None = msgspec.field(default=None, name="a")
    #: The last raw trade id of an aggregate; None for a raw trade.
    aggregate_last_id: int | None = msgspec.field(default=None, name="l")
    backfilled: bool = False  # fetched over REST after a gap, not seen live
    #: COIN-M only: the symbol's ``contractSize`` (exchangeInfo), added by the ingestor, so the
    #: dataflow can compute the base-asset volume of a trade of ``quantity`` contracts.
    contract_size: int | None = msgspec.field(default=None, name="cs")

    @property
    def last_trade_id(self) -> int:
        return self.trade_id if self.aggregate_last_id is None else self.aggregate_last_id

    @property
    def trade_count(self) -> int:
        """Raw trades this message stands for (an aggregate covers several)."""
        return self.last_trade_id - self.trade_id + 1


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input that is not a valid trade, bound for the dead-letter topic.

    Every entry point (WebSocket frames, recorded files, Kafka records in the dataflow, REST
    backfill) turns bad input into one of these, so nothing is dropped without a reason.
    """

    payload: bytes  # the input as received (an oversized frame: its head only)
    error: str  # why, for a person
    kind: str = "invalid"  # a short label for metrics: not_json, oversized, unsubscribed, ...

    def dead_letter(self, ingestion_time_ms: int | None = None) -> bytes:
        """The dead-letter record of this input."""
        return dead_letter(self.payload, self.error, ingestion_time_ms)


class DeadLetter(msgspec.Struct, frozen=True):
    """What the dead-letter topic holds: the payload exactly as received and why it was refused."""

    raw_payload: str = msgspec.field(name="rawPayload")
    error: str
    ingestion_time_ms: int = msgspec.field(name="ingestionTimeMs")


#: Decodes a :class:`TradeMessage` (no checks: :func:`decode_priced_trade` checks too).
trade_decoder: Final = msgspec.json.Decoder(TradeMessage)
_encoder: Final = msgspec.json.Encoder()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_scaled(text: str) -> int:
    """Parse a non-negative decimal string exactly into an integer scaled by 10**8.

    >>> parse_scaled("61837.63000000")
    6183763000000
    >>> parse_scaled("0.00000001")
    1

    Digits beyond the eighth decimal must be zeros: Binance never sends more precision, and
    rounding would silently change a bar.
    """
    if len(text) > 9 and text[-9] == ".":  # Binance's own shape, "61837.63000000": fast path
        digits = text.replace(".", "", 1)
        if digits.isdigit() and digits.isascii():  # int() alone would take "_", "+" or " "
            return int(digits)
    whole, _, frac = text.partition(".")
    if not whole and not frac:
        raise InvalidTradeError(f"not a decimal number: {text!r}")
    if len(frac) > SCALE_DIGITS:
        frac, extra = frac[:SCALE_DIGITS], frac[SCALE_DIGITS:]
        if extra.strip("0"):
            raise InvalidTradeError(f"more than {SCALE_DIGITS} decimals: {text!r}")
    digits = (whole or "0") + frac.ljust(SCALE_DIGITS, "0")
    if not digits.isascii() or not digits.isdigit():
        raise InvalidTradeError(f"not a decimal number: {text!r}")
    return int(digits)


def format_scaled(value: int) -> str:
    """Inverse of :func:`parse_scaled`, as a plain decimal with exactly 8 decimals."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**SCALE_DIGITS)
    return f"{sign}{whole}.{frac:0{SCALE_DIGITS}d}"


def validate_trade(trade: TradeMessage, latest_ms: int | None = None) -> TradeMessage:
    """Check the invariants the bar logic relies on; raise :class:`InvalidTradeError` if broken.

    ``latest_ms``: the latest trade time to accept (now plus the allowed clock skew).
    """
    price_and_quantity(trade, latest_ms)
    return trade


def price_and_quantity(trade: TradeMessage, latest_ms: int | None = None) -> tuple[int, int]:
    """Validate ``trade`` and return its price and quantity, scaled by 10**8."""
    if trade.event_type not in ("trade", "aggTrade"):
        raise InvalidTradeError(f"unexpected event type {trade.event_type!r}")
    if not trade.symbol or not trade.symbol.isupper():
        raise InvalidTradeError(f"symbol must be upper case, got {trade.symbol!r}")
    price, qty = parse_scaled(trade.price), parse_scaled(trade.quantity)
    if price <= 0:
        raise InvalidTradeError(f"price must be positive, got {trade.price!r}")
    if qty <= 0:
        raise InvalidTradeError(f"quantity must be positive, got {trade.quantity!r}")
    if trade.trade_id < 0 or trade.last_trade_id < trade.trade_id:
        raise InvalidTradeError(f"bad trade id range {trade.trade_id}..{trade.last_trade_id}")
    if price > MAX_PRICE or qty > MAX_QUANTITY or price * qty > MAX_QUOTE:
        raise InvalidTradeError(
            f"price {trade.price} x quantity {trade.quantity} is beyond any real trade "
            "(and beyond what the bar columns hold)"
        )
    size = trade.contract_size
    if size is not None and not 0 < size <= MAX_CONTRACT_SIZE:
        raise InvalidTradeError(f"contract size must be 1..{MAX_CONTRACT_SIZE}, got {size}")
    time_ms = trade.trade_time_ms
    if time_ms < EARLIEST_TRADE_TIME_MS:
        raise InvalidTradeError(f"trade time {time_ms} ms is before Binance existed (2017-07)")
    if latest_ms is not None and time_ms > latest_ms:
        raise InvalidTradeError(
            f"trade time {time_ms} ms is {(time_ms - now_ms()) / 1000:.0f} s in the future"
        )
    return price, qty


def decode_trade(payload: bytes | str, latest_ms: int | None = None) -> TradeMessage:
    """Decode and validate one trade message; any problem raises :class:`InvalidTradeError`."""
    return decode_priced_trade(payload, latest_ms)[0]


def decode_priced_trade(
    payload: bytes | str, latest_ms: int | None = None
) -> tuple[TradeMessage, int, int]:
    """Like :func:`decode_trade`, also returning the scaled price and quantity (parsed once)."""
    try:
        trade = trade_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise InvalidTradeError(str(exc)) from None
    return (trade, *price_and_quantity(trade, latest_ms))


def decode_priced_trades(
    payloads: Sequence[bytes], latest_ms: int | None = None
) -> list[tuple[TradeMessage, int, int] | InvalidTradeError]:
    """:func:`decode_priced_trade` of every payload: the result, or the error it raised.

    The batch is decoded in one call when it can be (about a third of the decoding cost is the
    call): as lines, when no payload holds a line break, so that line ``i`` is payload ``i``
    and nothing can be attributed to the wrong record. Otherwise, or when any payload is bad,
    each payload is decoded alone.
    """
    decoded: list[TradeMessage] | None = None
    if payloads:
        joined = b"\n".join(payloads)
        if joined.count(b"\n") == len(payloads) - 1:
            try:
                decoded = trade_decoder.decode_lines(joined)
            except msgspec.DecodeError:
                decoded = None
            if decoded is not None and len(decoded) != len(payloads):
                decoded = None  # a blank payload: decode_lines skips it
    if decoded is None:
        return [_decoded_or_error(payload, latest_ms) for payload in payloads]
    results: list[tuple[TradeMessage, int, int] | InvalidTradeError] = []
    for trade in decoded:
        try:
            results.append((trade, *price_and_quantity(trade, latest_ms)))
        except InvalidTradeError as exc:
            results.append(exc)
    return results


def _decoded_or_error(
    payload: bytes, latest_ms: int | None
) -> tuple[TradeMessage, int, int] | InvalidTradeError:
    try:
        return decode_priced_trade(payload, latest_ms)
    except InvalidTradeError as exc:
        return exc


def encode_trade(trade: TradeMessage) -> bytes:
    return _encoder.encode(trade)


def dead_letter(raw: bytes | str, error: str, ingestion_time_ms: int | None = None) -> bytes:
    """The dead-letter record for ``raw``: the payload (undecodable bytes kept as escapes)."""
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="backslashreplace")
    ts = now_ms() if ingestion_time_ms is None else ingestion_time_ms
    return _encoder.encode(DeadLetter(raw_payload=text, error=error, ingestion_time_ms=ts))


def decode_dead_letter(payload: bytes) -> DeadLetter:
    return msgspec.json.decode(payload, type=DeadLetter)
