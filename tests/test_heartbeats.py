"""Heartbeats on the trades topic: recognised by every reader, never taken for a bad trade."""

from __future__ import annotations

from binance_metrics.fragments import Fragment, preaggregate
from binance_metrics.heartbeats import Heartbeat, decode_heartbeat, encode_heartbeat
from binance_metrics.trades import Rejected, TradeMessage, encode_trade

MINUTE_MS = 60_000
T0 = 1_723_161_600_000  # a minute boundary


def trade(trade_id: int, time_ms: int) -> bytes:
    return encode_trade(
        TradeMessage("trade", time_ms, "BTCUSDT", trade_id, "1.00000000", "2.00000000",
                     time_ms, False)
    )  # fmt: skip


def test_a_heartbeat_decodes_back_and_a_trade_or_garbage_is_not_one() -> None:
    payload = encode_heartbeat("BTCUSDT", T0 + 999, T0 + 1_012)
    assert payload == b'{"e":"heartbeat","s":"BTCUSDT","T":1723161600999,"E":1723161601012}'
    message = decode_heartbeat(payload)
    assert message is not None
    assert (message.symbol, message.through_ms, message.produced_ms) == (
        "BTCUSDT", T0 + 999, T0 + 1_012,
    )  # fmt: skip
    assert decode_heartbeat(trade(1, T0)) is None
    for bad in (b'{"e":"heartbeat"}', b'{"e":"heartbeat","s":"btc","T":1,"E":1}', b"\xff"):
        assert decode_heartbeat(bad) is None


def test_preaggregate_keeps_the_latest_heartbeat_per_window_and_dead_letters_none() -> None:
    counted: list[tuple[int, int]] = []
    batch = [
        trade(1, T0 + 5),
        encode_heartbeat("BTCUSDT", T0 + 999, 0),
        encode_heartbeat("BTCUSDT", T0 + 1_999, 0),
        encode_heartbeat("BTCUSDT", T0 + MINUTE_MS + 999, 0),
        b"not json",
    ]
    out = preaggregate(batch, MINUTE_MS, lambda t, r: counted.append((t, r)))
    assert counted == [(1, 1)]
    assert [type(item) for item in out].count(Fragment) == 1
    assert [item.payload for item in out if isinstance(item, Rejected)] == [b"not json"]
    assert sorted(item for item in out if isinstance(item, Heartbeat)) == [
        Heartbeat("BTCUSDT", T0 // MINUTE_MS, T0 + 1_999),
        Heartbeat("BTCUSDT", T0 // MINUTE_MS + 1, T0 + MINUTE_MS + 999),
    ]


def test_a_heartbeat_from_the_future_is_dead_lettered_like_a_trade_from_the_future() -> None:
    out = preaggregate([encode_heartbeat("BTCUSDT", T0 + 10_000, 0)], MINUTE_MS,
                       lambda t, r: None, latest_ms=T0)  # fmt: skip
    (rejected,) = out
    assert isinstance(rejected, Rejected) and "future" in rejected.error
