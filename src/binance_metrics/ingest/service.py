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
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from confluent_kafka import KafkaError

from binance_metrics.ingest import health
from binance_metrics.ingest.aggregates import Edges
from binance_metrics.ingest.backfill import RestBackfill
from binance_metrics.ingest.backoff import AttemptLimiter, Backoff
from binance_metrics.ingest.discovery import SymbolSelection, SymbolWatch, initial_symbols
from binance_metrics.ingest.frames import Control, FrameParser
from binance_metrics.ingest.gaps import GapFiller
from binance_metrics.ingest.heal import Healer
from binance_metrics.ingest.heartbeats import Heartbeats
from binance_metrics.ingest.metrics import IngestMetrics
from binance_metrics.ingest.quiet import QuietWatch
from binance_metrics.ingest.resume import Resume
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.ingest.stream import Connection, Shard, place, shard_symbols
from binance_metrics.ingest.tail import TailWatch
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.producer import KafkaProducer
from binance_metrics.reconcile.continuous import ContinuousReconciler
from binance_metrics.settings import Settings
from binance_metrics.store.checkpoint import record_start
from binance_metrics.store.clickhouse import Store
from binance_metrics.trades import Rejected, TradeMessage, encode_trade, now_ms

log = logging.getLogger(__name__)


class Ingestor:
    """Owns the producer, the connections and the gap filler; :meth:`start` / :meth:`stop`.

    It is the connections' :class:`~binance_metrics.ingest.stream.FrameConsumer`.
    """

    def __init__(
        self,
        settings: Settings,
        kafka: KafkaConnection,
        store: Store | None = None,
        reconciler: ContinuousReconciler | None = None,
    ) -> None:
        """``store``: the bars store, the resume's checkpoint next to Kafka (optional);
        ``reconciler``: run beside the connections, shown on /health and /metrics, its
        mismatched minutes fetched again by the heal loop."""
        self.settings = settings
        self.tuning = tuning = settings.INGEST
        self.topic = settings.KAFKA_TOPIC
        self.dlq_topic = settings.KAFKA_DLQ_TOPIC
        # SYMBOLS' names; with ALL or patterns, start() adds the symbols exchangeInfo lists.
        self.selection = SymbolSelection.of(settings.SYMBOLS)
        self.metrics = IngestMetrics(())
        self.metrics.add_state_collector(functools.partial(health.collect_state, self))
        self._parser = FrameParser(
            (), tuning.max_frame_bytes, int(tuning.max_trade_time_skew_s * 1000)
        )
        self._keys: dict[str, bytes] = {}
        self._counters = self.metrics.by_symbol
        self.sequences: dict[str, SymbolSequence] = {}
        self.resume = Resume(self.topic, tuning)
        self._awaiting = self.resume.awaiting  # bound once: read for every trade
        self.heartbeats = Heartbeats(self.sequences, self._awaiting, self._offer_heartbeat)
        self._sessions = self.heartbeats.sessions
        #: symbol -> monotonic time of its last live trade
        self.last_trade_at: dict[str, float] = {}
        self.produced: dict[str, int] = {}  # acknowledged trades
        self.dlq = 0  # dead letters produced
        self._kafka = kafka
        self.store = store
        self.producer: KafkaProducer | None = None
        self.gaps: GapFiller | None = None
        self.tail: TailWatch | None = None
        self.quiet: QuietWatch | None = None
        self.healer: Healer | None = None
        self.shards: list[Shard] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._shard_tasks: dict[Shard, asyncio.Task[None]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._limiter = AttemptLimiter(
            tuning.connection_attempts, tuning.connection_attempt_window_s
        )
        self.watch: SymbolWatch | None = None
        self.symbols = self.selection.names
        self._known(self.symbols)
        self._max_pending = tuning.max_pending_per_symbol
        self._observe_latency = self.metrics.trade_latency.observe
        self.reconciler = reconciler
        market = settings.market_defaults
        #: COIN-M: symbol -> contractSize (exchangeInfo), put in every trade as ``cs``.
        self.contract_sizes: dict[str, int] | None = {} if market.contracts else None
        #: Futures: each symbol's last run produced, where a gap's aggregates are cut.
        self._edges = Edges() if market.futures else None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume from Kafka, then open the producer, the REST client and the connections."""
        settings, tuning = self.settings, self.tuning
        rest = RestBackfill.from_settings(settings)
        try:
            self.symbols = await initial_symbols(self.selection, rest, self.contract_sizes)
            self._known(self.symbols)
        except BaseException:
            await rest.aclose()
            raise
        await self.resume.seed(self._kafka, self.sequences, self.store)
        if self._edges is not None:  # a gap after the restart cuts its first aggregate there
            for run in self.resume.last_runs.values():
                for trade in run:
                    self._edges.note(trade)
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
            self.sequences, rest, tuning, self._dead_letter, self._edges, self.contract_sizes
        )
        self.tail = TailWatch(
            self.sequences, rest, self.gaps, self.last_trade_at, tuning, self.resume.awaiting
        )
        if self.tail.enabled:
            self._tasks.append(asyncio.create_task(self.tail.run(), name="tail-watch"))
            self.quiet = QuietWatch(
                self.tail, self.heartbeats, self.sequences, lambda: self.symbols,
                self.resume.awaiting, window_ms=settings.WINDOW_SECONDS * 1000,
                weight_budget=tuning.rest_weight_budget,
            )  # fmt: skip
            self._tasks.append(asyncio.create_task(self.quiet.run(), name="quiet-watch"))
        if self.store is not None and tuning.heal_every_s > 0:
            self.healer = Healer(
                self.store, rest, self._produce, self.sequences, tuning, self.contract_sizes
            )
            self.metrics.add_state_collector(self.healer.collect)
            self._tasks.append(asyncio.create_task(self.healer.run(), name="heal"))
        for group in shard_symbols(self.symbols, tuning.streams_per_connection):
            self._open_shard(group)
        if self.selection.needs_discovery:
            self.watch = SymbolWatch(
                self.selection,
                rest,
                self.symbols,
                tuning.symbols_refresh_s,
                self.change_symbols,
                self.contract_sizes,
            )
            self._tasks.append(asyncio.create_task(self.watch.run(), name="symbol-watch"))
        if self.reconciler is not None:
            if self.healer is not None:
                self.reconciler.on_mismatch = self._heal_minute
            self._tasks.append(asyncio.create_task(self.reconciler.run(), name="reconcile"))
        log.info(
            "ingesting %d symbols over %d connections to %s",
            len(self.symbols),
            len(self.shards),
            settings.BINANCE_WS_URL,
        )

    async def stop(self) -> int:
        """Close connections, release held trades, flush Kafka; return undelivered messages."""
        tasks = [*self._tasks, *self._shard_tasks.values(), *self._closing]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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

    # -- the symbols and their shards ------------------------------------------------------

    def _known(self, symbols: Sequence[str]) -> list[str]:
        """Make ``symbols`` known to the hot path (parser, sequences, counters); the new ones."""
        new = [s for s in symbols if s not in self.sequences]
        self._parser.add(new)
        self.metrics.add_symbols(new)
        for symbol in new:
            self._keys[symbol] = symbol.encode()
            self.sequences[symbol] = SymbolSequence(symbol, self._emit)
            self.produced[symbol] = 0
        return new

    def _open_shard(self, symbols: Sequence[str]) -> None:
        settings = self.settings
        shard = Shard(
            max((s.index for s in self.shards), default=-1) + 1,
            settings.BINANCE_WS_URL,
            tuple(symbols),
            tuning=self.tuning,
            backoff=Backoff(settings.RECONNECT_DELAY_S, settings.MAX_RECONNECT_DELAY_S),
            limiter=self._limiter,
            metrics=self.metrics,
            consumer=self,
        )
        self.shards.append(shard)
        self._shard_tasks[shard] = asyncio.create_task(shard.run(), name=f"shard-{shard.index}")

    def change_symbols(self, added: Sequence[str], removed: Sequence[str]) -> None:
        """Subscribe ``added`` (filling shards with room, then new ones) and unsubscribe
        ``removed`` on the live connections; a shard left without streams is closed."""
        gone = set(removed)
        for shard in list(self.shards):
            if leaving := [s for s in shard.symbols if s in gone]:
                shard.remove(leaving)
            if not shard.symbols:
                self.shards.remove(shard)
                task = self._shard_tasks.pop(shard)
                task.cancel()  # its connection closes as the task ends
                self._closing.add(task)  # a reference until then
                task.add_done_callback(self._closing.discard)
        kept = tuple(s for s in self.symbols if s not in gone)
        self._known(added)
        self.symbols = (*kept, *(s for s in added if s not in kept))
        waiting = list(dict.fromkeys(s for s in added if s not in gone))
        extra, groups = place(
            [len(shard.symbols) for shard in self.shards],
            waiting,
            self.tuning.streams_per_connection,
        )
        for shard, symbols in zip(self.shards, extra, strict=True):
            if symbols:
                shard.add(symbols)
        for group in groups:
            self._open_shard(group)

    # -- hot path (FrameConsumer) ----------------------------------------------------------

    def on_frame(self, raw: bytes, conn: Connection) -> None:
        now = now_ms()
        result = self._parser.parse(raw, now)
        if type(result) is TradeMessage:
            latency = now - result.event_time_ms
            sizes = self.contract_sizes
            if sizes is None:
                trade = msgspec.structs.replace(result, ingestion_time_ms=now, latency_ms=latency)
            elif (size := sizes.get(result.symbol)) is not None:
                trade = msgspec.structs.replace(
                    result, ingestion_time_ms=now, latency_ms=latency, contract_size=size
                )
            else:  # never a COIN-M bar without its base-asset volume
                why = f"{result.symbol}: no contractSize known (exchangeInfo): volume unusable"
                self._dead_letter(Rejected(raw, why, "no_contract_size"))
                return
            self._observe_latency(latency / 1000)
            symbol = trade.symbol
            self.last_trade_at[symbol] = time.monotonic()
            sequence = self.sequences[symbol]
            if sequence.next_id is None and self.store is not None:
                self._record_start(symbol, trade.trade_id)
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

    def _record_start(self, symbol: str, trade_id: int) -> None:
        """The symbol starts here, with nothing to resume from: the store keeps it (off the
        loop) as the checkpoint until a first bar is stored."""
        store = self.store
        assert store is not None

        def record() -> None:
            try:
                record_start(store, symbol, trade_id)
            except Exception as exc:  # noqa: BLE001 - a crash before the first bar loses more
                log.warning("%s: could not record the start at trade %d: %s", symbol, trade_id,
                            exc)  # fmt: skip

        asyncio.get_running_loop().run_in_executor(None, record)

    def broker_restarted(self) -> None:
        """The broker lost its state (any thread): a new producer; the heal loop fetches what
        the broker lost."""
        if self.producer is not None:
            self.producer.replace()

    def _heal_minute(self, symbol: str, open_time_ms: int) -> None:
        """A stored minute that differs from Binance's kline: its trades are fetched again."""
        task = asyncio.create_task(self._fetch_minute(symbol, open_time_ms), name=f"heal-{symbol}")
        self._closing.add(task)  # a reference until it is done; cancelled by stop()
        task.add_done_callback(self._closing.discard)

    async def _fetch_minute(self, symbol: str, open_time_ms: int) -> None:
        assert self.healer is not None
        result = await self.healer.heal_minute(symbol, open_time_ms)
        if result.unfilled is not None:
            log.warning(
                "%s: minute %d not fetched again: %s", symbol, open_time_ms, result.unfilled
            )

    def on_connected(self, symbols: tuple[str, ...]) -> None:
        if self.tail is not None and self.tail.enabled:
            self.tail.connected(symbols)

    def _produce(self, trade: TradeMessage) -> None:
        """A trade outside the sequence (healing): it does not move the futures run."""
        assert self.producer is not None
        self.producer.produce(self.topic, encode_trade(trade), self._keys[trade.symbol])

    def _emit(self, trade: TradeMessage) -> None:
        assert self.producer is not None
        if self._edges is not None:
            self._edges.note(trade)
        self.producer.produce(self.topic, encode_trade(trade), self._keys[trade.symbol])

    def _offer_heartbeat(self, symbol: str, payload: bytes) -> bool:
        assert self.producer is not None
        return self.producer.offer(self.topic, payload, self._keys[symbol])

    def _dead_letter(self, rejected: Rejected) -> None:
        assert self.producer is not None
        self.dlq += 1
        self.metrics.dlq_messages.labels(rejected.kind).inc()
        self.producer.produce(self.dlq_topic, rejected.dead_letter())

    def _on_control(self, control: Control, conn: Connection) -> None:
        self.metrics.control_messages.labels(control.kind).inc()
        if control.kind in ("result", "error") and conn.subscriber.answer(control.detail):
            return  # the reply to one of the connection's SUBSCRIBE / UNSUBSCRIBE requests
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
