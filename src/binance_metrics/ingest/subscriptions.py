"""Live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` on one WebSocket connection, within Binance's limits.

Binance's combined stream takes subscriptions as JSON messages on the open connection::

    -> {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@trade"], "id": 1}
    <- {"result": null, "id": 1}
    <- {"code": 2, "msg": "Invalid request: ...", "id": 1}      (an error)

so the URL need not carry the stream list (600 streams in the URL make a ~9 KB URL that servers
refuse with 414). Limits: 1024 streams per connection, and 5 *incoming* messages per second per
connection, pings and pongs included; a connection over the rate is disconnected. Requests are
therefore paced to ``messages_per_s`` (at most 3, which leaves room for a pong to the server's
ping and our own keepalive ping in the same second) and carry at most ``streams_per_message``
streams each. The reader hands every ``{"result"|"code", "id"}`` reply to :meth:`Subscriber.answer`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import websockets

from binance_metrics.errors import BinanceMetricsError
from binance_metrics.ingest.backoff import AttemptLimiter

#: Binance: incoming messages per second per connection (pings, pongs, JSON requests).
BINANCE_MAX_MESSAGES_PER_S: Final = 5
#: Our requests per second: two of Binance's five stay free for a pong and a keepalive ping.
MAX_REQUESTS_PER_S: Final = BINANCE_MAX_MESSAGES_PER_S - 2


def stream_name(symbol: str) -> str:
    """``BTCUSDT`` -> ``btcusdt@trade`` (stream names are lower case)."""
    return f"{symbol.lower()}@trade"


def request(method: str, streams: Sequence[str], request_id: int) -> str:
    """The JSON text of one request."""
    return json.dumps({"method": method, "params": list(streams), "id": request_id})


class SubscriptionError(BinanceMetricsError):
    """The server refused a request, or did not answer it in time."""


class Subscriber:
    """Sends paced requests on one connection and matches the replies by id.

    ``send`` writes one text message (the connection's ``ws.send``). Requests are serialised, so
    a connection's streams change in the order the changes were asked for.
    """

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        *,
        messages_per_s: int,
        streams_per_message: int,
        reply_timeout_s: float,
        name: str,
    ) -> None:
        self._send = send
        self._pacer = AttemptLimiter(min(messages_per_s, MAX_REQUESTS_PER_S), 1.0)
        self._per_message = max(1, streams_per_message)
        self._timeout = reply_timeout_s
        self._name = name
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._lock = asyncio.Lock()
        self.sent = 0  # requests sent

    async def subscribe(self, streams: Sequence[str]) -> None:
        await self._change("SUBSCRIBE", streams)

    async def unsubscribe(self, streams: Sequence[str]) -> None:
        await self._change("UNSUBSCRIBE", streams)

    async def _change(self, method: str, streams: Sequence[str]) -> None:
        async with self._lock:
            for start in range(0, len(streams), self._per_message):
                await self._call(method, streams[start : start + self._per_message])

    async def _call(self, method: str, streams: Sequence[str]) -> None:
        await self._pacer.acquire()
        request_id = next(self._ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = reply
        try:
            await self._send(request(method, streams, request_id))
            self.sent += 1
            answer = await asyncio.wait_for(reply, self._timeout)
        except websockets.ConnectionClosed as exc:
            raise SubscriptionError(f"{self._name}: closed during {method}: {exc}") from None
        except TimeoutError:
            raise SubscriptionError(
                f"{self._name}: no reply to {method} id={request_id} ({len(streams)} streams) "
                f"within {self._timeout:g} s (INGEST__SUBSCRIBE_TIMEOUT_S)"
            ) from None
        finally:
            self._waiting.pop(request_id, None)
        if "code" in answer:
            raise SubscriptionError(
                f"{self._name}: {method} id={request_id} refused: "
                f"code {answer.get('code')}: {answer.get('msg')}"
            )

    def answer(self, reply: dict[str, Any]) -> bool:
        """Take a reply read from the connection; True if it answered one of our requests."""
        request_id = reply.get("id")
        waiting = self._waiting.get(request_id) if isinstance(request_id, int) else None
        if waiting is None or waiting.done():
            return False
        waiting.set_result(reply)
        return True

    def fail(self, why: str) -> None:
        """The connection ended: every request still waiting fails."""
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(SubscriptionError(f"{self._name}: {why}"))
