"""A local stand-in for Binance that streams a recording in real time, for offline demos.

``binance-metrics up --exchange replay:PATH[,PATH...]`` starts it and points the ingestor at it,
so the whole pipeline runs as it would on Binance, without network access. It serves the two
things the ingestor uses:

* the combined stream, ``ws://127.0.0.1:PORT/stream?streams=btcusdt@trade/...``, sending each
  recorded ``@trade`` frame when its time comes (paced by trade time, ``speed`` times real time);
* ``GET /api/v3/historicalTrades?symbol=&fromId=&limit=`` for the trades already sent, so the
  ingestor's gap backfill works after a reconnect.

Times are moved forward by a whole number of minutes so that the recording "happens now": bars
look live on the candle page and still hold exactly the recording's trades, minute by minute.
Recordings are JSON lines of combined-stream or bare ``trade`` frames (see
:mod:`binance_metrics.recordings`). When the recording ends the stream goes quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import http
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from binance_metrics.recordings import read_recording
from binance_metrics.trades import TradeMessage

log = logging.getLogger(__name__)

MINUTE_MS = 60_000


def load_trades(paths: Sequence[Path]) -> list[TradeMessage]:
    """All raw trades of the recordings, merged into one timeline by trade time."""
    per_file = []
    for path in paths:
        trades = [
            r
            for r in read_recording(path)
            if isinstance(r, TradeMessage) and r.event_type == "trade"
        ]
        if not trades:
            raise ValueError(f"{path}: no @trade frames to replay")
        per_file.append(trades)
    return list(heapq.merge(*per_file, key=lambda trade: trade.trade_time_ms))


class LocalExchange:
    """Serve ``trades`` on 127.0.0.1 from a background thread; use as a context manager."""

    def __init__(self, trades: Sequence[TradeMessage], speed: float = 1.0) -> None:
        if not trades:
            raise ValueError("nothing to replay")
        self.symbols = sorted({trade.symbol for trade in trades})
        now_ms = time.time_ns() // 1_000_000
        # A whole number of minutes, so each trade stays in its minute's bar.
        self._shift_ms = (now_ms - trades[0].trade_time_ms) // MINUTE_MS * MINUTE_MS
        self._trades = trades
        self._speed = speed
        self._sent: dict[str, list[dict[str, Any]]] = {symbol: [] for symbol in self.symbols}
        self._clients: dict[ServerConnection, frozenset[str]] = {}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="local-exchange", daemon=True)
        self.port = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/stream"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        async with serve(self._client, "127.0.0.1", 0, process_request=self._rest) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            market = asyncio.create_task(self._market())
            await self._stop.wait()
            market.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await market

    async def _client(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        streams = parse_qs(urlsplit(ws.request.path).query).get("streams", [""])[0]
        self._clients[ws] = frozenset(streams.split("/"))
        try:
            async for _ in ws:  # SUBSCRIBE and the like are ignored; pongs flow meanwhile
                pass
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(ws, None)

    async def _market(self) -> None:
        while not self._clients:  # nothing happens before the ingestor is connected
            await asyncio.sleep(0.05)
        started = time.monotonic()
        first_ms = self._trades[0].trade_time_ms
        log.info("local exchange: replaying %d trades of %s", len(self._trades), self.symbols)
        for trade in self._trades:
            due = started + (trade.trade_time_ms - first_ms) / 1000 / self._speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            data = {
                "e": "trade",
                "E": trade.event_time_ms + self._shift_ms,
                "s": trade.symbol,
                "t": trade.trade_id,
                "p": trade.price,
                "q": trade.quantity,
                "T": trade.trade_time_ms + self._shift_ms,
                "m": trade.buyer_is_maker,
                "M": trade.best_match if trade.best_match is not None else True,
            }
            self._sent[trade.symbol].append(data)
            stream = f"{trade.symbol.lower()}@trade"
            frame = json.dumps({"stream": stream, "data": data}, separators=(",", ":"))
            for ws, streams in list(self._clients.items()):
                if stream in streams:
                    with contextlib.suppress(ConnectionClosed):
                        await ws.send(frame)
        log.info("local exchange: the recording has ended")

    async def _rest(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path != "/api/v3/historicalTrades":
            return None  # a WebSocket handshake
        query = parse_qs(url.query)
        try:
            symbol = query["symbol"][0].upper()
            from_id = int(query.get("fromId", ["0"])[0])
            limit = min(int(query.get("limit", ["500"])[0]), 1000)
        except (KeyError, ValueError):
            return conn.respond(http.HTTPStatus.BAD_REQUEST, '{"code":-1100,"msg":"bad query"}')
        rows = [
            {
                "id": d["t"],
                "price": d["p"],
                "qty": d["q"],
                "time": d["T"],
                "isBuyerMaker": d["m"],
                "isBestMatch": d["M"],
            }
            for d in self._sent.get(symbol, [])
            if d["t"] >= from_id
        ][:limit]
        response = conn.respond(http.HTTPStatus.OK, json.dumps(rows))
        response.headers["Content-Type"] = "application/json"
        return response
