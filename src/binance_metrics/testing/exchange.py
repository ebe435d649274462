"""A local Binance: the combined-stream WebSocket and ``/api/v3/historicalTrades``, on 127.0.0.1.

It serves what the ingestor uses of Binance:

* ``ws://127.0.0.1:PORT/stream?streams=btcusdt@trade/ethusdt@trade``: each trade of the market
  (:mod:`binance_metrics.testing.market`) is sent, when it happens, to every connection
  subscribed to its stream; the exchange pings every connection and cuts one that does not pong
  in time, as Binance does, and ignores what clients send (``SUBSCRIBE`` and the like);
* ``GET /api/v3/historicalTrades?symbol=&fromId=&limit=``: the trades that have happened (or all
  of them, ``rest_serves_all``), at most 1000, from ``fromId`` on, as Binance returns them.

A *market* walks the trades in order; a trade has happened once the market passed it, whether it
was sent or not. The market opens when every stream has a listener (or, ``open_on_first_listener``,
when one has) and, ``start_gate`` given, when that is set. Then it paces itself (:class:`Bursts`:
``frames`` trades, then ``pause_s``; :class:`RealTime`: by trade time, ``speed`` times faster)
and, before each trade, waits while nobody listens to its stream, so a cut does not silently lose
the end of the market, unless ``advance_when_idle``: then trades go on happening unseen, as on
Binance, except the last ``tail_guard`` ones (a gap at the very end could only be noticed by a
later trade). When the market ends, the streams go quiet.

Faults (:mod:`binance_metrics.testing.faults`) are scripted by trade index; REST can answer
``rest_errors`` (429/418 with ``Retry-After``, or any status) to its first calls. What happened is
in :attr:`LocalExchange.log`.

Uses: ``binance-metrics up --exchange replay:PATH`` (:meth:`LocalExchange.replaying`), the
ingestor's tests and ``benchmarks/ingest_bench.py``. It runs on its own event loop in a background
thread: use it as a context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from binance_metrics.testing.faults import (
    Action,
    Cut,
    Drop,
    Fault,
    Garbage,
    Hold,
    Refuse,
    Shutdown,
    Silence,
)
from binance_metrics.testing.market import MarketTrade, shifted_to_now
from binance_metrics.trades import TradeMessage

log = logging.getLogger(__name__)

HISTORICAL_TRADES = "/api/v3/historicalTrades"
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Bursts:
    """``frames`` trades as fast as the connections take them, then a pause of ``pause_s``."""

    frames: int = 50
    pause_s: float = 0.002


@dataclass(frozen=True)
class RealTime:
    """Trades at the pace of their trade times, ``speed`` times faster.

    ``on_the_clock``: the frames' event times say when, on the wall clock (they are "now", e.g.
    moved by :func:`~binance_metrics.testing.market.shifted_to_now`), not only how far apart: a
    frame is sent at its own event time at speed 1; faster, at the time that makes the last one
    due at its own (slower: the first), so that none is sent before it happened. Frames already
    due when the market opens go at once.
    """

    speed: float = 1.0
    on_the_clock: bool = False

    def due_ms(self, event_time: int, first_ms: int, last_ms: int) -> float:
        """When (epoch ms) a frame of ``event_time`` is due, ``on_the_clock``."""
        anchor = last_ms if self.speed >= 1 else first_ms
        return anchor - (anchor - event_time) / self.speed


Pace = Bursts | RealTime


@dataclass(frozen=True)
class RestCall:
    time: float  # monotonic
    symbol: str
    from_id: int
    limit: int
    status: int


@dataclass(eq=False)  # identity equality: sessions live in a set
class Session:
    """One client connection."""

    ws: ServerConnection
    streams: frozenset[str]
    silent: bool = False
    pongs: int = 0
    ping_timeouts: int = 0


@dataclass
class ExchangeLog:
    """What the exchange saw; read it after the run (or under ``LocalExchange.lock``)."""

    handshakes: list[tuple[float, str]] = field(default_factory=list)  # (time, "ok"|"refused")
    sessions: list[Session] = field(default_factory=list)
    rest_calls: list[RestCall] = field(default_factory=list)
    dropped: list[MarketTrade] = field(default_factory=list)  # happened, never sent live
    shutdowns_sent: int = 0


class LocalExchange:
    """Serves ``trades`` (one timeline, see the module docstring) on 127.0.0.1."""

    def __init__(
        self,
        trades: Sequence[MarketTrade],
        faults: Iterable[Fault] = (),
        *,
        pace: Pace = Bursts(),
        advance_when_idle: bool = False,
        tail_guard: int = 50,
        open_on_first_listener: bool = False,
        ping_interval_s: float = 0.05,
        ping_timeout_s: float = 2.0,
        rest_errors: Iterable[tuple[int, float]] = (),
        rest_serves_all: bool = False,
        start_gate: threading.Event | None = None,
    ) -> None:
        """``ping_*``: the exchange's own pings (often by default, so a test sees pongs).
        ``rest_errors``: ``(status, Retry-After)`` answered to the first REST calls, in order.
        ``rest_serves_all``: REST serves trades before they happen (REST without a client)."""
        if not trades:
            raise ValueError("nothing to trade")
        self.trades = trades
        self.symbols = sorted({trade.symbol for trade in trades})
        self.faults: dict[int, list[Action]] = {}
        for fault in faults:
            self.faults.setdefault(fault.at, []).append(fault.action)
        self.pace = pace
        self.advance_when_idle = advance_when_idle
        self.tail_guard = tail_guard
        self.open_on_first_listener = open_on_first_listener
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self._rest_errors = list(rest_errors)
        self.rest_serves_all = rest_serves_all
        self.start_gate = start_gate
        self.log = ExchangeLog()
        self.lock = threading.Lock()
        self.done = threading.Event()  # the market has ended
        self.port = 0
        self._by_symbol: dict[str, list[MarketTrade]] = {}
        for trade in trades:
            self._by_symbol.setdefault(trade.symbol, []).append(trade)
        self._happened: dict[str, int] = {}  # symbol -> how many of its trades have happened
        self._sessions: set[Session] = set()
        self._refuse = 0
        self._closing: set[asyncio.Future[None]] = set()  # closes after a Shutdown's grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None  # the set of listeners changed
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-exchange", daemon=True)

    @classmethod
    def replaying(cls, trades: Sequence[TradeMessage], speed: float = 1.0) -> LocalExchange:
        """The exchange of ``up --exchange replay:``: ``trades`` moved to now by whole minutes
        (never into the future, at any ``speed``),
        at ``speed`` times their pace, from the first listener on, trading on while nobody
        listens (REST fills what a reconnect missed); a ping every 20 s.

        At speed 1 each trade is sent at its own (shifted) time, so its latency is the real one
        (the trades of the first minute that are already due go at once). At another speed the
        recording's time runs faster or slower than the clock, so it is paced from the moment
        the market opens instead: a burst of the already-due part would be up to ``60 * speed``
        seconds of it."""
        return cls(
            shifted_to_now(trades, speed),
            pace=RealTime(speed, on_the_clock=speed == 1),
            advance_when_idle=True,
            tail_guard=0,
            open_on_first_listener=True,
            ping_interval_s=20.0,
            ping_timeout_s=20.0,
        )

    # -- addresses ------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> LocalExchange:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the local exchange did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            ping_interval=None,  # the exchange pings itself, to count the pongs
            compression=None,
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            market = asyncio.create_task(self._run_market())
            self._ready.set()
            await self._stop.wait()
            market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await market
            for session in list(self._sessions):
                session.ws.transport.abort()

    # -- HTTP: handshake refusals and REST -------------------------------------------------

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == HISTORICAL_TRADES:
            return await self._historical_trades(conn, parse_qs(url.query))
        with self.lock:
            if self._refuse > 0:
                self._refuse -= 1
                self.log.handshakes.append((time.monotonic(), "refused"))
                return conn.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "try later\n")
            self.log.handshakes.append((time.monotonic(), "ok"))
        return None  # go on with the WebSocket handshake

    async def _historical_trades(
        self, conn: ServerConnection, query: dict[str, list[str]]
    ) -> Response:
        try:
            symbol = query["symbol"][0].upper()
            from_id = int(query.get("fromId", ["0"])[0])
            limit = min(int(query.get("limit", ["500"])[0]), MAX_LIMIT)
        except (KeyError, ValueError):
            return conn.respond(http.HTTPStatus.BAD_REQUEST, '{"code":-1100,"msg":"bad query"}')
        if self._rest_errors:
            status, retry_after = self._rest_errors.pop(0)
            response = conn.respond(status, json.dumps({"code": -1003, "msg": "Too many"}))
            response.headers["Retry-After"] = f"{retry_after:g}"
            self._record_rest(symbol, from_id, limit, status)
            return response
        happened = self._by_symbol.get(symbol, [])
        if not self.rest_serves_all:
            happened = happened[: self._happened.get(symbol, 0)]
        rows = [t.historical() for t in happened if t.id >= from_id][:limit]
        response = conn.respond(http.HTTPStatus.OK, json.dumps(rows))
        response.headers["Content-Type"] = "application/json"
        self._record_rest(symbol, from_id, limit, 200)
        return response

    def _record_rest(self, symbol: str, from_id: int, limit: int, status: int) -> None:
        with self.lock:
            self.log.rest_calls.append(RestCall(time.monotonic(), symbol, from_id, limit, status))

    # -- WebSocket -------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        streams = frozenset(query.get("streams", [""])[0].split("/"))
        session = Session(ws, streams)
        with self.lock:
            self.log.sessions.append(session)
        self._sessions.add(session)
        self._listeners_changed()
        pinger = asyncio.create_task(self._ping(session))
        try:
            # Read (and ignore) whatever the client sends; this also keeps pongs flowing.
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        finally:
            pinger.cancel()
            self._sessions.discard(session)
            self._listeners_changed()

    async def _ping(self, session: Session) -> None:
        """Binance pings and cuts clients that do not pong in time; so does this exchange."""
        while True:
            await asyncio.sleep(self.ping_interval_s)
            try:
                waiter = await session.ws.ping()
                await asyncio.wait_for(waiter, self.ping_timeout_s)
                session.pongs += 1
            except TimeoutError:
                session.ping_timeouts += 1
                await session.ws.close(1011, "pong timeout")
                return
            except ConnectionClosed:
                return

    def _listeners_changed(self) -> None:
        assert self._changed is not None
        self._changed.set()

    def _has_listener(self, stream: str) -> bool:
        return any(not s.silent and stream in s.streams for s in self._sessions)

    async def _wait_for_listeners(self, streams: Sequence[str], every: bool = True) -> None:
        """Until every one (or, not ``every``, one) of ``streams`` has a listener."""
        check = all if every else any
        assert self._changed is not None
        while not check(self._has_listener(stream) for stream in streams):
            self._changed.clear()
            await self._changed.wait()

    # -- the market ----------------------------------------------------------------------

    async def _run_market(self) -> None:
        streams = sorted({t.stream for t in self.trades})
        await self._wait_for_listeners(streams, every=not self.open_on_first_listener)
        while self.start_gate is not None and not self.start_gate.is_set():
            await asyncio.sleep(0.001)
        log.info("local exchange: trading %d trades of %s", len(self.trades), self.symbols)
        pace = self.pace
        opened, first_ms = time.monotonic(), self.trades[0].trade_time
        first_event = min(trade.event_time for trade in self.trades)
        last_event = max(trade.event_time for trade in self.trades)
        drop = 0
        total = len(self.trades)
        for index, trade in enumerate(self.trades):
            if isinstance(pace, RealTime):
                if pace.on_the_clock:
                    due = pace.due_ms(trade.event_time, first_event, last_event)
                    delay = (due - _now_ms()) / 1000
                else:
                    delay = opened + (trade.trade_time - first_ms) / 1000 / pace.speed
                    delay -= time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            for action in self.faults.get(index, ()):
                drop += await self._apply(action)
            if not self._has_listener(trade.stream) and not (
                self.advance_when_idle and index < total - self.tail_guard
            ):
                await self._wait_for_listeners([trade.stream])
            self._happened[trade.symbol] = self._happened.get(trade.symbol, 0) + 1
            if drop:
                drop -= 1
                with self.lock:
                    self.log.dropped.append(trade)
            else:
                await self._send(trade.stream, trade.raw)
            if isinstance(pace, Bursts) and index % pace.frames == pace.frames - 1:
                await asyncio.sleep(pace.pause_s)
        log.info("local exchange: the market has ended")
        self.done.set()

    async def _send(self, stream: str, raw: str | bytes) -> None:
        for session in list(self._sessions):
            if session.silent or stream not in session.streams:
                continue
            try:
                await session.ws.send(raw)
            except ConnectionClosed:
                self._sessions.discard(session)
                self._listeners_changed()

    async def _apply(self, action: Action) -> int:
        """Apply one fault; return how many of the next trades to drop."""
        sessions = [s for s in self._sessions if not s.silent]
        match action:
            case Drop(count):
                return count
            case Cut(close_frame):
                for session in sessions:
                    self._sessions.discard(session)
                    if close_frame:
                        await session.ws.close(1001, "cut")
                    else:
                        session.ws.transport.abort()  # TCP gone, no close frame
                self._listeners_changed()
            case Silence():
                for session in sessions:
                    session.silent = True
                self._listeners_changed()
            case Shutdown(grace_s):
                event = json.dumps({"e": "serverShutdown", "E": int(time.time() * 1000)})
                for session in sessions:
                    with contextlib.suppress(ConnectionClosed):
                        await session.ws.send(event)
                    asyncio.get_running_loop().call_later(grace_s, self._close_later, session.ws)
                with self.lock:
                    self.log.shutdowns_sent += len(sessions)
            case Refuse(count):
                with self.lock:
                    self._refuse += count
            case Hold(release, reached):
                reached.set()
                while not release.is_set():
                    await asyncio.sleep(0.005)
            case Garbage(frames):
                for raw in frames:
                    for session in sessions:
                        with contextlib.suppress(ConnectionClosed):
                            await session.ws.send(_as_binance_sends(raw))
        return 0

    def _close_later(self, ws: ServerConnection) -> None:
        task = asyncio.ensure_future(ws.close(1001))
        self._closing.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(self._closing.discard)

    # -- for the tests ---------------------------------------------------------------------

    def wait_done(self, timeout_s: float) -> None:
        """Until the market has ended; AssertionError (with what happened) on timeout."""
        if not self.done.wait(timeout_s):
            raise AssertionError(
                f"the exchange did not trade its {len(self.trades)} trades in {timeout_s} s "
                f"({self.happened()} happened; sessions={len(self.log.sessions)}): "
                "is the client stuck?"
            )

    def happened(self) -> int:
        """How many trades have happened so far (sent, dropped, or unseen)."""
        with self.lock:
            return sum(self._happened.values())


def _now_ms() -> float:
    return time.time() * 1000


def _as_binance_sends(raw: str | bytes) -> str | bytes:
    """Text frames, as Binance sends; bytes that are not UTF-8 can only go as a binary frame."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
