"""A failed connection said in one line naming the host and the error, from real failures: a
name that never resolves, a port nobody listens on, a handshake the exchange refuses."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from binance_metrics.ingest.reach import connect_failure, host_of
from binance_metrics.kafka.broker import free_port
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.faults import Fault, Refuse

from .captures import real_trades


def failure(url: str) -> str:
    async def attempt() -> str:
        try:
            async with connect(url, open_timeout=20):
                pass
        except Exception as exc:  # noqa: BLE001 - what the shard catches, described
            return connect_failure(url, exc)
        pytest.fail(f"{url} answered")

    return asyncio.run(attempt())


def test_host_of_fills_in_the_port_from_the_scheme() -> None:
    assert host_of("wss://stream.binance.com:9443/stream?streams=a") == "stream.binance.com:9443"
    assert host_of("wss://stream.binance.com/stream") == "stream.binance.com:443"
    assert host_of("ws://127.0.0.1/stream") == "127.0.0.1:80"


def test_a_name_that_never_resolves_is_a_dns_failure() -> None:
    line = failure("wss://stream.binance.invalid:9443/stream")
    assert line.startswith("cannot reach stream.binance.invalid:9443: DNS lookup failed (gaierror ")


def test_a_port_nobody_listens_on_is_refused() -> None:
    port = free_port()
    assert failure(f"ws://127.0.0.1:{port}/stream") == (
        f"cannot reach 127.0.0.1:{port}: connection refused (nothing listens there)"
    )


def test_a_refused_handshake_names_its_status() -> None:
    trades = real_trades("BTCUSDT", 10)
    with LocalExchange(trades, [Fault(0, Refuse(1))]) as exchange:
        # The refusal is armed when the market opens, which waits for a listener: arm it first.
        exchange_url = f"{exchange.ws_url}?streams=btcusdt@trade"
        asyncio.run(_listen_briefly(exchange_url))
        line = failure(exchange_url)
    assert line == (
        f"cannot reach 127.0.0.1:{exchange.port}: the handshake was answered with HTTP 503"
    )


async def _listen_briefly(url: str) -> None:
    async with connect(url) as ws:
        await ws.recv()  # the market is open, the refusal armed
