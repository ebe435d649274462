"""FastAPI's schema and docs pages are off by default; ``API_DOCS=true`` serves the schema only,
never the Swagger or ReDoc pages, which load their scripts from a CDN."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from binance_metrics.ingest.app import create_app
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.settings import load_settings
from binance_metrics.store.clickhouse import Store
from binance_metrics.web import create_router
from tests.web.support import serve

PAGES = ("/docs", "/docs/oauth2-redirect", "/redoc")


def _app(store: Store, **settings: object) -> FastAPI:
    """The app as ``up`` builds it: the ingestor's, with the candle page's routes. It is served
    without its lifespan (the ingestor's connections): these routes do not need it."""
    app = create_app(load_settings(**settings), KafkaConnection("127.0.0.1:9"))
    app.include_router(create_router(lambda: store, ("BTCUSDT",)))
    return app


def test_no_schema_and_no_docs_pages_by_default(store: Store) -> None:
    with serve(_app(store)) as base:
        assert httpx.get(f"{base}/api/symbols").status_code == 200  # the app is served
        for path in ("/openapi.json", *PAGES):
            assert httpx.get(f"{base}{path}").status_code == 404, path


def test_api_docs_serves_the_schema_but_never_a_page(store: Store) -> None:
    with serve(_app(store, API_DOCS=True)) as base:
        schema = httpx.get(f"{base}/openapi.json")
        assert schema.status_code == 200
        assert {"/health", "/metrics", "/api/bars"} <= set(schema.json()["paths"])
        for path in PAGES:
            assert httpx.get(f"{base}{path}").status_code == 404, path
