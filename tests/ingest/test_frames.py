"""The frame parser: real frames become trades, control messages are recognised, and any other
input becomes a dead letter without raising."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from binance_metrics.ingest.frames import OVERSIZED_KEEP_BYTES, Control, FrameParser
from binance_metrics.ingest.tuning import IngestTuning
from binance_metrics.trades import Rejected, TradeMessage

from .captures import real_trades
from .garbage import garbage, mutated_frames, oversized_frames, random_payloads

LIMIT = IngestTuning().max_frame_bytes
PARSER = FrameParser(("BTCUSDT", "ETHUSDT"), LIMIT)


def test_every_captured_frame_is_a_trade() -> None:
    for symbol in ("BTCUSDT", "ETHUSDT"):
        for captured in real_trades(symbol):
            trade = PARSER.parse(captured.raw.encode())
            assert isinstance(trade, TradeMessage), (captured.raw, trade)
            data = captured.data
            assert (
                trade.symbol,
                trade.trade_id,
                trade.price,
                trade.quantity,
                trade.trade_time_ms,
                trade.event_time_ms,
                trade.buyer_is_maker,
                trade.best_match,
            ) == (
                data["s"],
                data["t"],
                data["p"],
                data["q"],
                data["T"],
                data["E"],
                data["m"],
                data["M"],
            )


def test_control_messages_are_not_dead_letters() -> None:
    cases = {
        b'{"result":null,"id":1}': "result",
        b'{"result":["btcusdt@trade"],"id":3}': "result",
        b'{"code":2,"msg":"Invalid request: unknown variant","id":1}': "error",
        b'{"e":"serverShutdown","E":1730000000000}': "serverShutdown",
        b'{"stream":"btcusdt@trade","data":{"e":"serverShutdown","E":17300}}': "serverShutdown",
    }
    for raw, kind in cases.items():
        result = PARSER.parse(raw)
        assert isinstance(result, Control) and result.kind == kind, (raw, result)


@settings(max_examples=300)
@given(mutated_frames())
def test_mutated_frames_are_rejected_with_their_payload(raw: bytes) -> None:
    result = PARSER.parse(raw)
    assert isinstance(result, Rejected), (raw, result)
    assert result.payload == raw and result.error


@settings(max_examples=300)
@given(random_payloads())
def test_random_payloads_never_raise(raw: bytes) -> None:
    result = PARSER.parse(raw)
    assert isinstance(result, Rejected) and result.payload == raw


@settings(max_examples=20)
@given(oversized_frames(LIMIT))
def test_oversized_frames_keep_a_prefix(raw: bytes) -> None:
    result = PARSER.parse(raw)
    assert isinstance(result, Rejected) and result.kind == "oversized"
    assert result.payload == raw[:OVERSIZED_KEEP_BYTES]


@given(st.lists(garbage(LIMIT), max_size=5))
def test_garbage_is_never_a_trade(frames: list[bytes]) -> None:
    for raw in frames:
        assert not isinstance(PARSER.parse(raw), TradeMessage | Control)


def test_trade_for_an_unsubscribed_symbol_is_rejected() -> None:
    frame = json.loads(real_trades("BTCUSDT", 1)[0].raw)
    only_eth = FrameParser(("ETHUSDT",), LIMIT)
    result = only_eth.parse(json.dumps(frame).encode())
    assert isinstance(result, Rejected) and result.kind == "unsubscribed"


def test_a_live_trade_far_from_now_is_rejected_with_its_skew() -> None:
    raw = real_trades("BTCUSDT", 1)[0].raw.encode()
    trade_time = json.loads(raw)["data"]["T"]
    checking = FrameParser(("BTCUSDT",), LIMIT, max_skew_ms=600_000)
    assert isinstance(checking.parse(raw, now_ms=trade_time + 600_000), TradeMessage)
    for now in (trade_time + 600_001, trade_time - 600_001):
        result = checking.parse(raw, now_ms=now)
        assert isinstance(result, Rejected) and result.kind == "time_skew", result
        assert "INGEST__MAX_TRADE_TIME_SKEW_S=600" in result.error
