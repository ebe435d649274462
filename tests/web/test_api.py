"""The candle page's HTTP API against a real chDB store: exact values, validation, hostile input."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from binance_metrics.intervals import INTERVALS
from binance_metrics.store.clickhouse import Store
from binance_metrics.web import create_router
from binance_metrics.web.routes import MAX_LIMIT, choose_default, plotly_js_path

from .support import BTC, ETH, MINUTE_MS, SERIES, bar_count, fill, make_app

REPO = Path(__file__).resolve().parents[2]
TOTAL = sum(len(s.bars) for s in SERIES)


@pytest.fixture(scope="module")
def filled(store: Store) -> Store:
    fill(store)
    assert bar_count(store) == TOTAL
    return store


@pytest.fixture(scope="module")
def client(filled: Store) -> Iterator[TestClient]:
    with TestClient(make_app(filled, ["SOLUSDT", "ETHUSDT"])) as test_client:
        yield test_client


def bars_of(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/bars", params=params)
    assert response.status_code == 200, response.text
    bars: list[dict[str, Any]] = response.json()["bars"]
    return bars


def test_symbols_lists_configured_then_stored_and_opens_on_one_with_bars(
    client: TestClient,
) -> None:
    body = client.get("/api/symbols").json()
    assert body == {
        "market": "spot",  # MARKET's default
        "symbols": ["SOLUSDT", "ETHUSDT", "BTCUSDT"],
        "with_bars": ["BTCUSDT", "ETHUSDT"],
        "default": "ETHUSDT",  # SOLUSDT comes first but has no bars
        "intervals": [name for name in INTERVALS if name != "1s"],  # 1-minute bars stored
    }


def test_default_symbol_rule() -> None:
    assert choose_default(["BTCUSDT", "ETHUSDT"], ["XRPUSDT", "ETHUSDT"]) == "ETHUSDT"
    # A store filled by replay with symbols that are not configured: still candles at once.
    assert choose_default(["ADAUSDT"], ["XRPUSDT"]) == "ADAUSDT"
    assert choose_default([], ["XRPUSDT", "BTCUSDT"]) == "XRPUSDT"
    assert choose_default([], []) is None


def test_bars_are_exact_strings_with_epoch_ms_and_include_zero_trade_bars(
    client: TestClient,
) -> None:
    got = bars_of(client, symbol="btcusdt", limit=MAX_LIMIT)  # lower case is accepted
    assert [b["open_time"] for b in got] == BTC.open_times
    zero = 0
    for row, bar in zip(got, BTC.bars, strict=True):
        expected = bar.decimals()
        for column in (
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "taker_buy_volume",
            "taker_buy_quote_volume",
        ):
            text = row[column]
            assert isinstance(text, str) and "E" not in text and "e" not in text, (column, text)
            assert Decimal(text) == expected[column], (column, row["open_time"])
        assert row["trade_count"] == expected["trade_count"]
        if bar.trade_count == 0:
            zero += 1
            assert row["open"] == row["high"] == row["low"] == row["close"]
            assert Decimal(row["volume"]) == 0
            assert row["volume"] == "0.00000000"  # fixed point, not "0E-8"
    assert zero == len(BTC.bars) // 7 > 0
    # A filler repeats the previous close.
    first_filler = next(i for i, b in enumerate(BTC.bars) if b.trade_count == 0)
    assert got[first_filler]["open"] == got[first_filler - 1]["close"]


def test_limit_gives_the_most_recent_bars_oldest_first(client: TestClient) -> None:
    got = bars_of(client, symbol="ETHUSDT", limit=10)
    assert [b["open_time"] for b in got] == ETH.open_times[-10:]
    assert len(bars_of(client, symbol="ETHUSDT")) == len(ETH.bars)  # default limit 500 > 200


def test_time_range_as_epoch_ms_and_iso(client: TestClient) -> None:
    start_ms, end_ms = BTC.open_times[10], BTC.open_times[20]
    by_ms = bars_of(client, symbol="BTCUSDT", start=str(start_ms), end=str(end_ms))
    assert [b["open_time"] for b in by_ms] == BTC.open_times[10:20]
    by_iso = bars_of(
        client, symbol="BTCUSDT", start="2024-08-08T20:10:00Z", end="2024-08-08T22:20:00+02:00"
    )
    assert by_iso == by_ms
    naive = bars_of(client, symbol="BTCUSDT", start="2024-08-08T20:10:00", end="2024-08-08T20:20")
    assert naive == by_ms  # a time without offset is UTC
    after_end = bars_of(client, symbol="BTCUSDT", start=str(BTC.open_times[-1] + MINUTE_MS))
    assert after_end == []


@pytest.mark.parametrize(
    ("interval", "btc", "eth"),
    [("1m", 300, 200), ("5m", 60, 40), ("15m", 20, 14), ("1h", 5, 4), ("4h", 2, 2), ("1d", 2, 1)],
)
def test_intervals_roll_up(client: TestClient, interval: str, btc: int, eth: int) -> None:
    assert len(bars_of(client, symbol="BTCUSDT", interval=interval)) == btc
    assert len(bars_of(client, symbol="ETHUSDT", interval=interval)) == eth


def test_time_zone_moves_the_day_as_binances_timeZone(client: TestClient) -> None:
    utc = bars_of(client, symbol="BTCUSDT", interval="1d")
    shifted = bars_of(client, symbol="BTCUSDT", interval="1d", timeZone="+05:45")
    assert all(bar["open_time"] % 86_400_000 == 0 for bar in utc)
    assert all((bar["open_time"] + 345 * 60_000) % 86_400_000 == 0 for bar in shifted)
    assert sum(b["trade_count"] for b in shifted) == sum(b["trade_count"] for b in utc)


def test_hourly_bar_is_exact(client: TestClient) -> None:
    hour = bars_of(client, symbol="BTCUSDT", interval="1h", limit=1)[0]
    minutes = BTC.bars[-60:]
    assert hour["open_time"] == BTC.open_times[-60]
    assert Decimal(hour["volume"]) == sum(Decimal(b.decimals()["volume"]) for b in minutes)
    assert hour["trade_count"] == sum(b.trade_count for b in minutes)
    assert Decimal(hour["close"]) == minutes[-1].decimals()["close"]


def test_unknown_symbol_is_empty_not_an_error(client: TestClient) -> None:
    assert bars_of(client, symbol="NOSUCHSYMBOL") == []


INJECTIONS = [
    "BTCUSDT' OR '1'='1",
    "BTCUSDT'; DROP TABLE binance.ohlcv; --",
    "BTCUSDT\\' OR 1=1 --",
    "'); TRUNCATE TABLE binance.ohlcv; --",
    "BTCUSDT} OR 1=1 {",
    "{symbol:String}",
    "BTCUSDT UNION SELECT * FROM system.users",
]


@pytest.mark.parametrize(
    "params",
    [
        *({"symbol": s} for s in INJECTIONS),
        {"symbol": "BTCUSDT\n"},  # "$" in a regex would match before a trailing newline
        {"symbol": "BTCUSDT\u0131"},  # dotless i: upper-cases to ASCII "I"
        {"symbol": "\uff22\uff34\uff23"},  # full-width letters
        {"symbol": "BTC€"},
        {"symbol": "B"},
        {"symbol": "A" * 31},
        {"symbol": "A" * 10_000},
        {"symbol": ""},
        {"symbol": "BTC-USDT"},
        {"symbol": "BTCUSDT\x00"},
        {},  # symbol is required
        {"symbol": "BTCUSDT", "interval": "1s"},  # the store holds 1-minute bars
        {"symbol": "BTCUSDT", "interval": "1mo"},  # data.binance.vision's name; REST says 1M
        {"symbol": "BTCUSDT", "interval": "2m"},
        {"symbol": "BTCUSDT", "timeZone": "+14:30"},
        {"symbol": "BTCUSDT", "timeZone": "Asia/Kathmandu"},
        {"symbol": "BTCUSDT", "timeZone": "8' OR 1=1"},
        {"symbol": "BTCUSDT", "interval": "1m' OR 1=1 --"},
        {"symbol": "BTCUSDT", "interval": "1m", "limit": "0"},
        {"symbol": "BTCUSDT", "limit": "-1"},
        {"symbol": "BTCUSDT", "limit": str(MAX_LIMIT + 1)},
        {"symbol": "BTCUSDT", "limit": "1" + "0" * 40},
        {"symbol": "BTCUSDT", "limit": "1e3"},
        {"symbol": "BTCUSDT", "limit": "10; DROP TABLE binance.ohlcv"},
        {"symbol": "BTCUSDT", "start": "-1"},
        {"symbol": "BTCUSDT", "start": "-86400000"},
        {"symbol": "BTCUSDT", "start": "1e12"},
        {"symbol": "BTCUSDT", "start": "NaN"},
        {"symbol": "BTCUSDT", "start": "inf"},
        {"symbol": "BTCUSDT", "start": "9" * 16},
        {"symbol": "BTCUSDT", "start": "9" * 400},
        {"symbol": "BTCUSDT", "start": "١٧٢٣١٦١٦٠٠٠٠٠"},  # Arabic-Indic digits
        {"symbol": "BTCUSDT", "start": "2024-13-01"},
        {"symbol": "BTCUSDT", "start": "2024-08-08T20:00:00Z' OR 1=1 --"},
        {"symbol": "BTCUSDT", "start": "0001-01-01T00:00:00"},
        {"symbol": "BTCUSDT", "end": "9999-12-31T00:00:00Z"},
        {"symbol": "BTCUSDT", "start": "2024-08-09", "end": "2024-08-08"},
        {"symbol": "BTCUSDT", "start": "2024-08-09", "end": "2024-08-09"},
    ],
)
def test_hostile_input_is_refused_and_the_table_stays(
    client: TestClient, filled: Store, params: dict[str, str]
) -> None:
    response = client.get("/api/bars", params=params)
    assert response.status_code == 422, (params, response.status_code, response.text)
    assert "detail" in response.json()
    assert bar_count(filled) == TOTAL


def test_table_intact_after_all_hostile_requests(client: TestClient, filled: Store) -> None:
    tables = {row[0] for row in filled.query("SHOW TABLES FROM binance")}
    assert {"ohlcv", "ohlcv_rollup"} <= tables
    assert bar_count(filled) == TOTAL
    assert len(bars_of(client, symbol="BTCUSDT")) == len(BTC.bars)


def test_page_is_html_with_a_strict_content_security_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert 'src="static/plotly.min.js"' in response.text
    assert 'id="symbol"' in response.text and 'id="interval"' in response.text


def test_plotly_is_served_from_the_installed_package(client: TestClient) -> None:
    response = client.get("/static/plotly.min.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    path = plotly_js_path()
    # The installed package's own file, not a copy kept in this repository.
    assert path.parent.name == "package_data" and path.parent.parent.name == "plotly"
    assert not path.is_relative_to(REPO / "src") and not path.is_relative_to(REPO / "tests")
    assert response.content == path.read_bytes()
    assert response.content.startswith(b"/**\n* plotly.js v")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../routes.py",
        "/static/%2e%2e%2froutes.py",
        "/static/index.html",
        "/static/nope.js",
        "/static/..%2f..%2fpyproject.toml",
    ],
)
def test_only_known_assets_are_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_own_assets_are_served(client: TestClient) -> None:
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(kind)


def test_store_failure_is_503_without_details(filled: Store) -> None:
    def broken() -> Store:
        raise RuntimeError("secret dsn http://user:password@host")

    app = FastAPI()
    app.include_router(create_router(broken, ["BTCUSDT"]))
    with TestClient(app) as test_client:
        for url in ("/api/symbols", "/api/bars?symbol=BTCUSDT"):
            response = test_client.get(url)
            assert response.status_code == 503
            assert "password" not in response.text


def test_symbols_name_the_market_served(filled: Store) -> None:
    app = FastAPI()
    app.include_router(create_router(lambda: filled, ["BTCUSDT"], market="cm"))
    with TestClient(app) as test_client:
        assert test_client.get("/api/symbols").json()["market"] == "cm"


def test_bad_configured_symbol_is_refused_at_start(filled: Store) -> None:
    with pytest.raises(ValueError, match="symbol"):
        create_router(lambda: filled, ["BTC'USDT"])
