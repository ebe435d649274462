"""WebSocket connections to Binance's combined stream, kept alive whatever the server does.

One :class:`Shard` owns up to 1024 streams (Binance's per-connection limit) and always tries to
have one open :class:`Connection` on ``<ws_url>`` subscribed to them with ``SUBSCRIBE`` messages
(:mod:`~binance_metrics.ingest.subscriptions`): the URL carries no stream list, so its length
does not grow with the streams. A shard's streams can change while it runs (:meth:`Shard.add`,
:meth:`Shard.remove`): the open connection subscribes or unsubscribes them; every new connection
(reconnect or switch) subscribes the shard's current streams before it counts as open.

Each frame goes to the :class:`FrameConsumer` (the ingestor), which also tells the reader when
to pause for Kafka (:attr:`FrameConsumer.backpressure`). The timings are
:class:`~binance_metrics.ingest.tuning.IngestTuning` (``INGEST__*``).

* **pings**: the server pings every 20 s and drops a client that does not pong within a minute.
  websockets answers every ping with a pong of the same payload inside its protocol layer
  (``websockets.protocol.Protocol.recv_frame``, opcode PING), independent of our reads, so there is
  nothing to write here; the tests check that the fake exchange's pings are answered.
* **cuts** (with or without a close frame), refused handshakes, timeouts: reconnect after an
  exponential backoff with jitter, reset once a connection has stayed up ``healthy_after_s``;
  every attempt also passes the process-wide :class:`AttemptLimiter` (300 per 5 minutes).
* **silence**: a watchdog closes a connection whose reader has waited ``silence_timeout_s`` for a
  frame (a connection stalled without closing). Time spent paused by Kafka backpressure does not
  count as silence.
* **24-hour cut and ``serverShutdown``**: make-before-break. The replacement is opened first; the
  old connection keeps reading until the new one delivers its first frame (or ``switch_timeout_s``
  passes, for quiet symbols), then it is closed. Trades seen on both are dropped downstream by
  trade id (:mod:`binance_metrics.ingest.sequence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import websockets
from websockets.asyncio.client import ClientConnection, connect

from binance_metrics.ingest.backoff import AttemptLimiter, Backoff
from binance_metrics.ingest.metrics import IngestMetrics
from binance_metrics.ingest.reach import OFFLINE_HINT, connect_failure
from binance_metrics.ingest.subscriptions import Subscriber, SubscriptionError, stream_name
from binance_metrics.ingest.tuning import MAX_STREAMS_PER_CONNECTION, IngestTuning

log = logging.getLogger(__name__)


class FrameConsumer(Protocol):
    """What a connection hands its frames to (the ingestor), on the event loop."""

    def on_frame(self, raw: bytes, conn: Connection) -> None:
        """Take one frame; must not raise (a raise is logged and the frame lost)."""

    @property
    def backpressure(self) -> bool:
        """True when the reader should stop reading until :meth:`wait_for_room` returns."""

    async def wait_for_room(self) -> None:
        """Return once the consumer can take frames again."""

    def on_connected(self, symbols: tuple[str, ...]) -> None:
        """A connection for ``symbols`` opened (trades may have been missed meanwhile)."""


def stream_url(ws_url: str, symbols: Sequence[str]) -> str:
    """``wss://.../stream?streams=btcusdt@trade/ethusdt@trade`` (stream names are lower case)."""
    return f"{ws_url}?streams=" + "/".join(f"{s.lower()}@trade" for s in symbols)


def shard_symbols(symbols: Sequence[str], per_connection: int) -> list[tuple[str, ...]]:
    per_connection = max(1, min(per_connection, MAX_STREAMS_PER_CONNECTION))
    return [tuple(symbols[i : i + per_connection]) for i in range(0, len(symbols), per_connection)]


def place(
    loads: Sequence[int], symbols: Sequence[str], per_connection: int
) -> tuple[list[list[str]], list[tuple[str, ...]]]:
    """Where new ``symbols`` go: into the shards with room, in order (``loads``: how many
    streams each has), then into new shards. Returns (what each shard gets, the new groups)."""
    per_connection = max(1, min(per_connection, MAX_STREAMS_PER_CONNECTION))
    waiting = list(symbols)
    extra: list[list[str]] = []
    for load in loads:
        room = max(0, per_connection - load)
        extra.append(waiting[:room])
        waiting = waiting[room:]
    return extra, shard_symbols(waiting, per_connection)


class Connection:
    """One open WebSocket and the task that reads it."""

    def __init__(
        self,
        ws: ClientConnection,
        name: str,
        consumer: FrameConsumer,
        tuning: IngestTuning,
        session: tuple[int, int] = (0, 0),
    ) -> None:
        self.ws = ws
        self.name = name
        self.subscriber = Subscriber(
            ws.send,
            messages_per_s=tuning.subscribe_messages_per_s,
            streams_per_message=tuning.streams_per_subscribe,
            reply_timeout_s=tuning.subscribe_timeout_s,
            name=name,
        )
        self.streams: set[str] = set()  # subscribed, as the server confirmed
        #: (shard, number) of the unbroken run of connections this one belongs to: a switch
        #: (make-before-break) keeps it, a lost connection ends it (see ingest/heartbeats.py).
        self.session = session
        self.next_heartbeat_ms = 0  # the consumer's: when this connection's next heartbeat is due
        self.opened_at = time.monotonic()
        self.frames = 0
        self.first_frame = asyncio.Event()
        self.shutdown_announced = asyncio.Event()
        # When the reader started waiting for the current frame; None while it is busy/paused.
        self.waiting_since: float | None = None
        self._consumer = consumer
        self.task = asyncio.create_task(self._read(), name=f"ws-read-{name}")

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols whose trade streams this connection is subscribed to."""
        return tuple(stream.partition("@")[0].upper() for stream in self.streams)

    async def _read(self) -> None:
        ws, consumer, monotonic = self.ws, self._consumer, time.monotonic
        on_frame = consumer.on_frame
        try:
            while True:
                self.waiting_since = monotonic()
                raw = await ws.recv(decode=False)
                self.waiting_since = None
                if not self.frames:
                    self.first_frame.set()
                self.frames += 1
                try:
                    on_frame(raw if isinstance(raw, bytes) else bytes(raw), self)
                except Exception:
                    # Input must never kill the reader; the handler is not expected to raise.
                    log.exception("%s: frame handler failed on %r", self.name, raw[:300])
                if consumer.backpressure:
                    await consumer.wait_for_room()
        except websockets.ConnectionClosed as exc:
            log.info("%s closed: %s", self.name, exc)
        finally:
            self.waiting_since = None
            self.subscriber.fail("connection closed")

    def announce_shutdown(self) -> None:
        self.shutdown_announced.set()

    @property
    def alive(self) -> bool:
        return not self.task.done()

    def silent_for(self, now: float) -> float:
        return 0.0 if self.waiting_since is None else now - self.waiting_since

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


class Shard:
    """Keeps one connection open for a fixed set of symbols (see the module docstring)."""

    def __init__(
        self,
        index: int,
        ws_url: str,
        symbols: tuple[str, ...],
        *,
        tuning: IngestTuning,
        backoff: Backoff,
        limiter: AttemptLimiter,
        metrics: IngestMetrics,
        consumer: FrameConsumer,
    ) -> None:
        """``backoff`` is this shard's own; ``limiter`` is shared by every shard of a process."""
        self.index = index
        self._streams = {stream_name(s): s for s in symbols}  # wanted: stream -> symbol
        self.url = ws_url
        self.tuning = tuning
        self._limiter = limiter
        self._metrics = metrics
        self._consumer = consumer
        self.backoff = backoff
        self.current: Connection | None = None
        self._others: set[Connection] = set()  # the outgoing one during a switch
        self._opened = 0
        self.sessions = 0  # connections lost so far: the current session's number
        self.reconnects = 0
        self.connect_failures = 0
        self.failures_in_row = 0  # failed attempts since the last open connection
        self.last_error: str | None = None  # why the last attempt failed, while failing
        self.delays: deque[float] = deque(maxlen=100)  # recent backoff sleeps, for the tests
        self._syncs: set[asyncio.Task[None]] = set()
        self._sync_lock = asyncio.Lock()

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols this shard wants (subscribed, or about to be)."""
        return tuple(self._streams.values())

    @property
    def connected(self) -> bool:
        return self.current is not None and self.current.alive

    def add(self, symbols: Sequence[str]) -> None:
        """Subscribe ``symbols`` as well (on the open connection, and on every later one)."""
        self._streams.update((stream_name(s), s) for s in symbols)
        self._resync()

    def remove(self, symbols: Sequence[str]) -> None:
        """Unsubscribe ``symbols``; their trades already read are still delivered."""
        for symbol in symbols:
            self._streams.pop(stream_name(symbol), None)
        self._resync()

    def _resync(self) -> None:
        conn = self.current
        if conn is not None and conn.alive:
            task = asyncio.create_task(self._sync_live(conn), name=f"sync-{conn.name}")
            self._syncs.add(task)  # a reference, so the task is not collected mid-way
            task.add_done_callback(self._syncs.discard)

    async def _sync_live(self, conn: Connection) -> None:
        try:
            await self._sync(conn)
        except SubscriptionError as exc:
            # The reconnect subscribes the shard's streams afresh.
            log.error("%s: %s; reconnecting", conn.name, exc)
            await conn.close()

    async def _sync(self, conn: Connection) -> None:
        """Until ``conn`` carries exactly the wanted streams (they may change meanwhile)."""
        async with self._sync_lock:
            while conn.alive and (missing := self._streams.keys() - conn.streams) | (
                extra := conn.streams - self._streams.keys()
            ):
                if extra:
                    await conn.subscriber.unsubscribe(sorted(extra))
                    conn.streams -= extra
                if missing:
                    await conn.subscriber.subscribe(sorted(missing))
                    conn.streams |= missing

    @property
    def never_connected(self) -> bool:
        return self._opened == 0

    async def run(self) -> None:
        try:
            conn = await self._connect("start")
            while True:
                self.current = conn
                reason = await self._watch(conn)
                if reason in ("rotate", "serverShutdown"):
                    conn = await self._switch(conn, reason)
                    continue
                lived = time.monotonic() - conn.opened_at
                await conn.close()
                self.current = None
                self.sessions += 1
                if lived >= self.tuning.healthy_after_s:
                    self.backoff.reset()
                await self._sleep_backoff()
                conn = await self._connect(reason)
        finally:
            leftover = [c for c in (self.current, *self._others) if c is not None]
            for old in leftover:
                await old.close()
            self.current = None
            for task in list(self._syncs):
                task.cancel()

    async def _switch(self, old: Connection, reason: str) -> Connection:
        """Make-before-break: open the new connection, let both read, then close the old."""
        self._others.add(old)
        try:
            new = await self._connect(reason)
            self.current = new
            first = asyncio.ensure_future(new.first_frame.wait())
            await asyncio.wait(
                (first, old.task),
                timeout=self.tuning.switch_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            first.cancel()
            log.info("%s: switched to %s (%s)", old.name, new.name, reason)
            return new
        finally:
            await old.close()
            self._others.discard(old)

    async def _connect(self, reason: str) -> Connection:
        while True:
            await self._limiter.acquire()
            name = f"ws{self.index}.{self._opened}"
            tuning = self.tuning
            try:
                ws = await connect(
                    self.url,
                    open_timeout=tuning.open_timeout_s,
                    close_timeout=tuning.close_timeout_s,
                    ping_interval=tuning.ping_interval_s or None,  # 0: no keepalive
                    ping_timeout=tuning.ping_timeout_s,
                    max_size=tuning.max_message_bytes,
                    compression=None,  # Binance does not compress; skip the negotiation
                )
            except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
                self.connect_failures += 1
                self.failures_in_row += 1
                self.last_error = connect_failure(self.url, exc)
                self._metrics.connect_failures.inc()
                if self._opened == 0 and self.failures_in_row == 1:
                    # The first attempt of all: say plainly what is wrong, and what works offline.
                    log.error("connection %s: %s; %s", name, self.last_error, OFFLINE_HINT)
                log.warning("connection %s to %s failed: %r", name, self.url[:120], exc)
                await self._sleep_backoff()
                continue
            self._opened += 1
            conn = Connection(ws, name, self._consumer, tuning, (self.index, self.sessions))
            try:
                await self._sync(conn)
                if not conn.alive:
                    raise SubscriptionError(f"{name}: closed while subscribing")
            except SubscriptionError as exc:
                self.connect_failures += 1
                self.failures_in_row += 1
                self.last_error = str(exc)
                self._metrics.connect_failures.inc()
                log.warning("connection %s: %s", name, exc)
                await conn.close()
                await self._sleep_backoff()
                continue
            self.failures_in_row, self.last_error = 0, None
            if reason != "start":
                self.reconnects += 1
                self._metrics.reconnects.labels(reason).inc()
            log.info("connection %s open (%s, %d streams)", name, reason, len(conn.streams))
            self._consumer.on_connected(self.symbols)
            return conn

    async def _sleep_backoff(self) -> None:
        delay = self.backoff.next_delay()
        self.delays.append(delay)
        await asyncio.sleep(delay)

    async def _watch(self, conn: Connection) -> str:
        """Wait until the connection ends, goes silent, is announced shut or is due to rotate."""
        tuning = self.tuning
        tick = max(0.01, min(tuning.silence_timeout_s / 4, 1.0))
        shutdown = asyncio.ensure_future(conn.shutdown_announced.wait())
        try:
            while True:
                now = time.monotonic()
                rotate_in = conn.opened_at + tuning.max_connection_age_s - now
                if rotate_in <= 0:
                    return "rotate"
                done, _ = await asyncio.wait(
                    (conn.task, shutdown),
                    timeout=min(tick, rotate_in),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if shutdown in done:
                    return "serverShutdown"
                if conn.task in done:
                    return "closed"
                silent = conn.silent_for(time.monotonic())
                if silent > tuning.silence_timeout_s:
                    log.warning("%s silent for %.1f s: reconnecting", conn.name, silent)
                    return "silent"
        finally:
            shutdown.cancel()
