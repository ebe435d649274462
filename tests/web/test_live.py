"""``/api/live``: server-sent events over a real uvicorn from the real chDB store. The first
message is the newest bars, later ones continue from it; one poller per symbol, shared by every
client, ended with the last."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars
from binance_metrics.web import LiveBars, create_live_router, create_router
from binance_metrics.web.live import TAIL
from binance_metrics.web.routes import bar_json
from tests.pipeline.support import wait_for

from .support import BTC, SCALE, fill, serve


class Events:
    """The events of one ``/api/live`` stream, read as they come."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines

    def next(self, kind: str) -> dict[str, Any]:
        """The next event named ``kind`` (others are skipped)."""
        name = None
        for line in self._lines:
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name == kind:
                data = json.loads(line.removeprefix("data: "))
                assert isinstance(data, dict)
                return data
        raise AssertionError(f"the stream ended before a {kind!r} event")


@contextmanager
def events(base: str, **params: str) -> Iterator[Events]:
    with (
        httpx.Client(timeout=httpx.Timeout(60)) as client,
        client.stream("GET", f"{base}/api/live", params=params) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Events(response.iter_lines())


def app_with(live: LiveBars, store: Store) -> FastAPI:
    app = FastAPI()
    app.include_router(create_router(lambda: store, ["BTCUSDT"]))
    app.include_router(create_live_router(live))
    return app


def test_bars_are_pushed_from_one_shared_poller(store: Store) -> None:
    fill(store, [BTC])
    live = LiveBars(lambda: store, poll_s=0.05)
    with serve(app_with(live, store)) as base:
        with (
            events(base, symbol="btcusdt", interval="1m") as minute,
            events(base, symbol="BTCUSDT", interval="15m") as quarter,
        ):
            assert minute.next("status") == {"feeds": {}, "store": None}
            snapshot = minute.next("snapshot")
            newest = fetch_bars(store, "BTCUSDT", limit=TAIL, include_open=True)
            assert snapshot == {
                "symbol": "BTCUSDT", "interval": "1m", "bars": [bar_json(b) for b in newest],
            }  # fmt: skip
            first_quarter = quarter.next("snapshot")
            assert first_quarter["bars"] == [
                bar_json(b)
                for b in fetch_bars(store, "BTCUSDT", interval="15m", limit=TAIL, include_open=True)
            ]
            assert live.watched == ["BTCUSDT"], "two intervals of one symbol: one poller"

            # A new minute: pushed to both, each message from the previous one's first bar on.
            new_minute = BTC.open_times[-1] + 60_000
            bar = Bar().add(63_000 * SCALE + 7, 2 * SCALE + 3, 9_000_000, 9_000_009, False)
            store.insert_bars([BarUpdate("BTCUSDT", new_minute, bar)])
            pushed = minute.next("bars")
            assert pushed["bars"] == [
                bar_json(b) for b in fetch_bars(store, "BTCUSDT", limit=4, include_open=True)
            ]
            assert pushed["bars"][-1]["open_time"] == new_minute
            assert pushed["bars"][-1]["close"] == "63000.00000007"
            rolled = quarter.next("bars")
            assert rolled["bars"][0] == first_quarter["bars"][0]
            assert rolled["bars"] == [
                bar_json(b)
                for b in fetch_bars(
                    store, "BTCUSDT", interval="15m", limit=TAIL + 1, include_open=True
                )
                if b.open_time_ms >= first_quarter["bars"][0]["open_time"]
            ]

            # The same minute grows: only what changed since the previous message's first bar.
            grown = Bar().add(63_100 * SCALE, 3 * SCALE, 9_000_000, 9_000_049, True)
            store.insert_bars([BarUpdate("BTCUSDT", new_minute, grown)])
            again = minute.next("bars")
            assert [b["open_time"] for b in again["bars"]] == [*BTC.open_times[-2:], new_minute]
            assert again["bars"][-1] == bar_json(
                fetch_bars(store, "BTCUSDT", limit=1, include_open=True)[0]
            )
            assert again["bars"][-1]["trade_count"] == 50
        # Both clients gone: the poller ends.
        wait_for(lambda: live.watched == [], 30, "the poller to end with its last client")


def test_an_invalid_symbol_or_interval_is_refused(store: Store) -> None:
    with serve(app_with(LiveBars(lambda: store), store)) as base:
        for params in ({"symbol": "BTC;DROP"}, {"symbol": "BTCUSDT", "interval": "1s"}, {}):
            response = httpx.get(f"{base}/api/live", params=params, timeout=30)
            assert response.status_code == 422, (params, response.text)


def test_a_shutdown_ends_the_streams(store: Store) -> None:
    fill(store, [BTC])
    live = LiveBars(lambda: store, poll_s=0.05)
    with serve(app_with(live, store)) as base, events(base, symbol="BTCUSDT") as stream:
        stream.next("snapshot")
        live.close()  # what up's server does when its shutdown begins
        with pytest.raises(AssertionError, match="the stream ended"):
            stream.next("never")
