"""The Bytewax dataflow: trades from Kafka -> 1-minute bars -> ClickHouse.

::

    Kafka (binance-trades) -> pre-aggregate each input batch per (symbol, window)
        |-> undecodable records --------------------------------------------------> DLQ topic
        '-> key by symbol -> seen trades (each trade id once)
              |-> windows older than the history (stale) ---------------------.
              '-> EventClock(trade time) + TumblingWindower -> fold_window    |
                    |-> closed windows ----.                                   |
                    '-> late fragments ----+-> bar book (corrections, fill) ---+-> ClickHouse

Pre-aggregation is exact because the bar is a monoid (:mod:`binance_metrics.bars`), and it takes
the per-trade cost out of the windowing operator, which is the bottleneck of a naive flow
(docs/performance.md). Nothing is counted twice: the seen-trades step drops trade ids its window
already holds (:mod:`binance_metrics.seen_trades`). Late data is never dropped: fold_window's
``late`` stream and the partial bars that Bytewax re-emits once a key's windows have closed both
go through the bar book, which merges them into the full bar before anything reaches the store;
trades older than the book's history are merged by the sink into the stored bar.

Live, the ingestor's heartbeats (:mod:`binance_metrics.heartbeats`) go through the windows with
the trades, so that a minute without trades opens and closes a window, and to the bar book,
which fills such a minute once the feed vouched for it; a step beside the windows writes each
symbol's forming bar (:mod:`binance_metrics.forming_step`) to a table of its own (docs/live.md).
"""

from __future__ import annotations

import gc
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple, TypeGuard, cast

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from prometheus_client import Counter

from binance_metrics.bar_book import BarBook, BookUpdate, WindowBar
from binance_metrics.bars import Bar, BarUpdate, merge
from binance_metrics.forming import FormingUpdate
from binance_metrics.forming_step import forming_bars
from binance_metrics.fragments import Fragment, StaleFragment
from binance_metrics.heartbeats import Heartbeat
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.source import RawKafkaSource
from binance_metrics.ledger.accounted import accounted_trades
from binance_metrics.message_columns import fold_messages
from binance_metrics.seen_trades import SeenTrades
from binance_metrics.settings import Settings
from binance_metrics.store.clickhouse import bars_table
from binance_metrics.store.forming import ClickHouseFormingSink
from binance_metrics.store.sink import ClickHouseBarSink, StoreHealth, output_bars
from binance_metrics.trades import Rejected

log = logging.getLogger(__name__)

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Added to the wait when telling Bytewax when to wake up: without it the default clock
#: busy-spins a core at every window end (docs/architecture.md, Bytewax 0.21.1).
WAKE_MARGIN: Final = timedelta(milliseconds=200)


#: The same counts for Prometheus, in the default registry: Bytewax serves it on :3030/metrics
#: when BYTEWAX_DATAFLOW_API_ENABLED=1, and ``binance-metrics up`` on /metrics.
PROMETHEUS_COUNTERS: Final = {
    "trades": Counter("binance_metrics_dataflow_trades_total", "Valid raw trades read"),
    "duplicate_trades": Counter(
        "binance_metrics_dataflow_duplicate_trades_total",
        "Trades whose id was already counted in their bar, dropped",
    ),
    "undecided_trades": Counter(
        "binance_metrics_dataflow_undecided_trades_total",
        "Trades older than the history that overlap a stored bar with holes, not written",
    ),
    "conflicting_trades": Counter(
        "binance_metrics_dataflow_conflicting_trades_total",
        "Aggregates that overlap counted trades in part, left out of the bar",
    ),
    "rejected": Counter(
        "binance_metrics_dataflow_dead_letters_total", "Records sent to the dead-letter topic"
    ),
    "late_trades": Counter(
        "binance_metrics_dataflow_late_trades_total",
        "Trades that arrived after their window closed",
    ),
    "bars_written": Counter(
        "binance_metrics_dataflow_bars_written_total", "Bar rows written to ClickHouse"
    ),
}


#: The collector's first threshold while a dataflow runs (Python's default is 700): each Kafka
#: record is a tracked object, and with the default a full collection of the whole heap ran
#: every few thousand records, 15 % of the dataflow's CPU at 500 symbols (docs/performance.md).
GC_THRESHOLDS: Final = (50_000, 20, 100)


@dataclass
class FlowStats:
    """Counters of one dataflow run, shared by its workers (threads of one process)."""

    trades: int = 0
    duplicate_trades: int = 0
    conflicting_trades: int = 0
    undecided_trades: int = 0
    rejected: int = 0
    late_trades: int = 0
    bars_written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)
                PROMETHEUS_COUNTERS[name].inc(value)

    def summary(self) -> dict[str, int]:
        with self._lock:
            return {
                "trades": self.trades,
                "duplicate_trades": self.duplicate_trades,
                "conflicting_trades": self.conflicting_trades,
                "undecided_trades": self.undecided_trades,
                "rejected": self.rejected,
                "late_trades": self.late_trades,
                "bars_written": self.bars_written,
            }


@dataclass(frozen=True)
class _WakeAfter:
    """``to_system_utc`` for the event clock: wake once the wait (plus a margin) has passed."""

    delay: timedelta

    def __call__(self, timestamp: datetime) -> datetime:
        return timestamp + self.delay


def _is_fragment(item: Fragment | Heartbeat | Rejected) -> TypeGuard[Fragment]:
    return isinstance(item, Fragment)


def _is_heartbeat(item: Heartbeat | Rejected) -> TypeGuard[Heartbeat]:
    return isinstance(item, Heartbeat)


def _trade_time(item: Fragment | Heartbeat) -> datetime:
    if isinstance(item, Heartbeat):
        return EPOCH + timedelta(milliseconds=item.through_ms)
    return EPOCH + timedelta(milliseconds=item.max_trade_time_ms)


def _fold(acc: Bar, item: Fragment | Heartbeat) -> Bar:
    # A heartbeat adds no trade: it opens its window, so that a quiet window closes too.
    if isinstance(item, Heartbeat):
        return acc
    # The first fragment's bar itself, not a copy: nothing changes a bar in place after
    # the seen-trades step (merge makes a new one).
    return item.bar if acc.is_empty else merge(acc, item.bar)


class BarStreams(NamedTuple):
    """What :func:`build_bar_streams` makes of the payloads."""

    bars: Stream[BarUpdate | StaleFragment]
    rejected: Stream[Rejected]
    #: Snapshots of each symbol's forming bar (None when not asked for).
    forming: Stream[FormingUpdate] | None


#: The book's marker for "the feed vouched for every trade up to the end of this window".
CONFIRMED: Final = "confirmed"


def build_bars(
    payloads: Stream[Any],
    *,
    window: timedelta = timedelta(minutes=1),
    wait: timedelta = timedelta(seconds=2),
    history_windows: int = 1440,
    max_ahead: timedelta = timedelta(minutes=5),
    stats: FlowStats | None = None,
    now_getter: Callable[[], datetime] | None = None,
) -> tuple[Stream[BarUpdate | StaleFragment], Stream[Rejected]]:
    """The bar logic, independent of Kafka and ClickHouse: payloads in, bar updates out.

    Returns ``(bars, rejected)``: every :class:`BarUpdate` in ``bars`` is a complete version of
    its bar (corrections included), and a :class:`StaleFragment` holds trades of a window older
    than the history, for the sink to merge into the stored bar; ``rejected`` holds the records
    that are neither valid trades nor heartbeats.
    """
    streams = build_bar_streams(
        payloads, window=window, wait=wait, history_windows=history_windows,
        max_ahead=max_ahead, stats=stats, now_getter=now_getter,
    )  # fmt: skip
    return streams.bars, streams.rejected


def build_bar_streams(
    payloads: Stream[Any],
    *,
    window: timedelta = timedelta(minutes=1),
    wait: timedelta = timedelta(seconds=2),
    history_windows: int = 1440,
    max_ahead: timedelta = timedelta(minutes=5),
    stats: FlowStats | None = None,
    now_getter: Callable[[], datetime] | None = None,
    forming_every: timedelta | None = None,
) -> BarStreams:
    """:func:`build_bars`, and with ``forming_every`` the forming bars too (docs/live.md)."""
    stats = stats or FlowStats()
    window_ms = int(window.total_seconds() * 1000)

    def _count(trades: int, rejected: int) -> None:
        stats.add(trades=trades, rejected=rejected)

    clock_now = now_getter or (lambda: datetime.now(UTC))
    max_ahead_ms = int(max_ahead.total_seconds() * 1000)

    def _preaggregate(batch: list[bytes]) -> list[Fragment | Heartbeat | Rejected]:
        # A trade from the future (beyond a clock skew) is corrupt: it would open a window that
        # fills every minute up to it with zero-trade bars.
        latest_ms = int((clock_now() - EPOCH).total_seconds() * 1000) + max_ahead_ms
        return fold_messages(batch, window_ms, _count, latest_ms)

    items = op.flat_map_batch("preaggregate", payloads, _preaggregate)
    fragments_or_rejected = op.branch("valid", items, _is_fragment)
    fragments = fragments_or_rejected.trues
    beats_or_rejected = op.branch(
        "heartbeat",
        cast(Stream[Heartbeat | Rejected], fragments_or_rejected.falses),
        _is_heartbeat,
    )
    heartbeats = op.key_on("heartbeat_by_symbol", beats_or_rejected.trues, lambda b: b.symbol)
    # The rest is what preaggregate did not fold: rejected records only.
    rejected = cast(Stream[Rejected], beats_or_rejected.falses)
    by_symbol = op.key_on("by_symbol", fragments, lambda fragment: fragment.symbol)

    # Windows can stay open for the wait (and the one being filled): the seen-trades step must
    # remember them on top of the book's history (see seen_trades).
    open_windows = math.ceil(wait / window) + 2

    def _admit(
        state: SeenTrades | None, fragment: Fragment
    ) -> tuple[SeenTrades, list[tuple[bool, Fragment]]]:
        seen = state or SeenTrades(history=history_windows + open_windows)
        admitted = seen.admit(fragment)
        if admitted.duplicates or admitted.conflicts:
            stats.add(duplicate_trades=admitted.duplicates, conflicting_trades=admitted.conflicts)
        if admitted.stale is not None:
            return seen, [(True, admitted.stale)]
        return seen, [] if admitted.fresh is None else [(False, admitted.fresh)]

    admitted = op.stateful_flat_map("seen_trades", by_symbol, _admit)
    stale_or_fresh = op.branch("stale", admitted, lambda item: item[1][0])
    keyed = op.map_value("fresh", stale_or_fresh.falses, lambda item: item[1])

    clock_kwargs: dict[str, Any] = {"to_system_utc": _WakeAfter(wait + WAKE_MARGIN)}
    if now_getter is not None:
        clock_kwargs["now_getter"] = now_getter
    clock = EventClock(_trade_time, wait_for_system_duration=wait, **clock_kwargs)
    windower = TumblingWindower(length=window, align_to=EPOCH)
    # The bar is commutative, so windows need not buffer items to sort them (ordered=False).
    # Heartbeats go through the windows as well, so a window without trades still opens and
    # closes in order with the trades before it; the book fills it once the feed vouched for it.
    windowed = op.merge("trades_and_heartbeats", keyed, heartbeats)
    windows = fold_window(
        "minute_bars", windowed, clock, windower, Bar.empty, _fold, merge, ordered=False
    )

    # What the book gets: (window index, (a bar or a fragment, checked for repeats)).
    # Windows are aligned to the epoch, so a window id is the window index itself.
    BookItem = tuple[int, tuple[Bar | Fragment | str, bool]]

    def _closed(window_bar: tuple[int, Bar]) -> BookItem:
        return window_bar[0], (window_bar[1], True)

    def _late(fragment_in_window: tuple[int, Fragment | Heartbeat]) -> BookItem | None:
        fragment = fragment_in_window[1]
        if isinstance(fragment, Heartbeat):
            return None  # its confirmation reaches the book directly
        stats.add(late_trades=fragment.bar.trade_count)
        return fragment.window, (fragment, True)

    def _confirmed(beat: Heartbeat) -> BookItem:
        # The last window that the heartbeat vouches for to its last millisecond.
        return (beat.through_ms + 1) // window_ms - 1, (CONFIRMED, False)

    def _stale(stale: tuple[bool, Fragment]) -> BookItem:
        fragment = stale[1]
        stats.add(late_trades=fragment.bar.trade_count)
        return fragment.window, (fragment, False)

    book_items = op.merge(
        "book_items",
        op.map_value("closed_window", windows.down, _closed),
        op.filter_map_value("late_fragment", windows.late, _late),
        op.map_value("stale_fragment", stale_or_fresh.trues, _stale),
        op.map_value("confirmed", heartbeats, _confirmed),
    )

    def _book(
        state: BarBook | None, value: tuple[int, tuple[Bar | Fragment | str, bool]]
    ) -> tuple[BarBook, list[WindowBar | Fragment]]:
        book = state or BarBook(history=history_windows)
        window_index, (item, checked) = value
        update: BookUpdate
        if isinstance(item, str):
            update = book.confirm(window_index)
        elif isinstance(item, Bar) and item.is_empty:
            update = book.close_quiet(window_index)  # a window of heartbeats only
        else:
            update = book.update(window_index, item, checked)
        if update.duplicates or update.conflicts:
            stats.add(duplicate_trades=update.duplicates, conflicting_trades=update.conflicts)
        out: list[WindowBar | Fragment] = list(update.bars)
        if update.forward is not None:
            out.append(update.forward)
        return book, out

    updates = op.stateful_flat_map("bar_book", book_items, _book)

    def _to_sink(item: tuple[str, WindowBar | Fragment]) -> BarUpdate | StaleFragment:
        symbol, update = item
        if isinstance(update, Fragment):
            return StaleFragment(symbol, update.window * window_ms, update)
        return BarUpdate(symbol, update.window * window_ms, update.bar)

    bars: Stream[BarUpdate | StaleFragment] = op.map("to_sink", updates, _to_sink)
    forming = None
    if forming_every is not None:
        forming = forming_bars(
            keyed, heartbeats, every=forming_every, window_ms=window_ms, now_getter=now_getter
        )
    return BarStreams(bars, rejected, forming)


def _dead_letter(rejected: Rejected) -> KafkaSinkMessage[bytes | None, bytes]:
    return KafkaSinkMessage(key=None, value=rejected.dead_letter())


def build_flow(
    settings: Settings,
    kafka: KafkaConnection,
    *,
    stats: FlowStats | None = None,
    source: Source[Any] | None = None,
    stop: threading.Event | None = None,
    store_health: StoreHealth | None = None,
    give_up_after_s: float | None = None,
    abort: threading.Event | None = None,
) -> Dataflow:
    """The production dataflow: Kafka trades topic in, ClickHouse bars and Kafka DLQ out.

    ``source`` replaces the Kafka input (``up`` passes one it can stop; tests one that fails).
    ``stop``, ``store_health``, ``give_up_after_s`` and ``abort`` go to the bar sink
    (:class:`~binance_metrics.store.sink.ClickHouseBarSink`); ``abort`` also to the Kafka source
    made here (a ``source`` passed in must be given it by the caller). With ``abort``, call
    ``store_health.raise_if_given_up()`` after the run. Building it raises the process's
    garbage-collection thresholds to :data:`GC_THRESHOLDS`.
    """
    stats = stats or FlowStats()
    if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)
    flow = Dataflow("binance_ohlcv")
    if source is None:
        source = RawKafkaSource(
            kafka,
            settings.KAFKA_TOPIC,
            tail=not settings.STOP_AT_END,
            batch_size=settings.KAFKA_BATCH_SIZE,
            abort=abort,
        )
    payloads = op.input("trades", flow, source)
    # A run to the end of the topic (replay) has no forming bar: every window closes.
    forming_on = settings.FORMING_EVERY_MS > 0 and not settings.STOP_AT_END
    bars, rejected, forming = build_bar_streams(
        payloads,
        window=timedelta(seconds=settings.WINDOW_SECONDS),
        wait=timedelta(seconds=settings.WATERMARK_WAIT_S),
        history_windows=max(1, settings.BAR_HISTORY_MINUTES * 60 // settings.WINDOW_SECONDS),
        max_ahead=timedelta(seconds=settings.MAX_TRADE_TIME_AHEAD_S),
        stats=stats,
        forming_every=timedelta(milliseconds=settings.FORMING_EVERY_MS) if forming_on else None,
    )

    op.inspect(
        "log_rejected", rejected, lambda _step, item: log.warning("dead-lettered: %s", item.error)
    )
    # The whole client config, so that the sink's librdkafka lines go to Python logging too.
    dlq_sink = KafkaSink(
        [kafka.bootstrap_servers], settings.KAFKA_DLQ_TOPIC, add_config=kafka.client_config()
    )
    op.output("dead_letters", op.map("dead_letter", rejected, _dead_letter), dlq_sink)

    bars_sink = ClickHouseBarSink(
        settings.clickhouse_dsn,
        stats.add,
        market=settings.MARKET,
        health=store_health,
        stop=stop,
        give_up_after_s=give_up_after_s,
        abort=abort,
        table=bars_table(settings.WINDOW_SECONDS),
    )
    # The ids of the trades klines exclude (not market trades) go to the store with the bars,
    # so that the completeness ledger counts them as accounted for (docs/ledger.md).
    accounted = op.filter_map("accounted", rejected, accounted_trades)
    output_bars("bars", op.merge("to_store", bars, accounted), bars_sink)
    if forming is not None:
        every_s = settings.FORMING_EVERY_MS / 1000
        forming_sink = ClickHouseFormingSink(settings.clickhouse_dsn, settings.MARKET, every_s)
        op.output("forming_bars", forming, forming_sink)
    return flow
