"""A symbol alone on its connection goes quiet: its quiet windows close on time all the same,
vouched for by the ticker (``ingest/quiet.py``), and a window of an outage that lost trades is
not filled until the ledger has them. The real parts: the local exchange at real time, the
ingestor, Tansu, the dataflow and chDB, with 2-second windows so that "a minute" passes quickly.

QCCCUSDT trades for 4 s, is quiet for 8 s (no frame at all on its connection), then the
connection is cut and refused for a while; meanwhile it trades three times, unseen (the
exchange trades on, as Binance does), and the backfill of those is held off 6 s by 429s. It
is quiet again, then trades again at 26 s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars
from binance_metrics.testing.exchange import LocalExchange, RealTime
from binance_metrics.testing.faults import Cut, Fault, Refuse
from binance_metrics.testing.market import MarketTrade
from binance_metrics.trades import TradeMessage, format_scaled
from tests.ingest.harness import running_ingestor, settings_for
from tests.support.oracle import FIELDS, reference_klines
from tests.support.pipeline import LiveDataflow, pipeline_settings

SYMBOL = "QCCCUSDT"
WINDOW_MS = 2_000


def market(start_ms: int) -> list[TradeMessage]:
    """Trades at 0-3.6 s, 12.0-12.6 s (during the outage) and 26.0-27.5 s after ``start_ms``."""
    times = [300 * i for i in range(13)] + [12_000, 12_300, 12_600]
    times += [26_000 + 300 * i for i in range(6)]
    return [
        TradeMessage("trade", start_ms + at, SYMBOL, 1 + n,
                     format_scaled(10**8 * (100 + n % 7) + n), "1.00000000", start_ms + at,
                     n % 3 == 0)
        for n, at in enumerate(times)
    ]  # fmt: skip


@dataclass(frozen=True)
class Observation:
    at_ms: int
    next_id: int | None  # the ingestor's next expected trade id
    fillers: frozenset[int]  # open times of the stored zero-trade bars


def test_a_quiet_symbol_alone_closes_its_windows_and_an_outage_waits_for_the_ledger(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    start_ms = (int(time.time() * 1000) // WINDOW_MS + 2) * WINDOW_MS
    messages = market(start_ms)
    trades = [MarketTrade.from_message(t, 0) for t in messages]
    cut_at = next(i for i, t in enumerate(messages) if t.trade_time_ms >= start_ms + 12_000)
    first_missed = messages[cut_at].trade_id
    faults = [Fault(cut_at, Cut(close_frame=False)), Fault(cut_at, Refuse(15))]
    flow_settings = pipeline_settings(
        broker, empty_store, topic_prefix, WATERMARK_WAIT_S=1, FORMING_EVERY_MS=0
    )
    # 2-second windows, set past WINDOW_SECONDS' validation (60 or 1): the same logic at any
    # length. The ingestor checks the ticker after each window boundary.
    flow_settings = flow_settings.model_copy(update={"WINDOW_SECONDS": WINDOW_MS // 1000})
    observations: list[Observation] = []
    exchange = LocalExchange(
        trades, faults, pace=RealTime(1.0, on_the_clock=True), advance_when_idle=True,
        tail_guard=0, rest_errors=[(429, 2.0)] * 3,  # the backfill waits: the ledger is behind
    )  # fmt: skip
    with exchange:
        ingest_settings = settings_for(exchange, topic_prefix, (SYMBOL,), silence_timeout_s=60)
        ingest_settings = ingest_settings.model_copy(update={"WINDOW_SECONDS": WINDOW_MS // 1000})
        with running_ingestor(ingest_settings, broker.bootstrap_servers) as running:
            flow = LiveDataflow(flow_settings, broker)
            sequence = running.ingestor.sequences[SYMBOL]
            while not exchange.done.is_set():
                bars = fetch_bars(empty_store, SYMBOL, limit=50)
                fillers = frozenset(b.open_time_ms for b in bars if b.trade_count == 0)
                observations.append(Observation(int(time.time() * 1000), sequence.next_id, fillers))
                time.sleep(0.2)
            exchange.wait_done(60)
            ticker_calls = list(exchange.log.ticker_calls)
        flow.finish()
    assert len(exchange.log.sessions) >= 2, "no outage happened"
    assert exchange.log.rest_calls, "the trades of the outage were not missed (no backfill)"

    with_trades = {t.trade_time_ms // WINDOW_MS * WINDOW_MS for t in messages}
    # Healthy and quiet, with no frame to vouch with: the first quiet window still closes
    # before the next trade happens.
    first_quiet = start_ms + 4_000
    before_next_trade = [o for o in observations if o.at_ms < start_ms + 12_000]
    assert any(first_quiet in o.fillers for o in before_next_trade), (
        f"no zero-trade bar for the quiet window {first_quiet} before the next trade"
    )
    for o in observations:
        # Never a zero-trade bar for a window that had trades ...
        assert not o.fillers & with_trades, f"zero-trade bars for windows with trades: {o}"
        # ... nor for any window from the outage's first missed trade on, until the ledger has
        # that trade (backfilled).
        if o.next_id is not None and o.next_id <= first_missed:
            assert not {w for w in o.fillers if w >= start_ms + 12_000}, o
    # Once the missed trades are backfilled, the quiet windows after them close before the next
    # trade comes.
    assert any(start_ms + 14_000 in o.fillers for o in observations if o.at_ms < start_ms + 26_000)
    # Within the REST weight: at most a call per window (and per connection opened), 20
    # symbols per call at most.
    duration_windows = (observations[-1].at_ms - observations[0].at_ms) // WINDOW_MS + 1
    assert len(ticker_calls) <= duration_windows + len(exchange.log.sessions)
    assert all(len(symbols) <= 20 for _, symbols in ticker_calls)

    # In the end every bar is Binance's, zero-trade ones included.
    expected = reference_klines(messages, WINDOW_MS)
    stored = {bar.open_time_ms: bar for bar in fetch_bars(empty_store, SYMBOL)}
    last = max(start for _, start in expected)
    assert {t for t in stored if t <= last} == {start for _, start in expected}
    for (_, start), kline in expected.items():
        assert {n: getattr(stored[start], n) for n in FIELDS} == kline, start
