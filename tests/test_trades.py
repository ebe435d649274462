from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.errors import InvalidTradeError
from binance_metrics.trades import (
    dead_letter,
    decode_dead_letter,
    decode_priced_trade,
    decode_priced_trades,
    decode_trade,
    encode_trade,
    format_scaled,
    parse_scaled,
)

FRAME_DATA = (
    b'{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,"p":"61837.63000000",'
    b'"q":"0.02000000","T":1723161255342,"m":true,"M":true}'
)


@given(st.decimals(min_value=0, max_value=10**12, places=8, allow_nan=False))
def test_parse_scaled_is_exact(value: Decimal) -> None:
    text = format(value, "f")
    assert Decimal(parse_scaled(text)) / 10**8 == value
    assert Decimal(format_scaled(parse_scaled(text))) == value


@pytest.mark.parametrize(
    ("text", "scaled"),
    [("61837.63000000", 6183763000000), ("0.00000001", 1), ("1", 10**8), ("0.1000000000", 10**7)],
)
def test_parse_scaled_examples(text: str, scaled: int) -> None:
    assert parse_scaled(text) == scaled


@pytest.mark.parametrize("text", ["", ".", "1e5", "-1", "0.000000001", "1.2.3", "abc", "\u0661"])
def test_parse_scaled_rejects(text: str) -> None:
    with pytest.raises(InvalidTradeError):
        parse_scaled(text)


def test_decode_keeps_every_digit_and_round_trips() -> None:
    trade = decode_trade(FRAME_DATA)
    assert (trade.symbol, trade.trade_id, trade.price, trade.quantity, trade.buyer_is_maker) == (
        "BTCUSDT", 3735683259, "61837.63000000", "0.02000000", True,
    )  # fmt: skip
    assert decode_trade(encode_trade(trade)) == trade
    assert trade.trade_count == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "malformed"),
        (b'{"e":"trade"}', "missing required field"),
        (FRAME_DATA.replace(b'"61837.63000000"', b'"0.00000000"'), "price must be positive"),
        (FRAME_DATA.replace(b'"0.02000000"', b'"-1"'), "not a decimal"),
        (FRAME_DATA.replace(b'"t":3735683259', b'"t":"x"'), "Expected `int`"),
        (FRAME_DATA.replace(b'"s":"BTCUSDT"', b'"s":"btcusdt"'), "upper case"),
    ],
)
def test_decode_rejects_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidTradeError, match=reason):
        decode_trade(payload)


def test_dead_letter_keeps_raw_payload() -> None:
    raw = b'\xff{"broken'
    letter = decode_dead_letter(dead_letter(raw, "why", 5))
    assert letter.raw_payload == '\\xff{"broken'
    assert (letter.error, letter.ingestion_time_ms) == ("why", 5)


def _one_by_one(payload: bytes) -> tuple[object, ...]:
    try:
        return decode_priced_trade(payload)
    except InvalidTradeError as exc:
        return ("error", str(exc))


#: Payloads that, joined, could pass for other records: halves of one record, two records in
#: one, line breaks inside a record, blank and bad records.
_HALF = len(FRAME_DATA) // 2
_PIECES = [
    FRAME_DATA,
    FRAME_DATA.replace(b'"BTCUSDT"', b'"ETHUSDT"'),
    FRAME_DATA.replace(b'"p":', b'"p":\n'),
    FRAME_DATA[:_HALF],
    FRAME_DATA[_HALF:],
    FRAME_DATA + b"\n" + FRAME_DATA,
    FRAME_DATA.replace(b'"q":"0.02000000"', b'"q":"-1"'),
    b"",
    b" ",
    b"\n",
    b"[]",
    b"\xff",
]


@given(st.lists(st.sampled_from(_PIECES), max_size=12))
def test_a_batch_decodes_as_each_record_alone(batch: list[bytes]) -> None:
    """Decoding a batch at once never attributes a trade to the wrong record."""
    decoded = [
        ("error", str(result)) if isinstance(result, InvalidTradeError) else result
        for result in decode_priced_trades(batch)
    ]
    assert decoded == [_one_by_one(payload) for payload in batch]
