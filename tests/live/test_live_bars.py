"""Live bars through the real parts: the local exchange at real time, the ingestor, Tansu, the
dataflow and chDB, with 2-second windows so that "a minute" passes quickly.

QAAAUSDT trades four times a second throughout; QBBBUSDT trades, goes quiet, and trades again.
While it is quiet and the feed is healthy its zero-trade bars appear as the windows close (after
the wait), without a later trade; then the connection is cut and refused for a while (an
outage): no zero-trade bar may appear for a window the feed has not vouched for, until QBBBUSDT
trades again. Meanwhile the forming bar is read back through ``fetch_bars`` and ``/api/bars``:
the last bar, ``closed: false``, exactly the bar of the trades it holds. At the end every bar
equals the reference klines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import StoredBar, fetch_bars
from binance_metrics.testing.exchange import LocalExchange, RealTime
from binance_metrics.testing.faults import Cut, Fault, Refuse
from binance_metrics.testing.market import MarketTrade
from binance_metrics.trades import TradeMessage, format_scaled
from binance_metrics.web import create_router
from tests.ingest.harness import running_ingestor, settings_for
from tests.support.oracle import FIELDS, reference_klines
from tests.support.pipeline import LiveDataflow, pipeline_settings

BUSY, QUIET = "QAAAUSDT", "QBBBUSDT"
WINDOW_MS = 2_000


def market(start_ms: int) -> tuple[list[MarketTrade], int, int]:
    """The trades (E = T, so the exchange sends each at its time), the index of the trade
    before which the connection is cut, and the id of QBBBUSDT's last trade before its quiet
    spell."""
    trades: list[TradeMessage] = []

    def add(symbol: str, trade_id: int, at_ms: int) -> None:
        price = format_scaled(10**8 * (100 + trade_id % 17) + trade_id)
        trades.append(
            TradeMessage("trade", at_ms, symbol, trade_id, price, format_scaled(10**7 + trade_id),
                         at_ms, trade_id % 3 == 0)
        )  # fmt: skip

    for i in range(160):  # 40 s
        add(BUSY, 1_000 + i, start_ms + 250 * i)
    quiet_ids = [2_000 + i for i in range(14)]
    for i, trade_id in enumerate(quiet_ids):  # 0-3.9 s, then again from 24 s
        add(QUIET, trade_id, start_ms + 300 * i if i < 13 else start_ms + 24_000)
    for i in range(20):
        add(QUIET, 3_000 + i, start_ms + 24_300 + 300 * i)
    trades.sort(key=lambda t: t.trade_time_ms)
    # Renumber QBBBUSDT's second spell to follow on without a gap.
    ids = iter(range(quiet_ids[-1] + 1, 10_000))
    trades = [
        t if t.symbol != QUIET or t.trade_id < 3_000 else _with_id(t, next(ids)) for t in trades
    ]
    cut_at = next(i for i, t in enumerate(trades) if t.trade_time_ms >= start_ms + 10_000)
    return [MarketTrade.from_message(t, 0) for t in trades], cut_at, quiet_ids[-2]


def _with_id(trade: TradeMessage, trade_id: int) -> TradeMessage:
    fields = {f: getattr(trade, f) for f in trade.__struct_fields__}
    return TradeMessage(**{**fields, "trade_id": trade_id})


@dataclass
class Observation:
    quiet_next_id: int | None
    quiet_fillers: set[int]  # open times of QBBBUSDT's zero-trade bars
    busy_forming: StoredBar | None
    quiet_forming: StoredBar | None
    api_bars: list[dict[str, Any]] = field(default_factory=list)


def test_quiet_windows_close_on_time_never_in_an_outage_and_the_forming_bar_is_exact(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    start_ms = (int(time.time() * 1000) // WINDOW_MS + 2) * WINDOW_MS
    trades, cut_at, quiet_last = market(start_ms)
    cut_ms = trades[cut_at - 1].event_time  # the last frame Binance sent before the cut
    faults = [Fault(cut_at, Cut(close_frame=False)), Fault(cut_at, Refuse(12))]
    flow_settings = pipeline_settings(
        broker, empty_store, topic_prefix, WATERMARK_WAIT_S=1, FORMING_EVERY_MS=200
    )
    # 2-second windows keep the test short. WINDOW_SECONDS takes only Binance's 60 and 1, so the
    # length is set past validation: the dataflow's logic is the same at any length.
    flow_settings = flow_settings.model_copy(update={"WINDOW_SECONDS": WINDOW_MS // 1000})
    app = FastAPI()
    app.include_router(create_router(lambda: empty_store, [BUSY, QUIET]))
    observations: list[Observation] = []
    with LocalExchange(trades, faults, pace=RealTime(1.0, on_the_clock=True)) as exchange:
        # Heartbeats from frames only: the ticker's (tests/live/test_quiet_minutes.py) would
        # vouch for the quiet symbol during the outage, rightly, as no trade happens then.
        ingest_settings = settings_for(
            exchange, topic_prefix, (BUSY, QUIET), silence_timeout_s=10, tail_check_s=0
        )
        with running_ingestor(ingest_settings, broker.bootstrap_servers) as running:
            flow = LiveDataflow(flow_settings, broker)
            with TestClient(app) as client:
                while not exchange.done.is_set():
                    observations.append(observe(running.ingestor.sequences, empty_store, client))
                    time.sleep(0.2)
            exchange.wait_done(60)
        # The ingestor has flushed on leaving its context; the dataflow reads to the end.
        flow.finish()
        assert exchange.log.rest_calls == [], "the outage lost no trade: nothing to backfill"

    quiet_phase = [o for o in observations if o.quiet_next_id == quiet_last + 1]
    # Healthy and quiet: its zero-trade bars appear as the windows close, before its next trade.
    first_quiet_window = (start_ms + 3_900) // WINDOW_MS * WINDOW_MS + WINDOW_MS
    assert any(first_quiet_window in o.quiet_fillers for o in quiet_phase), (
        f"no zero-trade bar for {QUIET}'s quiet window {first_quiet_window} before its next trade"
    )
    # The outage: never a zero-trade bar for a window the feed did not vouch for to its end.
    for o in quiet_phase:
        unvouched = {w for w in o.quiet_fillers if w + WINDOW_MS > cut_ms}
        assert not unvouched, f"zero-trade bars {sorted(unvouched)} during the outage"
    # The quiet symbol's forming bar while healthy: the previous close, no trades, not closed.
    assert any(o.quiet_forming is not None and o.quiet_forming.trade_count == 0
               for o in quiet_phase)  # fmt: skip

    # The forming bar of the busy symbol: the last bar, not closed, exactly its trades so far.
    formings = [o.busy_forming for o in observations if o.busy_forming is not None]
    assert len(formings) >= 5, "the forming bar was seldom visible"
    by_id = {(t.symbol, t.id): t for t in trades}
    for bar in formings:
        assert bar.first_trade_id is not None and bar.last_trade_id is not None
        held = [by_id[(BUSY, i)] for i in range(bar.first_trade_id, bar.last_trade_id + 1)]
        assert {t.trade_time // WINDOW_MS * WINDOW_MS for t in held} == {bar.open_time_ms}
        reference = reference_klines([_message(t) for t in held], WINDOW_MS)
        assert {n: getattr(bar, n) for n in FIELDS} == reference[(BUSY, bar.open_time_ms)]
    api = [o.api_bars for o in observations if o.api_bars and not o.api_bars[-1]["closed"]]
    assert api, "/api/bars never ended on a forming bar"
    for bars in api:
        assert all(b["closed"] for b in bars[:-1])
        assert len(bars) == 1 or bars[-1]["open_time"] > bars[-2]["open_time"]
        assert {"first_trade_id", "last_trade_id"} <= set(bars[-1])

    # In the end every bar is Binance's, zero-trade ones included.
    expected = reference_klines([_message(t) for t in trades], WINDOW_MS)
    for symbol in (BUSY, QUIET):
        stored = {bar.open_time_ms: bar for bar in fetch_bars(empty_store, symbol)}
        mine = {start: k for (s, start), k in expected.items() if s == symbol}
        last = max(mine)
        assert {t for t in stored if t <= last} == set(mine), symbol
        for start, kline in mine.items():
            assert {n: getattr(stored[start], n) for n in FIELDS} == kline, (symbol, start)
        assert all(stored[t].trade_count == 0 for t in stored if t > last)


def observe(sequences: Any, store: Store, client: TestClient) -> Observation:
    quiet = fetch_bars(store, QUIET, include_open=True, limit=50)
    busy = fetch_bars(store, BUSY, include_open=True, limit=3)
    response = client.get("/api/bars", params={"symbol": BUSY, "limit": 3})
    return Observation(
        quiet_next_id=sequences[QUIET].next_id,
        quiet_fillers={b.open_time_ms for b in quiet if b.closed and b.trade_count == 0},
        busy_forming=busy[-1] if busy and not busy[-1].closed else None,
        quiet_forming=quiet[-1] if quiet and not quiet[-1].closed else None,
        api_bars=response.json()["bars"] if response.status_code == 200 else [],
    )


def _message(trade: MarketTrade) -> TradeMessage:
    data = trade.data
    return TradeMessage("trade", data["E"], data["s"], data["t"], data["p"], data["q"], data["T"],
                        data["m"])  # fmt: skip
