"""SUBSCRIBE on a real WebSocket: the local exchange's side of the protocol and its limits, and
the ingestor's :class:`Subscriber` (paced requests, replies matched by id, errors)."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from binance_metrics.ingest.subscriptions import Subscriber, SubscriptionError, request
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.market import synthetic_market

SYMBOLS = tuple(f"S{n:04d}USDT" for n in range(1100))


def exchange(**options: object) -> LocalExchange:
    """An exchange whose market never opens (nobody subscribes its symbol): only replies."""
    return LocalExchange(synthetic_market(("QUIETUSDT",), 1), ping_interval_s=30, **options)  # type: ignore[arg-type]


async def call(ws: ClientConnection, method: str, params: list[str], request_id: int) -> object:
    await ws.send(request(method, params, request_id))
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


def test_subscribe_unsubscribe_and_list_as_binance_answers() -> None:
    async def run(url: str) -> None:
        async with connect(url) as ws:
            assert await call(ws, "SUBSCRIBE", ["a@trade", "b@trade"], 1) == {
                "result": None,
                "id": 1,
            }
            assert await call(ws, "UNSUBSCRIBE", ["a@trade"], 2) == {"result": None, "id": 2}
            assert await call(ws, "LIST_SUBSCRIPTIONS", [], 3) == {"result": ["b@trade"], "id": 3}
            reply = await call(ws, "SUBSCRIBE_ALL", [], 4)
            assert isinstance(reply, dict) and reply["code"] == 2 and reply["id"] == 4

    with exchange() as ex:
        asyncio.run(run(ex.ws_url))


def test_more_than_1024_streams_on_a_connection_are_refused() -> None:
    streams = [f"{s.lower()}@trade" for s in SYMBOLS[:1025]]

    async def run(url: str) -> None:
        async with connect(url) as ws:
            assert await call(ws, "SUBSCRIBE", streams[:1024], 1) == {"result": None, "id": 1}
            reply = await call(ws, "SUBSCRIBE", streams[1024:], 2)
            assert isinstance(reply, dict) and reply["code"] == 2
            assert await call(ws, "LIST_SUBSCRIPTIONS", [], 3) == {
                "result": sorted(streams[:1024]),
                "id": 3,
            }
        # In the URL too (names short enough that the URL itself is not too long).
        with pytest.raises(websockets.InvalidStatus, match="400"):
            async with connect(f"{url}?streams={'/'.join(str(n) for n in range(1025))}"):
                pass

    with exchange() as ex:
        asyncio.run(run(ex.ws_url))
        assert ex.log.refused_subscriptions == 1


def test_a_connection_over_the_message_rate_is_disconnected() -> None:
    async def run(url: str) -> int | None:
        async with connect(url) as ws:
            for n in range(6):  # the sixth message within a second is one too many
                await ws.send(request("LIST_SUBSCRIPTIONS", [], n))
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            return ws.close_code

    with exchange(message_rate_limit=5) as ex:
        assert asyncio.run(run(ex.ws_url)) == 1008
        assert ex.log.rate_disconnects == 1


def test_subscriber_paces_its_requests_and_raises_on_an_error_reply() -> None:
    """1024 streams in 200s: six requests, within the rate limit on the exchange's count; a
    refused request raises, naming the server's message."""

    async def run(url: str) -> Subscriber:
        async with connect(url) as ws:
            subscriber = Subscriber(
                ws.send, messages_per_s=3, streams_per_message=200, reply_timeout_s=10, name="t"
            )
            reader = asyncio.create_task(read_replies(ws, subscriber))
            await subscriber.subscribe([f"{s.lower()}@trade" for s in SYMBOLS[:1024]])
            with pytest.raises(SubscriptionError, match="too many streams"):
                await subscriber.subscribe(["extra@trade"])
            reader.cancel()
            return subscriber

    with exchange(message_rate_limit=5) as ex:
        subscriber = asyncio.run(run(ex.ws_url))
        (session,) = ex.log.sessions
    assert subscriber.sent == 7 and session.requests == 7
    # Unpaced, 7 requests would be 7 in a second (disconnected above 5). Paced to 3 per second
    # on the client's clock; on the exchange's, arrival jitter may bring more into a second,
    # within the two messages of slack below Binance's 5.
    assert session.max_messages_per_s <= 5 and ex.log.rate_disconnects == 0


async def read_replies(ws: ClientConnection, subscriber: Subscriber) -> None:
    async for message in ws:
        assert subscriber.answer(json.loads(message))


def test_subscriber_on_a_closed_connection_raises_subscription_error() -> None:
    """What the shard treats as a failed attempt (close, backoff, a new connection)."""

    async def run(url: str) -> None:
        async with connect(url) as ws:
            subscriber = Subscriber(
                ws.send, messages_per_s=3, streams_per_message=200, reply_timeout_s=10, name="t"
            )
            waiting = asyncio.create_task(subscriber.subscribe(["a@trade"]))
            for _ in range(1000):  # until the request is out (its reply is never read)
                if subscriber.sent:
                    break
                await asyncio.sleep(0.01)
            subscriber.fail("connection closed")
            with pytest.raises(SubscriptionError, match="connection closed"):
                await waiting
            await ws.close()
            with pytest.raises(SubscriptionError, match="closed during SUBSCRIBE"):
                await subscriber.subscribe(["b@trade"])

    with exchange() as ex:
        asyncio.run(run(ex.ws_url))
