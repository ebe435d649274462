"""A local fake Binance: combined-stream WebSocket + ``/api/v3/historicalTrades``, misbehaving.

It replays real ``@trade`` captures (``tests/data/*-spot-trade-stream-*.jsonl``, one raw
combined-stream frame per line) merged by event time, to every connection subscribed to the
frame's stream (``/stream?streams=btcusdt@trade/ethusdt@trade``). A *market* clock walks the
capture; a trade has "happened" once the clock passes it, and from then on REST serves it.

Faults are scripted by frame index (``Fault(at, action)``: applied just before frame ``at``):
``Cut`` (with or without a close frame), ``Drop`` (the next n trades happen but are not sent),
``Silence`` (open connections stop receiving data, they still answer pings), ``Shutdown``
(``serverShutdown`` event, cut after a grace period), ``Refuse`` (the next n handshakes get HTTP
503), ``Garbage`` (extra malformed frames), ``Hold`` (the market stops until released: restart
tests stop the client there). REST can answer 429/418 with ``Retry-After``.

The market waits while nobody listens to the next trade's stream (so a cut does not silently lose
the end of the capture)
unless ``advance_when_idle``: then trades keep happening unseen, as on Binance, except the last
``tail_guard`` ones (a gap at the very end could only be noticed by a later trade).

Everything runs on its own event loop in a background thread; use it as a context manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import http
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

DATA = Path(__file__).parent.parent / "data"
CAPTURES = {
    "BTCUSDT": DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl",
    "ETHUSDT": DATA / "ETHUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl",
}


@dataclass(frozen=True)
class CapturedTrade:
    symbol: str
    stream: str
    id: int
    event_time: int
    raw: str  # the frame exactly as recorded
    data: dict[str, object]


def load_capture(symbol: str, limit: int | None = None) -> list[CapturedTrade]:
    trades = []
    with CAPTURES[symbol].open() as lines:
        for line in lines:
            if limit is not None and len(trades) >= limit:
                break
            frame = json.loads(line)
            data = frame["data"]
            trades.append(
                CapturedTrade(symbol, frame["stream"], data["t"], data["E"], line.strip(), data)
            )
    return trades


def merge_by_event_time(*captures: list[CapturedTrade]) -> list[CapturedTrade]:
    """One timeline; each symbol keeps its own (trade-id) order."""
    return list(heapq.merge(*captures, key=lambda trade: trade.event_time))


# -- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cut:
    close_frame: bool = True


@dataclass(frozen=True)
class Drop:
    count: int


@dataclass(frozen=True)
class Silence:
    pass


@dataclass(frozen=True)
class Shutdown:
    grace_s: float = 0.3


@dataclass(frozen=True)
class Refuse:
    count: int


@dataclass(frozen=True)
class Garbage:
    frames: tuple[str | bytes, ...]


@dataclass(frozen=True)
class Hold:
    """The market stops before frame ``at`` (``reached`` is set) until ``release`` is set."""

    release: threading.Event
    reached: threading.Event = field(default_factory=threading.Event)


Action = Cut | Drop | Silence | Shutdown | Refuse | Garbage | Hold


@dataclass(frozen=True)
class Fault:
    at: int
    action: Action


@dataclass(frozen=True)
class RestCall:
    time: float
    symbol: str
    from_id: int
    limit: int
    status: int
    returned: int


@dataclass(eq=False)  # identity equality: sessions live in a set
class Session:
    ws: ServerConnection
    streams: frozenset[str]
    opened: float
    silent: bool = False
    sent: int = 0
    pongs: int = 0
    ping_timeouts: int = 0


@dataclass
class ExchangeLog:
    """What the exchange saw; read it after the run (or under ``lock``)."""

    handshakes: list[tuple[float, str]] = field(default_factory=list)  # (time, "ok"|"refused")
    sessions: list[Session] = field(default_factory=list)
    rest_calls: list[RestCall] = field(default_factory=list)
    dropped: list[CapturedTrade] = field(default_factory=list)  # happened, never sent live
    garbage_sent: int = 0
    shutdowns_sent: int = 0


class FakeExchange:
    def __init__(
        self,
        trades: list[CapturedTrade],
        faults: Iterable[Fault] = (),
        *,
        frames_per_tick: int = 50,
        tick_s: float = 0.002,
        ping_interval_s: float = 0.05,
        ping_timeout_s: float = 2.0,
        advance_when_idle: bool = False,
        tail_guard: int = 50,
        rest_errors: Iterable[tuple[int, float]] = (),
        rest_delay_s: float = 0.0,
        rest_serves_all: bool = False,
        start_gate: threading.Event | None = None,
    ) -> None:
        self.trades = trades
        self.faults: dict[int, list[Action]] = {}
        for fault in faults:
            self.faults.setdefault(fault.at, []).append(fault.action)
        self.frames_per_tick = frames_per_tick
        self.tick_s = tick_s
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.advance_when_idle = advance_when_idle
        self.tail_guard = tail_guard
        #: (status, Retry-After) answered to the first REST calls, in order.
        self._rest_errors = list(rest_errors)
        self.rest_delay_s = rest_delay_s
        #: Serve trades over REST before they "happen" (for REST tests without a WS client).
        self.rest_serves_all = rest_serves_all
        #: When given, the market also waits for this event (benchmarks: start when warmed up).
        self.start_gate = start_gate
        self.log = ExchangeLog()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.port = 0
        self._by_symbol: dict[str, list[CapturedTrade]] = {}
        for trade in trades:
            self._by_symbol.setdefault(trade.symbol, []).append(trade)
        self._happened: dict[str, int] = {}  # symbol -> how many of its trades have happened
        self._sessions: set[Session] = set()
        self._refuse = 0
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._market: asyncio.Task[None] | None = None
        self._stopped = threading.Event()
        self._ready = threading.Event()

    # -- addresses ------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> FakeExchange:
        self._thread = threading.Thread(target=self._run, name="fake-exchange", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake exchange did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._changed = asyncio.Event()
        async with serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            ping_interval=None,  # we ping ourselves, to count the pongs
            compression=None,
        ) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._market = asyncio.create_task(self._run_market())
            self._ready.set()
            while not self._stopped.is_set():
                await asyncio.sleep(0.02)
            self._market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._market
            for session in list(self._sessions):
                session.ws.transport.abort()

    # -- HTTP: handshake refusals and REST -------------------------------------------------

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/api/v3/historicalTrades":
            return await self._historical_trades(conn, parse_qs(url.query))
        with self.lock:
            if self._refuse > 0:
                self._refuse -= 1
                self.log.handshakes.append((time.monotonic(), "refused"))
                return conn.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "try later\n")
            self.log.handshakes.append((time.monotonic(), "ok"))
        return None

    async def _historical_trades(
        self, conn: ServerConnection, query: dict[str, list[str]]
    ) -> Response:
        if self.rest_delay_s:
            await asyncio.sleep(self.rest_delay_s)
        symbol = query["symbol"][0]
        from_id = int(query["fromId"][0])
        limit = min(int(query.get("limit", ["500"])[0]), 1000)
        if self._rest_errors:
            status, retry_after = self._rest_errors.pop(0)
            response = conn.respond(status, json.dumps({"code": -1003, "msg": "Too many"}))
            response.headers["Retry-After"] = f"{retry_after:g}"
            self._record_rest(symbol, from_id, limit, status, 0)
            return response
        happened = self._by_symbol.get(symbol, [])
        if not self.rest_serves_all:
            happened = happened[: self._happened.get(symbol, 0)]
        rows = [_historical(t) for t in happened if t.id >= from_id][:limit]
        response = conn.respond(http.HTTPStatus.OK, json.dumps(rows))
        response.headers["Content-Type"] = "application/json"
        self._record_rest(symbol, from_id, limit, 200, len(rows))
        return response

    def _record_rest(self, symbol: str, from_id: int, limit: int, status: int, n: int) -> None:
        with self.lock:
            self.log.rest_calls.append(
                RestCall(time.monotonic(), symbol, from_id, limit, status, n)
            )

    # -- WebSocket -------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        streams = frozenset(query.get("streams", [""])[0].split("/"))
        session = Session(ws, streams, time.monotonic())
        with self.lock:
            self.log.sessions.append(session)
        self._sessions.add(session)
        self._update_listening()
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
            self._update_listening()

    async def _ping(self, session: Session) -> None:
        """Binance pings and cuts clients that do not pong in time; so do we."""
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

    def _update_listening(self) -> None:
        self._changed.set()

    def _has_listener(self, stream: str) -> bool:
        return any(not s.silent and stream in s.streams for s in self._sessions)

    async def _wait_for_listener(self, stream: str) -> None:
        while not self._has_listener(stream):
            self._changed.clear()
            await self._changed.wait()

    # -- the market ----------------------------------------------------------------------

    async def _run_market(self) -> None:
        for stream in {t.stream for t in self.trades}:
            await self._wait_for_listener(stream)  # nothing happens before the clients are in
        while self.start_gate is not None and not self.start_gate.is_set():
            await asyncio.sleep(0.001)
        drop = 0
        total = len(self.trades)
        for index, trade in enumerate(self.trades):
            for action in self.faults.get(index, ()):
                drop += await self._apply(action)
            if not self._has_listener(trade.stream) and not (
                self.advance_when_idle and index < total - self.tail_guard
            ):
                await self._wait_for_listener(trade.stream)
            self._happened[trade.symbol] = self._happened.get(trade.symbol, 0) + 1
            if drop:
                drop -= 1
                with self.lock:
                    self.log.dropped.append(trade)
            else:
                await self._send(trade.stream, trade.raw)
            if index % self.frames_per_tick == self.frames_per_tick - 1:
                await asyncio.sleep(self.tick_s)
        self.done.set()

    async def _send(self, stream: str, raw: str | bytes) -> None:
        for session in list(self._sessions):
            if session.silent or stream not in session.streams:
                continue
            try:
                await session.ws.send(raw)
                session.sent += 1
            except ConnectionClosed:
                self._sessions.discard(session)
                self._update_listening()

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
                self._update_listening()
            case Silence():
                for session in sessions:
                    session.silent = True
                self._update_listening()
            case Shutdown(grace_s):
                event = json.dumps({"e": "serverShutdown", "E": int(time.time() * 1000)})
                for session in sessions:
                    with contextlib.suppress(ConnectionClosed):
                        await session.ws.send(event)
                    asyncio.get_running_loop().call_later(
                        grace_s, lambda ws=session.ws: asyncio.ensure_future(ws.close(1001))
                    )
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
                with self.lock:
                    self.log.garbage_sent += len(frames)
        return 0

    # -- helpers for tests ---------------------------------------------------------------

    def wait_done(self, timeout_s: float) -> None:
        if not self.done.wait(timeout_s):
            with self.lock:
                happened = sum(self._happened.values())
            raise AssertionError(
                f"exchange did not replay its {len(self.trades)} trades in {timeout_s} s "
                f"({happened} happened; sessions={len(self.log.sessions)}): is the client stuck?"
            )

    def happened(self) -> int:
        """How many trades have happened so far (sent, dropped, or unseen)."""
        with self.lock:
            return sum(self._happened.values())

    def sessions(self) -> Iterator[Session]:
        with self.lock:
            return iter(list(self.log.sessions))


def _historical(trade: CapturedTrade) -> dict[str, object]:
    """A captured trade as ``/api/v3/historicalTrades`` returns it."""
    data = trade.data
    price, qty = str(data["p"]), str(data["q"])
    return {
        "id": trade.id,
        "price": price,
        "qty": qty,
        "quoteQty": f"{Decimal(price) * Decimal(qty):.8f}",
        "time": data["T"],
        "isBuyerMaker": data["m"],
        "isBestMatch": data.get("M", True),
    }


def _as_binance_sends(raw: str | bytes) -> str | bytes:
    """Text frames, as Binance sends; bytes that are not UTF-8 can only go as a binary frame."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw
