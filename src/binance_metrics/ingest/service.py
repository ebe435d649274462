"""The ingestor: frames in, validated and sequenced trades out to Kafka, bad frames to the DLQ.

Per frame (the hot path, all synchronous on the event loop)::

    raw -> FrameParser.parse -> TradeMessage + ingestionTimeMs, latencyMs
        -> SymbolSequence.offer (dedupe, order, gap detection)
        -> KafkaProducer.produce(KAFKA_TOPIC, key=symbol)      (acks counted on the poll thread)

The :class:`Ingestor` wires the parts and owns their lifecycle; the concepts live beside it:
the connections (:mod:`~binance_metrics.ingest.stream`, which hand frames to
:meth:`Ingestor.on_frame`), gap filling (:mod:`~binance_metrics.ingest.gaps`), the resume
after a restart (:mod:`~binance_metrics.ingest.resume`) and the read-only views for ``/health``
and ``/metrics`` (:mod:`~binance_metrics.ingest.health`). Its tuning is ``settings.INGEST``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from confluent_kafka import KafkaError

from binance_metrics.ingest import health
from binance_metrics.ingest.backfill import RestBackfill
from binance_metrics.ingest.backoff import AttemptLimiter, Backoff
from binance_metrics.ingest.frames import Control, FrameParser
from binance_metrics.ingest.gaps import GapFiller
from binance_metrics.ingest.heartbeats import Heartbeats
from binance_metrics.ingest.metrics import IngestMetrics
from binance_metrics.ingest.resume import Resume
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.ingest.stream import Connection, Shard, shard_symbols
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.producer import KafkaProducer
from binance_metrics.settings import Settings
from binance_metrics.trades import Rejected, TradeMessage, encode_trade, now_ms

log = logging.getLogger(__name__)


class Ingestor:
    """Owns the producer, the connections and the gap filler; :meth:`start` / :meth:`stop`.

    It is the connections' :class:`~binance_metrics.ingest.stream.FrameConsumer`.
    """

    def __init__(self, settings: Settings, kafka: KafkaConnection) -> None:
        self.settings = settings
        self.tuning = tuning = settings.INGEST
        self.topic = settings.KAFKA_TOPIC
        self.dlq_topic = settings.KAFKA_DLQ_TOPIC
        self.symbols = settings.SYMBOLS
        self.metrics = IngestMetrics(self.symbols)
        self.metrics.add_state_collector(functools.partial(health.collect_state, self))
        self._parser = FrameParser(
            self.symbols, tuning.max_frame_bytes, int(tuning.max_trade_time_skew_s * 1000)
        )
        self._keys = {s: s.encode() for s in self.symbols}
        self._counters = self.metrics.by_symbol
        self.sequences = {s: SymbolSequence(s, self._emit) for s in self.symbols}
        self.resume = Resume(self.topic, tuning)
        self._awaiting = self.resume.awaiting  # bound once: read for every trade
        self.heartbeats = Heartbeats(self.sequences, self._awaiting, self._offer_heartbeat)
        self._sessions = self.heartbeats.sessions
        #: symbol -> monotonic time of its last live trade
        self.last_trade_at: dict[str, float] = {}
        self.produced: dict[str, int] = dict.fromkeys(self.symbols, 0)  # acknowledged trades
        self.dlq = 0  # dead letters produced
        self._kafka = kafka
        self.producer: KafkaProducer | None = None
        self.gaps: GapFiller | None = None
        self.shards: list[Shard] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._max_pending = tuning.max_pending_per_symbol
        self._observe_latency = self.metrics.trade_latency.observe

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume from Kafka, then open the producer, the REST client and the connections."""
        settings, tuning = self.settings, self.tuning
        await self.resume.seed(self._kafka, self.sequences)
        self.producer = KafkaProducer(
            self._kafka,
            max_buffered_messages=tuning.max_buffered_messages,
            overflow_soft_limit=tuning.overflow_soft_limit,
            max_redeliveries=tuning.kafka_max_redeliveries,
            stall_after_s=tuning.kafka_stall_s,
            on_ack=self._on_ack,
            on_error=self._on_delivery_error,
        ).start()
        self.gaps = GapFiller(
            self.sequences, RestBackfill.from_settings(settings), tuning, self._dead_letter
        )
        limiter = AttemptLimiter(tuning.connection_attempts, tuning.connection_attempt_window_s)
        self.shards = [
            Shard(
                i,
                settings.BINANCE_WS_URL,
                group,
                tuning=tuning,
                backoff=Backoff(settings.RECONNECT_DELAY_S, settings.MAX_RECONNECT_DELAY_S),
                limiter=limiter,
                metrics=self.metrics,
                consumer=self,
            )
            for i, group in enumerate(shard_symbols(self.symbols, tuning.streams_per_connection))
        ]
        self._tasks = [asyncio.create_task(s.run(), name=f"shard-{s.index}") for s in self.shards]
        log.info(
            "ingesting %d symbols over %d connections to %s",
            len(self.symbols),
            len(self.shards),
            settings.BINANCE_WS_URL,
        )

    async def stop(self) -> int:
        """Close connections, release held trades, flush Kafka; return undelivered messages."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.gaps is not None:
            # Held trades were received: they are produced (their gaps counted as unfilled).
            await self.gaps.close()
        left = 0
        if self.producer is not None:
            producer = self.producer
            left = await asyncio.get_running_loop().run_in_executor(None, producer.close)
        return left

    def health(
        self, checks: Mapping[str, health.Check] | None = None
    ) -> tuple[bool, dict[str, Any]]:
        """``(healthy, body of GET /health)``; see :func:`binance_metrics.ingest.health.health`."""
        return health.health(self, checks)

    # -- hot path (FrameConsumer) ----------------------------------------------------------

    def on_frame(self, raw: bytes, conn: Connection) -> None:
        now = now_ms()
        result = self._parser.parse(raw, now)
        if type(result) is TradeMessage:
            latency = now - result.event_time_ms
            trade = msgspec.structs.replace(result, ingestion_time_ms=now, latency_ms=latency)
            self._observe_latency(latency / 1000)
            symbol = trade.symbol
            self.last_trade_at[symbol] = time.monotonic()
            sequence = self.sequences[symbol]
            awaiting = self._awaiting
            give_up = (
                self.resume.judge(sequence, trade.trade_id)
                if awaiting and symbol in awaiting
                else None
            )
            if sequence.offer(trade):
                assert self.gaps is not None
                if give_up is None:
                    self.gaps.start(sequence)
                else:
                    self.gaps.give_up(sequence, give_up)
            elif len(sequence.pending) > self._max_pending:
                assert self.gaps is not None
                self.gaps.give_up(sequence, "too many trades held behind the gap")
            self._sessions[symbol] = conn.session
            if trade.event_time_ms >= conn.next_heartbeat_ms:
                self.heartbeats.beat(conn, trade.event_time_ms, now)
            return
        if isinstance(result, Control):
            self._on_control(result, conn)
        elif isinstance(result, Rejected):
            self._dead_letter(result)

    @property
    def backpressure(self) -> bool:
        """True while Kafka's overflow is above its soft bound: the connections stop reading."""
        producer = self.producer
        return producer is not None and producer.backpressure

    async def wait_for_room(self) -> None:
        if self.producer is not None:
            await self.producer.wait_for_room()

    def _emit(self, trade: TradeMessage) -> None:
        assert self.producer is not None
        self.producer.produce(self.topic, encode_trade(trade), self._keys[trade.symbol])

    def _offer_heartbeat(self, symbol: str, payload: bytes) -> None:
        assert self.producer is not None
        self.producer.offer(self.topic, payload, self._keys[symbol])

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

    def _on_delivery_error(self, topic: str, error: KafkaError) -> None:
        self.metrics.delivery_errors.labels(topic).inc()
