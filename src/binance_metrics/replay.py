"""``binance-metrics replay``: recorded trades into the store, run to the end.

Every file is checked first (its format, from its first rows) and the store opened, so that a
file that is not trades, or a store held by another process, stops the replay before anything
is done. Then, by default, the history path (:mod:`binance_metrics.history_bars`): the files are
read in chunks, folded per (symbol, minute) in columns and put through the dataflow's own
per-symbol steps into the store, without Kafka or Bytewax; memory stays bounded by the chunk
and the bars of the last ``BAR_HISTORY_MINUTES``. Only bad rows need the broker: they go to the
dead-letter topic, and the embedded broker is started for the first of them.

With ``through_kafka`` (``--through-kafka``) the files are produced to the trades topic in the
live message format (bad rows to the dead-letter topic) and the production dataflow runs in
stop-at-end mode: every partition is read to its end, all windows close. It exercises the live
path end to end; the broker holds the whole input meanwhile.

Either way the bars are in the store when it returns. A replay in which no row is a trade
fails, with the first reasons; so does one whose store has refused writes for
``STORE_GIVE_UP_S`` (a full disk, say), rather than wait for it. Ctrl-C or SIGTERM ends a
replay at once, and its broker with it (the files are still there).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import msgspec
from bytewax.testing import run_main
from confluent_kafka import Producer

from binance_metrics.columnar import with_contract_size
from binance_metrics.columnar_reader import Chunk, read_ahead, read_chunks
from binance_metrics.dataflow import FlowStats, build_flow
from binance_metrics.errors import BinanceMetricsError, BrokerError, ConfigError
from binance_metrics.history_bars import HistoryBars
from binance_metrics.kafka.broker import kafka_for
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.producer import SAFE_CONFIG
from binance_metrics.ledger.accounted import accounted_trades
from binance_metrics.markets import Market
from binance_metrics.recordings import check_recording, read_recording
from binance_metrics.settings import Settings
from binance_metrics.store.clickhouse import open_store
from binance_metrics.store.sink import StoreHealth
from binance_metrics.trades import Rejected, encode_trade, now_ms

log = logging.getLogger(__name__)

PROGRESS_EVERY = 100_000  # records produced between progress lines
PROGRESS_EVERY_S = 5.0  # seconds between progress lines while the dataflow runs
FIRST_REASONS = 3  # reasons of rejected rows kept for the summary or the error
LOGGED_REJECTS = 100  # rejected rows logged one by one by the history path, then counted


class ReplayError(BinanceMetricsError):
    """The files held no trade to replay; the message gives the count and the first reasons."""


@dataclass(frozen=True)
class Produced:
    messages: int  # trade messages produced (an aggTrade is one message)
    bad_records: int  # rows of the files sent to the dead-letter topic
    first_reasons: tuple[str, ...]  # why the first few bad rows were rejected (``file:line: ...``)


@dataclass(frozen=True)
class ReplaySummary:
    files: int
    messages: int  # trade messages produced (an aggTrade is one message)
    trades: int  # raw trades counted into bars
    bad_records: int  # rows of the files sent to the dead-letter topic
    rejected: int  # records the dataflow sent to the dead-letter topic
    late_trades: int
    bars_written: int
    seconds: float
    duplicate_trades: int = 0  # trades whose id was already counted (a file repeated), dropped
    first_reasons: tuple[str, ...] = ()  # of the bad rows

    def lines(self) -> list[str]:
        return [
            f"files        {self.files}",
            f"messages     {self.messages}",
            f"trades       {self.trades}",
            f"bars written {self.bars_written}",
            f"late trades  {self.late_trades}",
            f"duplicates   {self.duplicate_trades}",
            f"dead-letters {self.bad_records + self.rejected}"
            + (f" (first: {'; '.join(self.first_reasons)})" if self.first_reasons else ""),
            f"seconds      {self.seconds:.1f}",
        ]


def make_producer(kafka: KafkaConnection) -> Producer:
    """The ingestor's delivery settings (idempotent, acks=all, retried until taken), batched."""
    return Producer(
        kafka.client_config(
            **{**SAFE_CONFIG, "linger.ms": 20, "queue.buffering.max.messages": 500_000}
        )
    )


def produce_recordings(
    paths: Sequence[Path],
    settings: Settings,
    kafka: KafkaConnection,
    symbol: str | None = None,
    contract_size: int | None = None,
) -> Produced:
    """Produce every record of ``paths``: trades to the trades topic, bad rows to the DLQ;
    ``contract_size``: COIN-M's, for each trade that carries none."""
    producer = make_producer(kafka)
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    def send(topic: str, key: bytes | None, value: bytes) -> None:
        _send(producer, topic, key, value, delivered)

    messages = bad = 0
    reasons: list[str] = []
    started = time.monotonic()
    for path in paths:
        before = (messages, bad)
        for record in read_recording(path, symbol):
            if isinstance(record, Rejected):
                send(settings.KAFKA_DLQ_TOPIC, None, record.dead_letter())
                bad += 1
                if len(reasons) < FIRST_REASONS:
                    reasons.append(record.error)
            else:
                if contract_size is not None and record.contract_size is None:
                    record = msgspec.structs.replace(record, contract_size=contract_size)
                send(settings.KAFKA_TOPIC, record.symbol.encode(), encode_trade(record))
                messages += 1
            if (messages + bad) % PROGRESS_EVERY == 0:
                producer.poll(0)
                rate = (messages + bad) / max(time.monotonic() - started, 1e-9)
                log.info(f"produced {messages + bad:,} records ({rate:,.0f}/s)")
        log.info(f"{path.name}: produced, {messages:,} trade messages so far, {bad} bad rows")
        if len(paths) > 1 and messages == before[0] and bad > before[1]:
            log.warning("%s: every row (%d) was rejected", path, bad - before[1])
    _flush(producer, failures)
    return Produced(messages, bad, tuple(reasons))


def _send(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes,
    delivered: Callable[[object, object], None],
) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value, on_delivery=delivered)
            return
        except BufferError:  # local queue full: let deliveries drain, then retry
            producer.poll(0.1)


def _flush(producer: Producer, failures: list[str]) -> None:
    remaining = producer.flush(60)
    if remaining or failures:
        raise BrokerError(
            f"{remaining} messages not delivered, {len(failures)} delivery errors"
            + (f" (first: {failures[0]})" if failures else "")
        )


def replay(
    paths: Sequence[Path],
    settings: Settings,
    symbol: str | None = None,
    *,
    through_kafka: bool = False,
    stats: FlowStats | None = None,
    contract_size: int | None = None,
) -> ReplaySummary:
    """Replay the recordings into the store (the history path, or ``through_kafka``), as bars
    of ``settings.MARKET``, and summarise.

    ``stats``, if given, receives the counts as it runs (for a progress display).
    ``contract_size``: COIN-M's (``MARKET=cm`` needs it), the base-asset volume of every trade
    that does not carry its own (docs/markets.md).

    Raises :class:`~binance_metrics.recordings.RecordingError` for a file that is not trades
    and :class:`~binance_metrics.errors.StoreError` for a store that cannot be opened, both
    before anything is done; :class:`ReplayError` if no row of the files is a trade;
    :class:`~binance_metrics.errors.StoreError` once writes have failed for ``STORE_GIVE_UP_S``.
    """
    started = time.monotonic()
    check_contract_size(settings.MARKET, contract_size)
    for path in paths:
        check_recording(path, symbol)
    # The dataflow's sink opens the store inside Bytewax, where a failure is a panic and a
    # cascade of tracebacks: open it here first (the sink then shares this client).
    open_store(settings.clickhouse_dsn, settings.MARKET)
    stats = FlowStats() if stats is None else stats
    if through_kafka:
        return _replay_through_kafka(paths, settings, symbol, started, stats, contract_size)
    return _replay_history(paths, settings, symbol, started, stats, contract_size)


def check_contract_size(market: Market, contract_size: int | None) -> None:
    """COIN-M needs a contract size (for the base-asset volumes), the others take none."""
    if (market == "cm") != (contract_size is not None):
        raise ConfigError(
            "COIN-M trades (MARKET=cm) need the symbol's contract size, --contract-size (its "
            "contractSize in exchangeInfo: 100 for BTCUSD_PERP, 10 for most others)"
            if contract_size is None
            else f"--contract-size is for COIN-M (MARKET=cm), not {market}"
        )


def _with_contract_size(chunk: Chunk, contract_size: int) -> None:
    """The trades of ``chunk`` in contracts of ``contract_size`` where they carry none."""
    chunk.columns = with_contract_size(chunk.columns, contract_size)
    chunk.odd = [
        t if t.contract_size else msgspec.structs.replace(t, contract_size=contract_size)
        for t in chunk.odd
    ]


def _replay_history(
    paths: Sequence[Path], settings: Settings, symbol: str | None, started: float,
    stats: FlowStats, contract_size: int | None,
) -> ReplaySummary:  # fmt: skip
    """The history path: files -> columns -> seen trades -> bar book -> store."""
    latest_ms = now_ms() + int(settings.MAX_TRADE_TIME_AHEAD_S * 1000)
    health = StoreHealth()
    abort = threading.Event()
    bars = HistoryBars(
        settings.clickhouse_dsn,
        settings.MARKET,
        window_ms=settings.WINDOW_SECONDS * 1000,
        history_windows=max(1, settings.BAR_HISTORY_MINUTES * 60 // settings.WINDOW_SECONDS),
        stats=stats,
        health=health,
        give_up_after_s=settings.STORE_GIVE_UP_S,
        abort=abort,
    )
    messages = bad = 0
    reasons: list[str] = []
    log.info("replaying %d files into the store (history path)", len(paths))
    folding, folding_cpu = time.monotonic(), time.process_time()
    with _DeadLetters(settings) as dead_letters, _signals_abort(abort) as interrupted:
        counts = (0, 0)  # (messages, bad) at the start of the file
        for path, chunk in read_ahead(_chunks(paths, symbol, latest_ms), threading.Event()):
            if abort.is_set():
                break
            if chunk is None:  # the end of a file
                rate = messages / max(time.monotonic() - started, 1e-9)
                log.info(f"{path.name}: {messages:,} trade messages so far ({rate:,.0f}/s), "
                         f"{bad} bad rows")  # fmt: skip
                if len(paths) > 1 and messages == counts[0] and bad > counts[1]:
                    log.warning("%s: every row (%d) was rejected", path, bad - counts[1])
                counts = (messages, bad)
                continue
            for rejected in chunk.rejected:
                dead_letters.send(rejected)
                if len(reasons) < FIRST_REASONS:
                    reasons.append(rejected.error)
                if bad < LOGGED_REJECTS:
                    log.warning("dead-lettered: %s", rejected.error)
                bad += 1
            messages += len(chunk.columns) + len(chunk.odd)
            bars.account([a for r in chunk.rejected if (a := accounted_trades(r)) is not None])
            if contract_size is not None:
                _with_contract_size(chunk, contract_size)
            bars.add(chunk.columns, chunk.odd)
        if not abort.is_set():
            bars.finish()
            seconds = time.monotonic() - folding
            cpu = time.process_time() - folding_cpu
            trades = stats.summary()["trades"]
            log.info(f"history: {trades:,} trades folded in {seconds:.2f} s "
                     f"({trades / max(seconds, 1e-9):,.0f} trades/s; {cpu:.2f} s of CPU), "
                     "bars written")  # fmt: skip
    if bad > LOGGED_REJECTS:
        log.warning("dead-lettered %d more rows (not logged one by one)", bad - LOGGED_REJECTS)
    if interrupted:
        raise KeyboardInterrupt(*interrupted)
    health.raise_if_given_up()
    produced = Produced(messages, bad, tuple(reasons))
    if messages == 0:
        raise ReplayError(_nothing_to_replay(paths, produced, settings.KAFKA_DLQ_TOPIC))
    return _summary(paths, produced, stats, started)


def _chunks(
    paths: Sequence[Path], symbol: str | None, latest_ms: int
) -> Iterator[tuple[Path, Chunk | None]]:
    """The chunks of every file, each file ended by ``(path, None)``."""
    for path in paths:
        for chunk in read_chunks(path, symbol, latest_ms):
            yield path, chunk
        yield path, None


class _DeadLetters:
    """The dead-letter topic of a history replay, reached only for a rejected row: an embedded
    broker is started for the first one; a configured Kafka is checked at the start, so that a
    wrong setting fails before any work."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stack = ExitStack()
        self._producer: Producer | None = None
        self._failures: list[str] = []

    def __enter__(self) -> _DeadLetters:
        if not self._settings.embedded_kafka:
            self._connect()
        return self

    def _connect(self) -> Producer:
        kafka = self._stack.enter_context(kafka_for(self._settings))
        self._producer = make_producer(kafka)
        return self._producer

    def _delivered(self, err: object, _msg: object) -> None:
        if err is not None:
            self._failures.append(str(err))

    def send(self, rejected: Rejected) -> None:
        producer = self._producer or self._connect()
        _send(producer, self._settings.KAFKA_DLQ_TOPIC, None, rejected.dead_letter(),
              self._delivered)  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        with self._stack:
            if self._producer is not None and exc[0] is None:
                _flush(self._producer, self._failures)


def _summary(
    paths: Sequence[Path], produced: Produced, stats: FlowStats, started: float
) -> ReplaySummary:
    counts = stats.summary()
    return ReplaySummary(
        files=len(paths),
        messages=produced.messages,
        trades=counts["trades"],
        bad_records=produced.bad_records,
        rejected=counts["rejected"],
        late_trades=counts["late_trades"],
        duplicate_trades=counts["duplicate_trades"],
        bars_written=counts["bars_written"],
        seconds=time.monotonic() - started,
        first_reasons=produced.first_reasons,
    )


def _replay_through_kafka(
    paths: Sequence[Path], settings: Settings, symbol: str | None, started: float,
    stats: FlowStats, contract_size: int | None,
) -> ReplaySummary:  # fmt: skip
    """Produce the recordings, run the dataflow to the end of the topic."""
    update: dict[str, object] = {"STOP_AT_END": True}
    if not settings.embedded_kafka:
        # A shared Kafka: replay into a topic of its own, so that neither the live topic nor an
        # earlier replay of the same files adds its trades a second time.
        update["KAFKA_TOPIC"] = f"{settings.KAFKA_TOPIC}-replay-{time.time_ns() // 1_000_000}"
    settings = settings.model_copy(update=update)
    log.info("replaying into topic %s", settings.KAFKA_TOPIC)
    with kafka_for(settings) as kafka:
        produced = produce_recordings(paths, settings, kafka, symbol, contract_size)
        if produced.messages == 0:
            raise ReplayError(_nothing_to_replay(paths, produced, settings.KAFKA_DLQ_TOPIC))
        log.info("running the dataflow to the end of the topic")
        store_health = StoreHealth()
        abort = threading.Event()
        flow = build_flow(
            settings, kafka, stats=stats, store_health=store_health,
            give_up_after_s=settings.STORE_GIVE_UP_S, abort=abort,
        )  # fmt: skip
        done = threading.Event()
        reporter = threading.Thread(
            target=_report_dataflow,
            args=(stats, produced.messages, done),
            daemon=True,
        )
        reporter.start()
        try:
            # An error inside the dataflow (Kafka's, the store's) comes out as Bytewax's
            # BytewaxRuntimeError, caused by ours: the CLI reports the cause.
            with _signals_abort(abort) as interrupted:
                run_main(flow)
        finally:
            done.set()
        if interrupted:
            raise KeyboardInterrupt(*interrupted)
        store_health.raise_if_given_up()
    return _summary(paths, produced, stats, started)


@contextmanager
def _signals_abort(abort: threading.Event) -> Iterator[list[int]]:
    """While the dataflow runs, SIGINT and SIGTERM end it at once through ``abort`` (a
    ``KeyboardInterrupt`` raised inside a Bytewax step would be a Rust panic); yields the list
    that receives the signal's number."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        abort.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _nothing_to_replay(paths: Sequence[Path], produced: Produced, dlq_topic: str) -> str:
    files = ", ".join(str(path) for path in paths) if len(paths) <= 3 else f"{len(paths)} files"
    if not produced.bad_records:
        return f"no trade to replay: no trade or aggTrade record in {files}"
    return (
        f"no trade to replay: all {produced.bad_records:,} rows of {files} were rejected "
        f"(they are in the dead-letter topic {dlq_topic}); first: "
        + "; ".join(produced.first_reasons)
    )


def _report_dataflow(stats: FlowStats, messages: int, done: threading.Event) -> None:
    while not done.wait(PROGRESS_EVERY_S):
        counts = stats.summary()
        log.info(
            f"dataflow: {counts['trades']:,} trades folded ({messages:,} messages in the topic), "
            f"{counts['bars_written']:,} bars written"
        )
