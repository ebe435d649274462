"""Bars pushed to the candle page: ``GET /api/live?symbol=&interval=``, server-sent events.

The store is polled server-side, once per symbol however many pages watch it: every ``POLL_S``
one cheap query reads the symbol's newest 1-minute bars; only when they changed is each watched
interval's tail read again (a rollup query costs several times a 1-minute one) and pushed to its
subscribers. Whatever the bars query returns is pushed, so a bar that grows, a new minute, a
correction of the last few bars and a forming bar all reach the page the same way.

Events (``data`` is JSON; bars as in ``/api/bars``)::

    event: snapshot   {"symbol", "interval", "bars": [the newest TAIL bars]}
    event: bars       {"symbol", "interval", "bars": [every bar from the previous message's
                       first bar on], "reset": true when more changed than one message holds}
    event: status     {"feeds": {SYMBOL: {"state", "reason"}}, "exchange": {...}, "store": ...}

Every ``bars`` message starts at the first bar of the message before it, so a client that
merges them by open time (replace or append) misses nothing; the ``snapshot`` is the first
message, and the page loads older bars with ``/api/bars?end=<its first open time>``. A client
that reads too slowly is disconnected (its ``EventSource`` reconnects and starts afresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, cast

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import StoredBar, fetch_bars
from binance_metrics.web.routes import (
    MAX_LIMIT,
    InvalidInput,
    bar_json,
    parse_interval,
    parse_symbol,
)

log = logging.getLogger(__name__)

#: How often the store is asked whether a watched symbol's newest bars changed.
POLL_S: Final = 0.2
#: How many of the newest bars a poll compares (and a snapshot holds).
TAIL: Final = 3
#: How often each client's feed status is read (it is in-process state, no store query).
STATUS_EVERY_S: Final = 1.0
#: A comment line this often: a client that went away is noticed when the write fails.
KEEPALIVE_S: Final = 15.0
#: Messages a client may fall behind before it is disconnected.
QUEUE_SIZE: Final = 64

#: ``() -> {"feeds": ..., "exchange": ...}``: the state of the feeds, read for every client.
Status = Callable[[], Mapping[str, Any]]

_DROPPED: Final = object()


@dataclass(eq=False)
class _Topic:
    """One (symbol, interval) and the queues of the clients watching it."""

    symbol: str
    interval: str
    queues: set[asyncio.Queue[object]] = field(default_factory=set)
    tail: list[StoredBar] | None = None  # None: not read yet

    def publish(self, message: object) -> None:
        for queue in list(self.queues):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # Too slow a client: its stream ends; its EventSource reconnects and starts
                # again from a snapshot, which is all it needs.
                self.queues.discard(queue)
                queue.get_nowait()
                queue.put_nowait(_DROPPED)


class LiveBars:
    """The shared pollers: one task per watched symbol, ended when its last client leaves."""

    def __init__(
        self, get_store: Callable[[], Store], poll_s: float = POLL_S, bar_seconds: int = 60
    ) -> None:
        self._get_store = get_store
        self._poll_s = poll_s
        #: The stored bars' length (``WINDOW_SECONDS``), and their interval: what is polled.
        self.bar_seconds = bar_seconds
        self._base = "1s" if bar_seconds == 1 else "1m"
        self._topics: dict[str, dict[str, _Topic]] = {}  # symbol -> interval -> topic
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.problem: str | None = None  # the store's, while its queries fail
        self._loop: asyncio.AbstractEventLoop | None = None  # the server's

    @contextlib.asynccontextmanager
    async def subscribe(self, symbol: str, interval: str) -> AsyncIterator[asyncio.Queue[object]]:
        topic = self._topics.setdefault(symbol, {}).setdefault(interval, _Topic(symbol, interval))
        self._loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_SIZE)
        topic.queues.add(queue)
        if topic.tail is not None:
            queue.put_nowait(("snapshot", topic.tail))
        # One poller per symbol; a new interval of a watched symbol is read at its next poll.
        task = self._tasks.get(symbol)
        if task is None or task.done():
            self._tasks[symbol] = asyncio.create_task(self._watch(symbol), name=f"live-{symbol}")
        try:
            yield queue
        finally:
            topic.queues.discard(queue)
            topics = self._topics.get(symbol, {})
            if not topic.queues and topics.get(interval) is topic:
                del topics[interval]
            if not topics:
                self._topics.pop(symbol, None)
                if (task := self._tasks.pop(symbol, None)) is not None:
                    task.cancel()

    @property
    def watched(self) -> list[str]:
        """The symbols being polled now."""
        return sorted(self._tasks)

    def close(self) -> None:
        """End every client's stream (a server shutdown waits for open responses). Safe to call
        from any thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._close_now()
        else:
            loop.call_soon_threadsafe(self._close_now)

    def _close_now(self) -> None:
        for topics in self._topics.values():
            for topic in topics.values():
                for queue in topic.queues:
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()  # room for the end, whatever was waiting
                    queue.put_nowait(_DROPPED)

    async def _watch(self, symbol: str) -> None:
        minutes: list[StoredBar] | None = None
        while symbol in self._topics:
            topics = list(self._topics.get(symbol, {}).values())
            try:
                newest = await self._query(symbol, self._base, None)
                changed = newest != minutes
                minutes = newest
                for topic in topics:
                    if changed or topic.tail is None:
                        base = topic.interval == self._base
                        await self._refresh(topic, newest if base else None)
                if self.problem is not None:
                    log.info("candle page: the bars store answers again")
                self.problem = None
            except Exception:
                if self.problem is None:
                    log.exception("candle page: live bars query failed (retrying)")
                self.problem = "the bars store is not available"
                minutes = None
            await asyncio.sleep(self._poll_s)

    async def _refresh(self, topic: _Topic, newest: list[StoredBar] | None) -> None:
        if topic.tail is None:
            rows = (
                newest
                if newest is not None
                else await self._query(topic.symbol, topic.interval, None)
            )
            topic.tail = rows[-TAIL:]
            topic.publish(("snapshot", topic.tail))
            return
        since = topic.tail[0].open_time if topic.tail else None
        rows = await self._query(topic.symbol, topic.interval, since)
        if rows == topic.tail:
            return
        topic.tail = rows[-TAIL:]
        topic.publish(("bars", rows))

    async def _query(self, symbol: str, interval: str, since: datetime | None) -> list[StoredBar]:
        """The newest TAIL bars, or (``since``) every bar from then on, up to MAX_LIMIT.
        In a thread: the query waits for the store's lock, never on the event loop."""
        store = self._get_store()
        seconds = self.bar_seconds
        # include_open: the forming bar comes last (closed=False), so the candle moves.
        if since is None:
            return await asyncio.to_thread(
                fetch_bars, store, symbol, interval=interval, limit=TAIL, include_open=True,
                bar_seconds=seconds,
            )  # fmt: skip
        return await asyncio.to_thread(
            fetch_bars, store, symbol, interval=interval, start=since, limit=MAX_LIMIT,
            include_open=True, bar_seconds=seconds,
        )  # fmt: skip


def _event(name: str, data: Mapping[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def create_live_router(live: LiveBars, status: Status | None = None) -> APIRouter:
    """``/api/live`` (the events above) and ``/api/status`` (the last ``status`` event's body)
    over ``live``'s pollers. ``status`` gives the feeds' state (``up``: the ingestor's); without
    it there are none. Call ``live.close()`` when the server shuts down."""
    router = APIRouter()

    def current_status() -> dict[str, Any]:
        body = dict(status()) if status is not None else {"feeds": {}}
        body["store"] = live.problem
        return body

    @router.get("/api/status")
    async def feed_status() -> dict[str, Any]:
        return current_status()

    @router.get("/api/live")
    async def stream(
        symbol: Annotated[str, Query(max_length=100)],
        interval: Annotated[str, Query(max_length=10)] = "1m",
    ) -> StreamingResponse:
        try:
            name, step = parse_symbol(symbol), parse_interval(interval, live.bar_seconds)
        except InvalidInput as exc:
            raise HTTPException(422, str(exc)) from None
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            _events(live, name, step, current_status), media_type="text/event-stream",
            headers=headers,
        )  # fmt: skip

    return router


async def _events(
    live: LiveBars, symbol: str, interval: str, status: Callable[[], dict[str, Any]]
) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"  # EventSource reconnects after 2 s
    sent_status: dict[str, Any] | None = None
    last_write = time.monotonic()
    async with live.subscribe(symbol, interval) as queue:
        while True:
            now_status = status()
            if now_status != sent_status:
                sent_status = now_status
                yield _event("status", now_status)
                last_write = time.monotonic()
            try:
                message = await asyncio.wait_for(queue.get(), STATUS_EVERY_S)
            except TimeoutError:
                if time.monotonic() - last_write > KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    last_write = time.monotonic()
                continue
            if message is _DROPPED:
                return
            kind, rows = cast(tuple[str, list[StoredBar]], message)
            body: dict[str, Any] = {
                "symbol": symbol,
                "interval": interval,
                "bars": [bar_json(bar) for bar in rows],
            }
            if kind == "bars" and len(rows) >= MAX_LIMIT:
                body["reset"] = True
            yield _event(kind, body)
            last_write = time.monotonic()
