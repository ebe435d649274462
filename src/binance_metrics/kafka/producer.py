"""An idempotent confluent-kafka producer that never blocks the event loop and never drops.

``produce`` is synchronous and cheap (it only enqueues), so the asyncio hot path can call it for
every trade. Three layers hold a message until the broker acknowledges it:

1. librdkafka's queue, bounded by ``queue.buffering.max.messages``;
2. when that is full (``BufferError``), our own FIFO ``overflow``, drained in order by the poll
   thread as librdkafka makes room. Callers read :attr:`KafkaProducer.backpressure` and await
   :meth:`KafkaProducer.wait_for_room` to stop reading input while the overflow is above its
   soft bound, so memory stays bounded by what the caller already received;
3. retries: ``message.timeout.ms = 0`` (infinite) makes librdkafka retry a message until the
   broker takes it instead of failing it after 5 minutes. A delivery error that still comes back
   (a permanent one) is counted and the message produced again up to ``max_redeliveries`` times,
   then logged with its payload as lost — never silently.

Idempotence (``enable.idempotence``, which implies ``acks=all``) keeps retries free of duplicates
and keeps the order of messages with the same key, which the bars rely on (one symbol = one key).
A broker that lost its state (the embedded broker restarted with empty topics) makes the
idempotent producer fail for good ("unknown producer id", a fatal error): the producer is then
replaced by a new one, and the messages the old one did not deliver are produced again through
the new one (each counts as a redelivery).

:meth:`KafkaProducer.hold` keeps new messages in the overflow, in order, until
:meth:`KafkaProducer.release`: the embedded broker is started afresh in between, once every
message before it was acknowledged (:mod:`binance_metrics.kafka.retention`).

Delivery reports run on a background thread that calls ``poll``; ``on_ack`` / ``on_error`` are
called from that thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.log import RepeatFilter

log = logging.getLogger(__name__)
# While a broker is down, every reconnect attempt and every retried message logs the same line.
log.addFilter(RepeatFilter())

#: Settings that make delivery exactly-once per session and ordered per key.
SAFE_CONFIG: Final[Mapping[str, Any]] = {
    "enable.idempotence": True,
    "acks": "all",
    "message.timeout.ms": 0,  # infinite: retry while the broker is down rather than fail
    "linger.ms": 5,
    "compression.type": "lz4",
}

AckCallback = Callable[[str, bytes | None, float], None]
"""``(topic, key, seconds from produce() to broker ack)``, called on the poll thread."""

ErrorCallback = Callable[[str, KafkaError], None]
"""``(topic, error)`` for every failed delivery (retried or not), called on the poll thread."""


class KafkaProducer:
    """Ordered, bounded, non-blocking producer; use :meth:`start` / :meth:`close`."""

    def __init__(
        self,
        kafka: KafkaConnection,
        *,
        max_buffered_messages: int,
        overflow_soft_limit: int,
        max_redeliveries: int,
        stall_after_s: float,
        on_ack: AckCallback | None = None,
        on_error: ErrorCallback | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """The bounds are the ingestor's tuning (``INGEST__*``, docs/configuration.md).

        ``config``: librdkafka settings over the safe defaults (the tests shorten timeouts).
        """
        self._config = kafka.client_config(
            **{
                **SAFE_CONFIG,
                "queue.buffering.max.messages": max_buffered_messages,
                "on_delivery": self._on_delivery,
                "error_cb": self._on_client_error,
                **(config or {}),
            }
        )
        self._producer = Producer(self._config)
        self._fatal = threading.Event()  # the producer failed for good: replace it
        self._held = threading.Event()  # hold(): new messages wait in the overflow
        #: (topic, partition) -> the highest offset acknowledged there.
        self.acked_offsets: dict[tuple[str, int], int] = {}
        self.replacements = 0
        self._overflow: deque[tuple[str, bytes, bytes | None, int]] = deque()
        # Serialises "overflow empty? then produce directly" against the drain, so order holds.
        self._lock = threading.Lock()
        self._soft_limit = overflow_soft_limit
        self._max_redeliveries = max_redeliveries
        self._stall_after_s = stall_after_s
        self._on_ack = on_ack
        self._on_error = on_error
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._last_progress = time.monotonic()
        self._client_error: str | None = None
        self.acked = 0
        self.delivery_errors = 0
        self.lost = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> KafkaProducer:
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout_s: float = 30.0) -> int:
        """Drain the overflow, flush, stop the poll thread; return messages left undelivered."""
        deadline = time.monotonic() + timeout_s
        # From here on this thread alone polls, so delivery callbacks never run concurrently.
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        while self._overflow and time.monotonic() < deadline:
            self._drain_overflow()
            self._producer.poll(0.05)
        left = self._producer.flush(max(0.0, deadline - time.monotonic())) + len(self._overflow)
        if left:
            log.error("%d messages were not acknowledged by Kafka before shutdown", left)
        else:
            # Release librdkafka's threads and sockets now; with messages left, close() would
            # flush again without a bound, so the handle is left to the garbage collector.
            self._producer.close()
        return left

    # -- producing -------------------------------------------------------------------------

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Enqueue one message; never blocks, never raises ``BufferError``, keeps order."""
        with self._lock:
            if not self._overflow and not self._fatal.is_set() and not self._held.is_set():
                try:
                    self._producer.produce(topic, value, key)
                    return
                except BufferError:
                    pass
                except KafkaException:  # fatal: the poll thread replaces the producer
                    self._fatal.set()
            self._overflow.append((topic, value, key, 0))

    def offer(self, topic: str, value: bytes, key: bytes | None = None) -> bool:
        """Produce ``value`` only if it need not wait (nothing in the overflow, room in
        librdkafka's queue); return whether it was. For messages that the next one supersedes
        (heartbeats): never queued, never produced again after an error, not passed to
        ``on_ack``, and never ahead of a message produced before it."""
        with self._lock:
            if self._overflow or self._held.is_set():
                return False
            try:
                self._producer.produce(topic, value, key, on_delivery=self._on_offered)
            except BufferError:
                return False
        return True

    def hold(self) -> None:
        """Keep every new message in the overflow (in order) until :meth:`release`."""
        self._held.set()

    def release(self) -> None:
        self._held.clear()

    @property
    def in_flight(self) -> int:
        """Messages handed to librdkafka and not acknowledged yet."""
        return len(self._producer)

    @property
    def backpressure(self) -> bool:
        """True while the overflow is above its soft bound: stop reading input."""
        return len(self._overflow) > self._soft_limit

    async def wait_for_room(self) -> None:
        """Wait until the overflow is back under its soft bound (the poll thread drains it)."""
        while len(self._overflow) > self._soft_limit // 2:
            await asyncio.sleep(0.01)

    # -- state for /health and /metrics ----------------------------------------------------

    @property
    def queued(self) -> int:
        """Messages produced but not yet acknowledged (librdkafka queue + overflow)."""
        return len(self._producer) + len(self._overflow)

    @property
    def problem(self) -> str | None:
        """Why Kafka looks unhealthy, or None: overflow in use, or no ack for a while."""
        if self._overflow:
            return f"local buffer full ({len(self._overflow)} messages waiting)"
        stalled = time.monotonic() - self._last_progress
        if len(self._producer) and stalled > self._stall_after_s:
            return f"no acknowledgement for {stalled:.1f} s ({len(self._producer)} in flight)"
        return None

    @property
    def client_error(self) -> str | None:
        return self._client_error

    # -- poll thread -----------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.05)
            if self._fatal.is_set():
                self._replace_producer()
            if self._overflow:
                self._drain_overflow()
            if not len(self._producer):
                # Nothing in flight counts as progress: an idle producer is not a stalled one.
                self._last_progress = time.monotonic()

    def replace(self) -> None:
        """Replace the producer soon (the broker lost its state: its idempotence bookkeeping
        no longer matches); what was not delivered is produced again."""
        self.acked_offsets.clear()  # the new broker's offsets start again at 0
        self._fatal.set()

    def _replace_producer(self) -> None:
        """A new producer; the old one's undelivered messages come back through the delivery
        reports (failed) and are produced again through the new one."""
        log.error("replacing the Kafka producer (%s)", self._client_error or "broker restarted")
        old = self._producer
        with self._lock:
            self._producer = Producer(self._config)
            self._fatal.clear()
        try:
            old.purge()
        except KafkaException as exc:
            log.warning("purging the failed producer: %s", exc)
        deadline = time.monotonic() + 10
        while len(old) and time.monotonic() < deadline:
            old.poll(0.05)  # runs the delivery reports of the purged messages
        self.replacements += 1

    def _drain_overflow(self) -> None:
        with self._lock:
            while self._overflow and not self._fatal.is_set() and not self._held.is_set():
                topic, value, key, attempt = self._overflow[0]
                try:
                    if attempt:
                        self._producer.produce(
                            topic, value, key, on_delivery=self._redelivery_callback(attempt)
                        )
                    else:
                        self._producer.produce(topic, value, key)
                except BufferError:
                    return
                except KafkaException:
                    self._fatal.set()
                    return
                self._overflow.popleft()

    def _redelivery_callback(self, attempt: int) -> Callable[[KafkaError | None, Message], None]:
        return lambda err, msg: self._delivered(err, msg, attempt)

    def _on_offered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._last_progress = time.monotonic()
        else:
            log.debug("an offered message to %s was not delivered: %s", msg.topic(), err)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self._delivered(err, msg, 0)

    def _delivered(self, err: KafkaError | None, msg: Message, attempt: int) -> None:
        topic = msg.topic() or ""
        if err is None:
            self.acked += 1
            offset = msg.offset()
            if offset is not None:
                where = (topic, msg.partition() or 0)
                self.acked_offsets[where] = max(offset, self.acked_offsets.get(where, -1))
            self._last_progress = time.monotonic()
            self._client_error = None
            if self._on_ack is not None:
                self._on_ack(topic, msg.key(), msg.latency() or 0.0)
            return
        self.delivery_errors += 1
        if self._on_error is not None:
            self._on_error(topic, err)
        value = msg.value() or b""
        # librdkafka already retried retriable errors (infinite timeout); this is a second line.
        if attempt < self._max_redeliveries:
            log.warning("delivery to %s failed (%s); producing again", topic, err)
            with self._lock:
                self._overflow.append((topic, value, msg.key(), attempt + 1))
            return
        self.lost += 1
        log.error(
            "giving up on a message to %s after %d attempts (%s): %r",
            topic,
            attempt + 1,
            err,
            value[:2000],
        )

    def _on_client_error(self, err: KafkaError) -> None:
        # e.g. _ALL_BROKERS_DOWN / _TRANSPORT: shown in /health until the next ack.
        self._client_error = str(err)
        if err.fatal():
            self._fatal.set()
        log.warning("kafka client error: %s", err)
