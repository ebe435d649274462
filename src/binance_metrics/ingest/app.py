"""The ingestor's FastAPI app: its lifespan runs the :class:`Ingestor`; ``/health``, ``/metrics``.

``GET /health`` answers 200 when every connection is open, Kafka acknowledges and every extra
check (``checks``) passes, 503 otherwise (the body: :mod:`binance_metrics.ingest.health`). The
ingestor's tuning is ``settings.INGEST``.

FastAPI's ``/docs`` and ``/redoc`` are never served (their pages load scripts from a CDN), and
``/openapi.json`` only with ``API_DOCS=true``.

Other routers (the candle page at ``/``) may be added with ``app.include_router``; the running
:class:`Ingestor` is ``app.state.ingestor``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from binance_metrics.http_server import serve_app
from binance_metrics.ingest.health import Check
from binance_metrics.ingest.service import Ingestor
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.reconcile.continuous import ContinuousReconciler, build_reconciler
from binance_metrics.settings import Settings
from binance_metrics.store.clickhouse import Store

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    kafka: KafkaConnection,
    checks: Mapping[str, Check] | None = None,
    info: Callable[[], Mapping[str, Any]] | None = None,
    store: Store | None = None,
    reconciler: ContinuousReconciler | None = None,
) -> FastAPI:
    """The ingestor app; starting it (lifespan) connects, stopping it flushes Kafka. ``checks``
    are reported by ``/health`` next to the ingestor's own state; ``info`` adds parts that
    describe the process without judging it (``up``: ``"exchange"``). ``store``: the bars
    store (the resume's checkpoint, the ledger the heal loop repairs); ``reconciler`` runs
    with it (its mismatches go to the heal loop)."""
    ingestor = Ingestor(settings, kafka, store, reconciler)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await ingestor.start()
        except Exception as exc:
            # uvicorn only logs a failed startup; serve_app raises it (SYMBOLS matching nothing).
            app.state.startup_error = exc
            raise
        try:
            yield
        finally:
            left = await ingestor.stop()
            produced = sum(ingestor.produced.values())
            log.info(
                "ingestor stopped: %d trades produced, %d messages undelivered", produced, left
            )

    app = FastAPI(
        title="binance-metrics ingestor",
        lifespan=lifespan,
        openapi_url="/openapi.json" if settings.API_DOCS else None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.ingestor = ingestor

    # async: runs on the event loop, so it reads the ingestor state between frames, not during.
    @app.get("/health")
    async def health() -> JSONResponse:
        ok, body = ingestor.health(checks)
        if info is not None:
            body.update(info())
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(ingestor.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(settings: Settings, kafka: KafkaConnection, store: Store | None = None) -> None:
    """Run the ingestor under uvicorn on HEALTH_HOST:HEALTH_PORT until Ctrl-C (then flush).
    With a ``store`` (CLICKHOUSE_URL) it heals holes and reconciles the stored bars with
    Binance (``RECONCILE_EVERY_S``)."""
    reconciler = build_reconciler(settings, None if store is None else lambda: store)
    app = create_app(settings, kafka, store=store, reconciler=reconciler)
    serve_app(app, settings.HEALTH_HOST, settings.HEALTH_PORT, settings.LOG_LEVEL.lower())
