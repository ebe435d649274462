"""The ingestor's heartbeats through the real app, the local exchange and Tansu: after every
trade they vouch for, for a quiet symbol too while its connection delivers, and not across a
lost connection until the symbol trades again; never counted as trades."""

from __future__ import annotations

import time

from binance_metrics.heartbeats import decode_heartbeat
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.testing.exchange import LocalExchange, RealTime
from binance_metrics.testing.faults import Cut, Fault
from binance_metrics.testing.market import MarketTrade
from binance_metrics.trades import TradeMessage, decode_trade
from tests.ingest.harness import read_topic, running_ingestor, settings_for

BUSY, QUIET = "HAAAUSDT", "HBBBUSDT"


def test_heartbeats_follow_their_trades_and_stop_for_a_quiet_symbol_after_a_cut(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    start = (int(time.time() * 1000) // 1000 + 2) * 1000
    messages = [
        TradeMessage("trade", start + 100 * i, BUSY, 10 + i, "1.00000000", "1.00000000",
                     start + 100 * i, False)
        for i in range(70)
    ] + [
        TradeMessage("trade", start + 100 * i, QUIET, 50 + i, "2.00000000", "1.00000000",
                     start + 100 * i, True)
        for i in range(8)
    ]  # fmt: skip
    messages.sort(key=lambda t: t.trade_time_ms)
    trades = [MarketTrade.from_message(t, 0) for t in messages]
    cut_at = next(i for i, t in enumerate(trades) if t.trade_time >= start + 4_000)
    cut_ms = trades[cut_at].event_time
    with LocalExchange(trades, [Fault(cut_at, Cut())], pace=RealTime(1.0, on_the_clock=True)) as ex:
        settings = settings_for(ex, topic_prefix, (BUSY, QUIET), silence_timeout_s=10)
        with running_ingestor(settings, broker.bootstrap_servers) as running:
            ex.wait_done(60)
            time.sleep(0.5)
            _, health = running.health()
        assert health["produced"] == len(trades)
    records = read_topic(broker.bootstrap_servers, settings.KAFKA_TOPIC, len(trades) + 10,
                         heartbeats=True)  # fmt: skip
    beats: dict[str, list[int]] = {BUSY: [], QUIET: []}
    for partition in {p for p, _, _ in records}:
        vouched: dict[str, int] = {}
        for p, key, value in records:
            if p != partition:
                continue
            beat = decode_heartbeat(value)
            if beat is not None:
                assert key == beat.symbol.encode()
                assert (beat.through_ms + 1) % 1000 == 0
                vouched[beat.symbol] = max(vouched.get(beat.symbol, -1), beat.through_ms)
                beats[beat.symbol].append(beat.through_ms)
                continue
            trade = decode_trade(value)
            # Nothing a heartbeat vouched for comes after it.
            assert trade.trade_time_ms > vouched.get(trade.symbol, -1), trade
    quiet_last = max(t.trade_time_ms for t in messages if t.symbol == QUIET)
    # Quiet, on a connection that delivers: still vouched for, second by second.
    assert [t for t in beats[QUIET] if t > quiet_last + 1_000]
    # After the cut, not until it trades again (it does not).
    assert not [t for t in beats[QUIET] if t >= cut_ms]
    # The busy symbol is vouched for again after its first trade on the new connection.
    assert [t for t in beats[BUSY] if t >= cut_ms]
