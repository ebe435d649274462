"""A local Binance: the combined-stream WebSocket, ``/api/v3/historicalTrades`` and
``/api/v3/ticker/24hr``, on 127.0.0.1; with ``market="um"`` or ``"cm"``, a futures market.

It serves what the ingestor uses of Binance:

* ``ws://127.0.0.1:PORT/stream?streams=btcusdt@trade/ethusdt@trade`` (or ``/stream`` and
  ``SUBSCRIBE`` messages): each trade of the market
  (:mod:`binance_metrics.testing.market`) is sent, when it happens, to every connection
  subscribed to its stream; the exchange pings every connection and cuts one that does not pong
  in time, as Binance does. It answers ``SUBSCRIBE``, ``UNSUBSCRIBE`` and ``LIST_SUBSCRIPTIONS``
  as Binance does, refuses more than 1024 streams on a connection and, ``message_rate_limit``
  given, disconnects a connection that sends more messages (requests and pongs) in a second;
* ``GET /api/v3/exchangeInfo``: the market's symbols, ``TRADING`` once listed (all but
  ``unlisted`` at the start; :class:`~binance_metrics.testing.faults.Listing` and ``Delisting``
  change it during the run);
* ``GET /api/v3/historicalTrades?symbol=&fromId=&limit=``: the trades that have happened (or all
  of them, ``rest_serves_all``), at most 1000, from ``fromId`` on, as Binance returns them;
* ``GET /api/v3/ticker/24hr?symbols=["BTCUSDT",...]`` (or ``symbol=``, or neither: every
  symbol): each symbol's ``firstId``, ``lastId`` and ``count`` of the trades that have happened
  (``-1`` and 0 before the first), and ``openTime``/``closeTime``, the 24 hours up to the
  market's clock (:meth:`LocalExchange.clock_ms`), the fields the ingestor reads
  (:func:`ticker_24hr`).
* ``GET /api/v3/klines`` (and the futures paths), when given ``klines``: kline rows of a file,
  paged as Binance pages them (:mod:`binance_metrics.testing.klines`).
* ``GET /api/v3/aggTrades?symbol=&fromId=|startTime=&endTime=&limit=``: the aggregates of the
  trades that have happened (consecutive trades of one time, price and side; on futures, market
  trades only, as Binance aggregates them).

A futures market (``market="um"|"cm"``) serves the same under ``/fapi/v1`` or ``/dapi/v1``, as
Binance does: its ``historicalTrades`` refuses callers without an API key (401), its ticker
takes one ``symbol`` or none (no ``symbols=[...]``; COIN-M answers a list), its exchangeInfo
lists USDⓈ-M ``status`` or COIN-M ``contractStatus`` and ``contractSize``, and a connection takes
200 streams. The frames are the market's own (futures ``@trade`` frames carry ``X``).

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
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from binance_metrics.markets import MARKET_DEFAULTS, Market
from binance_metrics.testing.faults import (
    Action,
    Cut,
    Delisting,
    Drop,
    Fault,
    Garbage,
    Hold,
    Listing,
    Refuse,
    Shutdown,
    Silence,
)
from binance_metrics.testing.klines import (
    KLINES_PATHS,
    WEIGHT,
    KlineRow,
    kline_rows_of,
    klines_page,
)
from binance_metrics.testing.market import MarketTrade, shifted_to_now
from binance_metrics.trades import TradeMessage

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class KlinesCall:
    time: float  # monotonic
    path: str
    query: str
    status: int


@dataclass(eq=False)  # identity equality: sessions live in a set
class Session:
    """One client connection."""

    ws: ServerConnection
    streams: frozenset[str]
    silent: bool = False
    pongs: int = 0
    ping_timeouts: int = 0
    requests: int = 0  # JSON requests (SUBSCRIBE, ...) received
    message_times: deque[float] = field(default_factory=deque)  # of the last second
    max_messages_per_s: int = 0  # the most messages (requests and pongs) in any second
    rate_disconnected: bool = False


@dataclass
class ExchangeLog:
    """What the exchange saw; read it after the run (or under ``LocalExchange.lock``)."""

    handshakes: list[tuple[float, str]] = field(default_factory=list)  # (time, "ok"|"refused")
    sessions: list[Session] = field(default_factory=list)
    rest_calls: list[RestCall] = field(default_factory=list)
    klines_calls: list[KlinesCall] = field(default_factory=list)
    dropped: list[MarketTrade] = field(default_factory=list)  # happened, never sent live
    ticker_calls: list[tuple[float, tuple[str, ...]]] = field(
        default_factory=list
    )  # (time, symbols)
    shutdowns_sent: int = 0
    exchange_info_calls: int = 0
    refused_subscriptions: int = 0  # SUBSCRIBE over the streams a connection may carry
    agg_trades_calls: list[tuple[float, str, str]] = field(
        default_factory=list
    )  # (time, symbol, query)
    rate_disconnects: int = 0  # connections cut for sending too many messages


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
        unlisted: Iterable[str] = (),
        message_rate_limit: int | None = None,
        klines: Mapping[str, Sequence[KlineRow]] | None = None,
        market: Market = "spot",
        contract_sizes: Mapping[str, int] | None = None,
    ) -> None:
        """``ping_*``: the exchange's own pings (often by default, so a test sees pongs).
        ``rest_errors``: ``(status, Retry-After)`` answered to the first REST calls, in order.
        ``rest_serves_all``: REST serves trades before they happen (REST without a client).
        ``unlisted``: symbols exchangeInfo does not list as TRADING until a ``Listing``.
        ``message_rate_limit``: messages per second a connection may send (Binance: 5).
        ``klines``: symbol -> 12-column kline rows served at ``/api/v3/klines`` (no trades are
        needed then). ``market``: whose paths, limits and exchangeInfo it serves;
        ``contract_sizes`` (COIN-M): each symbol's contractSize (default: 100 for BTC, 10 for
        the others, as on Binance)."""
        if not trades and not klines:
            raise ValueError("nothing to trade")
        self.klines = klines
        self.market = MARKET_DEFAULTS[market]
        self.max_streams = self.market.max_streams_per_connection
        self.contract_sizes = dict(contract_sizes or {})
        self.trades = trades
        self.symbols = sorted({trade.symbol for trade in trades} | set(klines or ()))
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
        self.trading = set(self.symbols) - set(unlisted)  # exchangeInfo's TRADING symbols
        self.message_rate_limit = message_rate_limit
        self.log = ExchangeLog()
        self.lock = threading.Lock()
        self.done = threading.Event()  # the market has ended
        self.port = 0
        self._by_symbol: dict[str, list[MarketTrade]] = {}
        for trade in trades:
            self._by_symbol.setdefault(trade.symbol, []).append(trade)
        self._aggregates = {s: aggregates_of(t) for s, t in self._by_symbol.items()}
        self._happened: dict[str, int] = {}  # symbol -> how many of its trades have happened
        self._latest_ms = -1  # the newest trade time that has happened
        self._sessions: set[Session] = set()
        self._refuse = 0
        self._weight = (0, 0)  # (minute, REST weight used in it)
        self._closing: set[asyncio.Future[None]] = set()  # closes after a Shutdown's grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None  # the set of listeners changed
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="local-exchange", daemon=True)

    @classmethod
    def replaying(
        cls, trades: Sequence[TradeMessage], speed: float = 1.0, market: Market = "spot"
    ) -> LocalExchange:
        """The exchange of ``up --exchange replay:``: ``trades`` moved to now by whole minutes
        (never into the future, at any ``speed``),
        at ``speed`` times their pace, from the first listener on, trading on while nobody
        listens (REST fills what a reconnect missed); a ping every 20 s; the klines of those
        trades at ``/api/v3/klines``.

        At speed 1 each trade is sent at its own (shifted) time, so its latency is the real one
        (the trades of the first minute that are already due go at once). At another speed the
        recording's time runs faster or slower than the clock, so it is paced from the moment
        the market opens instead: a burst of the already-due part would be up to ``60 * speed``
        seconds of it. ``market``: the paths, limits and exchangeInfo of that market."""
        shifted = shifted_to_now(trades, speed)
        return cls(
            shifted,
            pace=RealTime(speed, on_the_clock=speed == 1),
            advance_when_idle=True,
            tail_guard=0,
            open_on_first_listener=True,
            ping_interval_s=20.0,
            ping_timeout_s=20.0,
            message_rate_limit=MARKET_DEFAULTS[market].messages_per_second,
            klines=kline_rows_of(shifted),
            market=market,
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
        path = self.market.path
        if url.path == path("historicalTrades"):
            if self.market.futures:  # an API key is needed, and this exchange knows none
                body = '{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'
                return conn.respond(http.HTTPStatus.UNAUTHORIZED, body)
            return await self._historical_trades(conn, parse_qs(url.query))
        if url.path == path("aggTrades"):
            return self._agg_trades(conn, url.query)
        if url.path in KLINES_PATHS and self.klines is not None:
            return self._klines(conn, url.path, url.query)
        if url.path == path("exchangeInfo"):
            return self._exchange_info(conn)
        if url.path == path("ticker/24hr"):
            return self._ticker(conn, parse_qs(url.query))
        if len(_url_streams(request.path)) > self.max_streams:
            return conn.respond(
                http.HTTPStatus.BAD_REQUEST, f"more than {self.max_streams} streams\n"
            )
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

    def _exchange_info(self, conn: ServerConnection) -> Response:
        """The market's symbols with their status (only the fields the ingestor reads)."""
        with self.lock:
            symbols = [self._symbol_info(s) for s in self.symbols]
            self.log.exchange_info_calls += 1
        body = {"timezone": "UTC", "serverTime": int(time.time() * 1000), "symbols": symbols}
        response = conn.respond(http.HTTPStatus.OK, json.dumps(body))
        response.headers["Content-Type"] = "application/json"
        return response

    def _symbol_info(self, symbol: str) -> dict[str, object]:
        status = "TRADING" if symbol in self.trading else "BREAK"
        if self.market.market == "spot":
            return {"symbol": symbol, "status": status}
        if self.market.market == "um":
            return {"symbol": symbol, "status": status, "contractType": "PERPETUAL"}
        size = self.contract_sizes.get(symbol, 100 if symbol.startswith("BTC") else 10)
        return {"symbol": symbol, "contractStatus": status, "contractSize": size}

    def _agg_trades(self, conn: ServerConnection, raw_query: str) -> Response:
        query = parse_qs(raw_query)
        try:
            symbol = query["symbol"][0].upper()
            limit = min(int(query.get("limit", ["500"])[0]), MAX_LIMIT)
            from_id = int(query["fromId"][0]) if "fromId" in query else None
            start = int(query["startTime"][0]) if "startTime" in query else None
            end = int(query["endTime"][0]) if "endTime" in query else None
        except (KeyError, ValueError):
            return conn.respond(http.HTTPStatus.BAD_REQUEST, '{"code":-1100,"msg":"bad query"}')
        if start is not None and end is not None and end - start >= 3_600_000:
            body = '{"code":-1127,"msg":"More than 1 hours between startTime and endTime."}'
            return conn.respond(http.HTTPStatus.BAD_REQUEST, body)
        with self.lock:
            self.log.agg_trades_calls.append((time.monotonic(), symbol, raw_query))
        happened = self._by_symbol.get(symbol, [])[: self._happened.get(symbol, 0)]
        newest = happened[-1].id if happened and not self.rest_serves_all else None
        rows = [
            row
            for row in self._aggregates.get(symbol, [])
            if (newest is None or int(row["l"]) <= newest)
            and (from_id is None or int(row["a"]) >= from_id)
            and (start is None or int(row["T"]) >= start)
            and (end is None or int(row["T"]) <= end)
        ][:limit]
        if not happened and not self.rest_serves_all:
            rows = []
        response = conn.respond(http.HTTPStatus.OK, json.dumps(rows))
        response.headers["Content-Type"] = "application/json"
        return response

    def _ticker(self, conn: ServerConnection, query: dict[str, list[str]]) -> Response:
        if self.market.futures and "symbols" in query:  # no batch form on futures
            return conn.respond(
                http.HTTPStatus.BAD_REQUEST, '{"code":-1101,"msg":"Too many parameters."}'
            )
        try:
            asked = ticker_symbols(query, self.symbols)
        except ValueError:
            return conn.respond(http.HTTPStatus.BAD_REQUEST, '{"code":-1100,"msg":"bad symbols"}')
        with self.lock:
            self.log.ticker_calls.append((time.monotonic(), asked))
        happened = {s: self._by_symbol.get(s, [])[: self._happened.get(s, 0)] for s in asked}
        rows = [
            ticker_24hr(symbol, trades, self.clock_ms(symbol))
            for symbol, trades in happened.items()
        ]
        one = "symbol" in query and self.market.market != "cm"  # COIN-M answers a list
        body = rows[0] if one else rows
        response = conn.respond(http.HTTPStatus.OK, json.dumps(body))
        response.headers["Content-Type"] = "application/json"
        return response

    def _klines(self, conn: ServerConnection, path: str, query: str) -> Response:
        if self._rest_errors:
            status, retry_after = self._rest_errors.pop(0)
            response = conn.respond(status, json.dumps({"code": -1003, "msg": "Too many"}))
            response.headers["Retry-After"] = f"{retry_after:g}"
        else:
            assert self.klines is not None
            status, body = klines_page(self.klines, parse_qs(query))
            response = conn.respond(status, json.dumps(body))
            response.headers["Content-Type"] = "application/json"
        minute = int(time.time() // 60)
        with self.lock:
            self.log.klines_calls.append(KlinesCall(time.monotonic(), path, query, status))
            self._weight = (minute, (self._weight[1] if self._weight[0] == minute else 0) + WEIGHT)
            response.headers["X-MBX-USED-WEIGHT-1M"] = str(self._weight[1])
        return response

    def _record_rest(self, symbol: str, from_id: int, limit: int, status: int) -> None:
        with self.lock:
            self.log.rest_calls.append(RestCall(time.monotonic(), symbol, from_id, limit, status))

    # -- WebSocket -------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        session = Session(ws, _url_streams(ws.request.path))
        with self.lock:
            self.log.sessions.append(session)
        self._sessions.add(session)
        self._listeners_changed()
        pinger = asyncio.create_task(self._ping(session))
        try:
            # Reading also keeps pongs flowing.
            async for message in ws:
                if self._count_message(session):
                    await ws.close(1008, "too many messages")
                    break
                await self._on_request(session, message)
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
                if self._count_message(session):
                    await session.ws.close(1008, "too many messages")
                    return
            except TimeoutError:
                session.ping_timeouts += 1
                await session.ws.close(1011, "pong timeout")
                return
            except ConnectionClosed:
                return

    def _count_message(self, session: Session) -> bool:
        """Count one incoming message; True when it puts the connection over the rate limit."""
        now, times = time.monotonic(), session.message_times
        times.append(now)
        while now - times[0] >= 1.0:
            times.popleft()
        session.max_messages_per_s = max(session.max_messages_per_s, len(times))
        limit = self.message_rate_limit
        if limit is None or len(times) <= limit:
            return False
        session.rate_disconnected = True
        with self.lock:
            self.log.rate_disconnects += 1
        log.warning("local exchange: %d messages in a second: disconnecting", len(times))
        return True

    async def _on_request(self, session: Session, message: str | bytes) -> None:
        """Answer ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` as Binance does."""
        session.requests += 1
        try:
            request = json.loads(message)
            method, params, request_id = request["method"], request.get("params", []), request["id"]
        except (ValueError, TypeError, KeyError):
            await session.ws.send('{"code":3,"msg":"Invalid JSON"}')
            return
        reply: dict[str, object] = {"result": None, "id": request_id}
        if method == "SUBSCRIBE":
            streams = session.streams | frozenset(params)
            if len(streams) > self.max_streams:
                reply = {"code": 2, "msg": "Invalid request: too many streams", "id": request_id}
                with self.lock:
                    self.log.refused_subscriptions += 1
            else:
                session.streams = streams
        elif method == "UNSUBSCRIBE":
            session.streams = session.streams - frozenset(params)
        elif method == "LIST_SUBSCRIPTIONS":
            reply = {"result": sorted(session.streams), "id": request_id}
        else:
            reply = {
                "code": 2,
                "msg": f"Invalid request: unknown variant {method}",
                "id": request_id,
            }
        with contextlib.suppress(ConnectionClosed):
            await session.ws.send(json.dumps(reply))
        self._listeners_changed()

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
        if not self.trades:  # an exchange of klines only
            self.done.set()
            return
        streams = sorted({t.stream for t in self.trades if t.symbol in self.trading})
        await self._wait_for_listeners(streams, every=not self.open_on_first_listener)
        while self.start_gate is not None and not self.start_gate.is_set():
            await asyncio.sleep(0.001)
        log.info(
            "local exchange: trading %d trades of %d symbols (%s)",
            len(self.trades),
            len(self.symbols),
            ", ".join(self.symbols[:10]) + (", ..." if len(self.symbols) > 10 else ""),
        )
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
            self._latest_ms = max(self._latest_ms, trade.trade_time)
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
            case Listing(symbol):
                with self.lock:
                    self.trading.add(symbol)
            case Delisting(symbol):
                with self.lock:
                    self.trading.discard(symbol)
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

    def clock_ms(self, symbol: str) -> int:
        """The market's time for ``symbol`` (``closeTime``), so that every trade of it up to
        this time has happened, as on Binance: the wall clock while the market plays on it,
        else the newest trade time that has happened; never at or past its next trade. Once
        the market has ended, its clock stops at its last trade: the end of a recording is not
        a quiet market (a demo's bars end with it)."""
        pace = self.pace
        on_the_clock = isinstance(pace, RealTime) and pace.on_the_clock and not self.done.is_set()
        clock = int(_now_ms()) if on_the_clock else self._latest_ms
        trades, happened = self._by_symbol.get(symbol, []), self._happened.get(symbol, 0)
        if happened < len(trades):
            clock = min(clock, trades[happened].trade_time - 1)
        return clock

    # -- for the tests ---------------------------------------------------------------------

    def wait_done(self, timeout_s: float) -> None:
        """Until the market has ended; AssertionError (with what happened) on timeout."""
        if not self.done.wait(timeout_s):
            raise AssertionError(
                f"the exchange did not trade its {len(self.trades)} trades in {timeout_s} s "
                f"({self.happened()} happened; sessions={len(self.log.sessions)}): "
                "is the client stuck?"
            )

    def subscribed(self) -> frozenset[str]:
        """The streams the open connections are subscribed to now (read on the exchange's loop)."""

        async def collect() -> frozenset[str]:
            return frozenset().union(*(s.streams for s in self._sessions))

        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(collect(), self._loop).result(10)

    def happened(self) -> int:
        """How many trades have happened so far (sent, dropped, or unseen)."""
        with self.lock:
            return sum(self._happened.values())


def aggregates_of(trades: Sequence[MarketTrade]) -> list[dict[str, Any]]:
    """``aggTrades`` rows of one symbol's trades: runs of consecutive market trades with one
    time, price and side (Binance aggregates the fills of one taker order at one price; futures
    insurance-fund and ADL trades are left out)."""
    rows: list[dict[str, Any]] = []
    last_key: tuple[object, ...] | None = None
    for trade in trades:
        data = trade.data
        if data.get("X", "MARKET") != "MARKET":
            last_key = None
            continue
        key = (trade.trade_time, data["p"], data["m"])
        if rows and key == last_key and rows[-1]["l"] == trade.id - 1:
            row = rows[-1]
            row["q"] = format(Decimal(row["q"]) + Decimal(str(data["q"])), "f")
            row["l"] = trade.id
        else:
            rows.append({"a": len(rows) + 1, "p": data["p"], "q": data["q"], "f": trade.id,
                         "l": trade.id, "T": trade.trade_time, "m": data["m"]})  # fmt: skip
        last_key = key
    return rows


def _url_streams(path: str) -> frozenset[str]:
    """The streams a connection URL names (``/stream?streams=a@trade/b@trade``), maybe none."""
    named = parse_qs(urlsplit(path).query).get("streams", [""])[0]
    return frozenset(stream for stream in named.split("/") if stream)


def ticker_symbols(query: dict[str, list[str]], every: Sequence[str]) -> tuple[str, ...]:
    """The symbols a ticker query asks for: ``symbol=X``, ``symbols=["X","Y"]`` or all."""
    if "symbol" in query:
        return (query["symbol"][0].upper(),)
    if "symbols" in query:
        names = json.loads(query["symbols"][0])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("symbols must be a JSON list of names")
        return tuple(n.upper() for n in names)
    return tuple(every)


def ticker_24hr(
    symbol: str, happened: Sequence[MarketTrade], close_time_ms: int
) -> dict[str, object]:
    """The part of a ``/api/v3/ticker/24hr`` row that tells which trades exist up to
    ``close_time_ms`` (Binance answers ``firstId``/``lastId`` -1 for a symbol without trades in
    the window; ``openTime`` is 24 hours before ``closeTime``). The trades of the last 24 hours
    are not counted apart: a replay's market is shorter."""
    window = {"openTime": close_time_ms - 86_400_000, "closeTime": close_time_ms}
    if not happened:
        return {"symbol": symbol, **window, "firstId": -1, "lastId": -1, "count": 0}
    return {
        "symbol": symbol,
        "lastPrice": str(happened[-1].data["p"]),
        **window,
        "firstId": happened[0].id,
        "lastId": happened[-1].id,
        "count": len(happened),
    }


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
