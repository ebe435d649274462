"""The ingestor: frames in, validated and sequenced trades out to Kafka, bad frames to the DLQ.

Per frame (the hot path, all synchronous on the event loop)::

    raw -> FrameParser.parse -> TradeMessage + ingestionTimeMs, latencyMs
        -> SymbolSequence.offer (dedupe, order, gap detection)
        -> KafkaProducer.produce(KAFKA_TOPIC, key=symbol)      (acks counted on the poll thread)

A gap starts one backfill task for the symbol (REST, :mod:`binance_metrics.ingest.backfill`)
which fills the sequence; the trades held behind the gap are then released in order.

At start, before connecting, each symbol's sequence resumes after the highest trade id already
in Kafka (:mod:`binance_metrics.ingest.resume`), so the trades missed while the ingestor was
down form the first gap and are backfilled like any other (up to ``max_resume_gap``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from confluent_kafka import KafkaError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from binance_metrics.errors import InvalidTradeError
from binance_metrics.ingest.backfill import BackfillError, RestBackfill
from binance_metrics.ingest.backoff import AttemptLimiter
from binance_metrics.ingest.frames import DEFAULT_MAX_FRAME_BYTES, Control, FrameParser
from binance_metrics.ingest.metrics import IngestMetrics
from binance_metrics.ingest.resume import read_last_trade_ids
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.ingest.stream import Connection, Shard, StreamOptions, shard_symbols
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.producer import KafkaProducer
from binance_metrics.settings import Settings
from binance_metrics.trades import Rejected, TradeMessage, encode_trade, now_ms, validate_trade

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOptions:
    """Tuning that is not (yet) in :class:`Settings`; the defaults suit production Binance."""

    streams_per_connection: int = 1024
    silence_timeout_s: float = 60.0
    max_connection_age_s: float = 23.5 * 3600
    switch_timeout_s: float = 10.0
    healthy_after_s: float = 60.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: Wait before calling REST: an overlapping connection may still deliver the missing ids.
    backfill_grace_s: float = 1.0
    backfill_retry_base_s: float = 1.0
    backfill_max_attempts: int = 8
    #: Trades held behind one symbol's gap before the gap is given up (memory bound).
    max_pending_per_symbol: int = 200_000
    max_buffered_messages: int = 100_000
    overflow_soft_limit: int = 10_000
    kafka_stall_s: float = 10.0
    connection_attempts: int = 300
    connection_attempt_window_s: float = 300.0
    #: At start, continue each symbol after the last trade id in Kafka (backfilling the gap).
    resume_from_kafka: bool = True
    #: Records read from the end of each partition to find the last trade ids (bound).
    resume_tail_records: int = 10_000
    #: Longest wait for the tail to be read; then nothing is resumed (logged as an error).
    resume_timeout_s: float = 30.0
    #: A resume gap larger than this many trades is given up (counted unfilled), not fetched.
    max_resume_gap: int = 1_000_000


class Ingestor:
    """Owns the producer, the connections and the backfill tasks; :meth:`start` / :meth:`stop`."""

    def __init__(
        self, settings: Settings, kafka: KafkaConnection, options: IngestOptions | None = None
    ) -> None:
        self.settings = settings
        self.options = opts = options or IngestOptions()
        self.topic = settings.KAFKA_TOPIC
        self.dlq_topic = settings.KAFKA_DLQ_TOPIC
        self.symbols = settings.SYMBOLS
        self.metrics = IngestMetrics(self.symbols)
        self.metrics.add_state_collector(self._collect_state)
        self._parser = FrameParser(self.symbols, opts.max_frame_bytes)
        self._keys = {s: s.encode() for s in self.symbols}
        self._counters = self.metrics.by_symbol
        self.sequences = {s: SymbolSequence(s, self._emit) for s in self.symbols}
        #: symbol -> last trade id found in Kafka at start (the sequence resumed after it)
        self.resumed: dict[str, int] = {}
        self._last_trade: dict[str, float] = {}
        self.produced: dict[str, int] = dict.fromkeys(self.symbols, 0)
        self.dlq = 0
        self.dlq_acked = 0
        self._kafka = kafka
        self.producer: KafkaProducer | None = None
        self.rest: RestBackfill | None = None
        self.shards: list[Shard] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._backfills: dict[str, asyncio.Task[None]] = {}
        self._observe_latency = self.metrics.trade_latency.observe

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        opts, settings = self.options, self.settings
        if opts.resume_from_kafka:
            await self._resume_from_kafka()
        else:
            log.info("resume from Kafka disabled: every symbol starts at its first live trade")
        self.producer = KafkaProducer(
            self._kafka,
            max_buffered_messages=opts.max_buffered_messages,
            overflow_soft_limit=opts.overflow_soft_limit,
            stall_after_s=opts.kafka_stall_s,
            on_ack=self._on_ack,
            on_error=self._on_delivery_error,
        ).start()
        self.rest = RestBackfill(
            settings.BINANCE_REST_URL,
            retry_base_s=opts.backfill_retry_base_s,
            retry_cap_s=max(opts.backfill_retry_base_s, 30.0),
            max_attempts=opts.backfill_max_attempts,
        )
        stream_options = StreamOptions(
            reconnect_delay_s=settings.RECONNECT_DELAY_S,
            max_reconnect_delay_s=settings.MAX_RECONNECT_DELAY_S,
            healthy_after_s=opts.healthy_after_s,
            silence_timeout_s=opts.silence_timeout_s,
            max_connection_age_s=opts.max_connection_age_s,
            switch_timeout_s=opts.switch_timeout_s,
            ping_interval_s=opts.ping_interval_s,
            ping_timeout_s=opts.ping_timeout_s,
        )
        limiter = AttemptLimiter(opts.connection_attempts, opts.connection_attempt_window_s)
        producer = self.producer
        self.shards = [
            Shard(
                i,
                settings.BINANCE_WS_URL,
                group,
                stream_options,
                limiter,
                self.metrics,
                self._on_frame,
                lambda: producer.backpressure,
                producer.wait_for_room,
            )
            for i, group in enumerate(shard_symbols(self.symbols, opts.streams_per_connection))
        ]
        self._tasks = [asyncio.create_task(s.run(), name=f"shard-{s.index}") for s in self.shards]
        log.info(
            "ingesting %d symbols over %d connections to %s",
            len(self.symbols),
            len(self.shards),
            settings.BINANCE_WS_URL,
        )

    async def _resume_from_kafka(self) -> None:
        """Seed each sequence with the last trade id in Kafka (bounded; never raises)."""
        opts = self.options
        scan = await asyncio.get_running_loop().run_in_executor(
            None,
            functools.partial(
                read_last_trade_ids,
                self._kafka,
                self.topic,
                self.symbols,
                tail_records=opts.resume_tail_records,
                timeout_s=opts.resume_timeout_s,
            ),
        )
        if scan.error is not None:
            log.error(
                "could not read the end of %s (%s, %.1f s): not resuming; trades made while the "
                "ingestor was down are not backfilled",
                self.topic,
                scan.error,
                scan.seconds,
            )
            return
        log.info(
            "read the last %d records of %s (%d partitions, %d not trades) in %.2f s",
            scan.records,
            self.topic,
            scan.partitions,
            scan.skipped,
            scan.seconds,
        )
        for symbol in self.symbols:
            last = scan.last_ids.get(symbol)
            if last is None:
                log.info(
                    "%s: no trade in the end of %s: starts at its first live trade",
                    symbol,
                    self.topic,
                )
                continue
            self.sequences[symbol].resume_after(last)
            self.resumed[symbol] = last
            log.info("%s: resuming after trade %d, the last one in %s", symbol, last, self.topic)

    def _first_live_after_resume(self, sequence: SymbolSequence, trade_id: int) -> str | None:
        """Judge the first live trade of a resumed symbol; return why to give its gap up."""
        expected, sequence.resumed_at = sequence.resumed_at, None
        assert expected is not None
        symbol, missed, cap = sequence.symbol, trade_id - expected, self.options.max_resume_gap
        if missed > cap:
            return (
                f"{missed} trades made while the ingestor was down ({expected}..{trade_id - 1}), "
                f"more than max_resume_gap {cap}: not fetched over REST"
            )
        if missed > 0:
            log.info(
                "%s: backfilling the %d trades made while the ingestor was down (%d..%d)",
                symbol,
                missed,
                expected,
                trade_id - 1,
            )
        elif missed < -cap:
            log.error(
                "%s: the first live trade %d is far behind the last one in %s (%d): the topic "
                "does not hold this stream's trades; not resuming",
                symbol,
                trade_id,
                self.topic,
                expected - 1,
            )
            sequence.forget_resume()
        elif missed < 0:
            log.warning(
                "%s: the first live trade %d is already in %s (last %d): dropping duplicates",
                symbol,
                trade_id,
                self.topic,
                expected - 1,
            )
        return None

    async def stop(self) -> int:
        """Close connections, release held trades, flush Kafka; return undelivered messages."""
        tasks = [*self._tasks, *self._backfills.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.rest is not None:
            await self.rest.aclose()
        # Trades held behind a gap REST has not filled yet were received: produce them rather
        # than drop them (the gap itself is counted as unfilled).
        for sequence in self.sequences.values():
            while sequence.pending:
                self._give_up_gap(sequence, "shutting down before the backfill finished")
        left = 0
        if self.producer is not None:
            producer = self.producer
            left = await asyncio.get_running_loop().run_in_executor(None, producer.close)
        return left

    # -- hot path --------------------------------------------------------------------------

    def _on_frame(self, raw: bytes, conn: Connection) -> None:
        result = self._parser.parse(raw)
        if type(result) is TradeMessage:
            now = now_ms()
            latency = now - result.event_time_ms
            trade = msgspec.structs.replace(result, ingestion_time_ms=now, latency_ms=latency)
            self._observe_latency(latency / 1000)
            symbol = trade.symbol
            self._last_trade[symbol] = time.monotonic()
            sequence = self.sequences[symbol]
            give_up = (
                None
                if sequence.resumed_at is None
                else self._first_live_after_resume(sequence, trade.trade_id)
            )
            if sequence.offer(trade):
                if give_up is None:
                    self._start_backfill(sequence)
                else:
                    self._give_up_gap(sequence, give_up)
            elif len(sequence.pending) > self.options.max_pending_per_symbol:
                self._give_up_gap(sequence, "too many trades held behind the gap")
            return
        if isinstance(result, Control):
            self._on_control(result, conn)
        elif isinstance(result, Rejected):
            self._dead_letter(result)

    def _emit(self, trade: TradeMessage) -> None:
        assert self.producer is not None
        self.producer.produce(self.topic, encode_trade(trade), self._keys[trade.symbol])

    def _dead_letter(self, rejected: Rejected) -> None:
        assert self.producer is not None
        self.dlq += 1
        self.metrics.dlq_messages.labels(rejected.kind).inc()
        self.producer.produce(self.dlq_topic, rejected.dead_letter())

    def _on_control(self, control: Control, conn: Connection) -> None:
        self.metrics.control_messages.labels(control.kind).inc()
        if control.kind == "serverShutdown":
            log.warning("%s: server announced shutdown %s", conn.name, control.detail)
            conn.announce_shutdown()
        elif control.kind == "error":
            log.error("%s: server error %s", conn.name, control.detail)
        else:
            log.info("%s: %s", conn.name, control.detail)

    # -- delivery reports (poll thread) ----------------------------------------------------

    def _on_ack(self, topic: str, key: bytes | None, seconds: float) -> None:
        self.metrics.ack_latency.observe(seconds)
        if topic == self.topic and key is not None:
            symbol = key.decode()
            self.produced[symbol] += 1
            self._counters[symbol].produced.inc()
        elif topic == self.dlq_topic:
            self.dlq_acked += 1

    def _on_delivery_error(self, topic: str, error: KafkaError) -> None:
        self.metrics.delivery_errors.labels(topic).inc()

    # -- backfill --------------------------------------------------------------------------

    def _start_backfill(self, sequence: SymbolSequence) -> None:
        task = self._backfills.get(sequence.symbol)
        if task is None or task.done():
            self._backfills[sequence.symbol] = asyncio.create_task(
                self._backfill(sequence), name=f"backfill-{sequence.symbol}"
            )

    async def _backfill(self, sequence: SymbolSequence) -> None:
        assert self.rest is not None
        symbol = sequence.symbol
        await asyncio.sleep(self.options.backfill_grace_s)
        stuck = 0
        while (gap := sequence.missing) is not None:
            first, last = gap
            try:
                fetched = await self.rest.trades(symbol, first, last - first + 1)
            except BackfillError as exc:
                self._give_up_gap(sequence, str(exc))
                continue
            sequence.fill(self._valid(fetched))
            if sequence.missing == gap:
                # REST did not have the next id (yet): retry a few times, then give the gap up.
                stuck += 1
                if stuck >= 3:
                    self._give_up_gap(sequence, f"REST has no trade {first} for {symbol}")
                    stuck = 0
                else:
                    await asyncio.sleep(self.options.backfill_retry_base_s * stuck)
            else:
                stuck = 0
        log.info("%s: gap filled (%d backfilled so far)", symbol, sequence.backfilled)

    def _valid(self, trades: Iterable[TradeMessage]) -> list[TradeMessage]:
        valid = []
        for trade in trades:
            try:
                valid.append(validate_trade(trade))
            except InvalidTradeError as exc:
                self._dead_letter(Rejected(encode_trade(trade), str(exc), "invalid_backfill"))
        return valid

    def _give_up_gap(self, sequence: SymbolSequence, why: str) -> None:
        lost = sequence.skip_gap()
        log.error(
            "%s: %d trades could not be backfilled and are missing (%s)", sequence.symbol, lost, why
        )

    # -- state -----------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, body of GET /health)``; safe to call from another thread (reads only)."""
        now = time.monotonic()
        problems: list[str] = []
        connections = []
        for shard in self.shards:
            conn = shard.current
            connections.append(
                {
                    "id": shard.index,
                    "connected": shard.connected,
                    "streams": len(shard.symbols),
                    "ageS": round(now - conn.opened_at, 3) if conn is not None else None,
                    "reconnects": shard.reconnects,
                    "connectFailures": shard.connect_failures,
                }
            )
            if not shard.connected:
                problems.append(f"connection {shard.index} is not connected")
        kafka_problem = self.producer.problem if self.producer is not None else "not started"
        if kafka_problem:
            problems.append(f"kafka: {kafka_problem}")
        symbols = {}
        for symbol, seq in self.sequences.items():
            last = self._last_trade.get(symbol)
            symbols[symbol] = {
                "lastTradeAgeS": None if last is None else round(now - last, 3),
                "produced": self.produced[symbol],
                "gaps": seq.gaps,
                "backfilled": seq.backfilled,
                "unfilled": seq.unfilled,
                "duplicates": seq.duplicates,
                "heldBehindGap": len(seq.pending),
                "resumedAfter": self.resumed.get(symbol),
            }
        producer = self.producer
        body: dict[str, Any] = {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "produced": sum(self.produced.values()),
            "dlq": self.dlq,
            "wsConnected": bool(self.shards) and all(s.connected for s in self.shards),
            "reconnects": sum(s.reconnects for s in self.shards),
            "connections": connections,
            "kafka": {
                "queued": producer.queued if producer else 0,
                "acked": producer.acked if producer else 0,
                "deliveryErrors": producer.delivery_errors if producer else 0,
                "lost": producer.lost if producer else 0,
                "clientError": producer.client_error if producer else None,
            },
            "symbols": symbols,
        }
        return not problems, body

    def _collect_state(self) -> Iterable[Metric]:
        now = time.monotonic()
        connected = GaugeMetricFamily(
            "binance_ws_connected", "1 while the connection is open", labels=["connection"]
        )
        for shard in self.shards:
            connected.add_metric([str(shard.index)], 1.0 if shard.connected else 0.0)
        age = GaugeMetricFamily(
            "binance_last_trade_age_seconds",
            "Seconds since the last live trade",
            labels=["symbol"],
        )
        for symbol, last in list(self._last_trade.items()):  # a copy: scrapes may be off-loop
            age.add_metric([symbol], now - last)
        held = GaugeMetricFamily(
            "binance_trades_held_behind_gap", "Trades waiting for a backfill", labels=["symbol"]
        )
        for symbol, seq in self.sequences.items():
            held.add_metric([symbol], len(seq.pending))
        per_symbol = {
            name: CounterMetricFamily(f"binance_{name}", doc, labels=["symbol"])
            for name, doc in (
                ("trade_gaps", "Gaps in trade ids seen on the live stream"),
                ("backfilled_trades", "Missed trades fetched over REST"),
                ("unfilled_trades", "Missed trades REST could not deliver (lost)"),
                ("duplicate_trades", "Trades received twice and dropped"),
            )
        }
        for symbol, seq in self.sequences.items():
            per_symbol["trade_gaps"].add_metric([symbol], seq.gaps)
            per_symbol["backfilled_trades"].add_metric([symbol], seq.backfilled)
            per_symbol["unfilled_trades"].add_metric([symbol], seq.unfilled)
            per_symbol["duplicate_trades"].add_metric([symbol], seq.duplicates)
        queued = GaugeMetricFamily(
            "kafka_producer_queued_messages", "Produced, not yet acknowledged"
        )
        queued.add_metric([], self.producer.queued if self.producer else 0)
        return [connected, age, held, queued, *per_symbol.values()]
