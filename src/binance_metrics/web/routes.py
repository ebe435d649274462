"""Routes of the live candle page: ``/``, ``/static/*`` and the JSON API under ``/api``.

Every input is validated here before it reaches the store, and the store binds it as a query
parameter (:func:`binance_metrics.store.queries.fetch_bars`); nothing a caller sends is ever
formatted into SQL. Decimals leave as strings so that no digit is lost on the way to the client.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, JSONResponse

from binance_metrics.intervals import parse_offset
from binance_metrics.markets import Market
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import StoredBar, fetch_bars, intervals_for, list_symbols

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Same rule as ``Settings.SYMBOLS``; matched with ``fullmatch`` (``$`` would accept a trailing
#: newline).
SYMBOL_PATTERN: Final = re.compile(r"[A-Z0-9_]{2,30}")
#: Epoch milliseconds: ASCII digits only (``str.isdigit`` accepts other scripts' digits too).
_EPOCH_MS: Final = re.compile(r"[0-9]{1,15}")
DEFAULT_LIMIT: Final = 500
MAX_LIMIT: Final = 5000
#: The time range the API accepts; the bounds fetch_bars itself uses when none is given.
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
_MAX_TIME_LENGTH: Final = 40

_STATIC: Final = Path(str(files("binance_metrics.web") / "static"))

#: Headers of the HTML page. The page loads only its own scripts; plotly sets inline styles,
#: hence ``style-src 'unsafe-inline'`` (styles cannot run code).
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class InvalidInput(ValueError):
    """A query parameter that the API refuses (answered with 422)."""


def plotly_js_path() -> Path:
    """``plotly.min.js`` as bundled in the installed ``plotly`` package (without importing it)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise RuntimeError("the candle page needs the 'plotly' package (pip install plotly)")
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"plotly is installed but {path} is missing")
    return path


def parse_symbol(raw: str) -> str:
    # ASCII first: str.upper maps some non-ASCII letters to ASCII (dotless i -> "I", "ß" -> "SS").
    symbol = raw.upper()
    if not raw.isascii() or not SYMBOL_PATTERN.fullmatch(symbol):
        raise InvalidInput("symbol must be 2-30 characters of A-Z, 0-9 and _")
    return symbol


def parse_interval(raw: str, bar_seconds: int = 60) -> str:
    # Exact match: "1M" is a month at Binance, not a minute.
    if raw not in intervals_for(bar_seconds):
        raise InvalidInput(f"interval must be one of {', '.join(intervals_for(bar_seconds))}")
    return raw


def parse_time_zone(raw: str) -> int:
    """Binance's ``timeZone``: ``+08:00``, ``-03:30``, ``8``; milliseconds east of UTC."""
    try:
        return parse_offset(raw)
    except ValueError as exc:
        raise InvalidInput(f"timeZone: {exc}") from None


def parse_time(raw: str, name: str) -> datetime:
    """Epoch milliseconds or ISO 8601 (naive means UTC), within [EARLIEST, LATEST]."""
    if not raw.isascii() or len(raw) > _MAX_TIME_LENGTH:
        raise InvalidInput(f"{name} must be epoch milliseconds or an ISO 8601 time")
    try:
        if _EPOCH_MS.fullmatch(raw):
            # Integer arithmetic: exact to the millisecond, unlike a float division.
            value = EARLIEST + timedelta(milliseconds=int(raw))
        else:
            value = datetime.fromisoformat(raw)
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput(f"{name} must be epoch milliseconds or an ISO 8601 time") from exc
    if not EARLIEST <= value <= LATEST:
        raise InvalidInput(f"{name} must lie between 1970-01-01 and 2200-01-01 UTC")
    return value


def bar_json(bar: StoredBar) -> dict[str, Any]:
    return {
        "open_time": bar.open_time_ms,
        "open": _decimal(bar.open),
        "high": _decimal(bar.high),
        "low": _decimal(bar.low),
        "close": _decimal(bar.close),
        "volume": _decimal(bar.volume),
        "quote_volume": _decimal(bar.quote_volume),
        "trade_count": bar.trade_count,
        "taker_buy_volume": _decimal(bar.taker_buy_volume),
        "taker_buy_quote_volume": _decimal(bar.taker_buy_quote_volume),
        "base_volume": _decimal(bar.base_volume),
        "taker_buy_base_volume": _decimal(bar.taker_buy_base_volume),
        "first_trade_id": bar.first_trade_id,
        "last_trade_id": bar.last_trade_id,
        "closed": bar.closed,
    }


def _decimal(value: Decimal) -> str:
    # Fixed-point: str() would give "0E-8" for a zero read back from a Decimal(38, 8) column.
    return format(value, "f")


def choose_default(stored: Sequence[str], configured: Sequence[str]) -> str | None:
    """The symbol the page opens on: the first configured one that has bars, else the first
    stored one (a store filled by ``replay`` shows candles at once), else the first configured."""
    have = set(stored)
    for symbol in configured:
        if symbol in have:
            return symbol
    if stored:
        return stored[0]
    return configured[0] if configured else None


def create_router(
    get_store: Callable[[], Store],
    default_symbols: Sequence[str],
    bar_seconds: int = 60,
    market: Market = "spot",
) -> APIRouter:
    """The candle page and its API. ``get_store`` is called per request, so the app may start
    before the store is open; ``default_symbols`` (e.g. ``Settings.SYMBOLS``) are offered in
    the symbol picker even before they have bars; ``bar_seconds`` is the length of the stored
    bars (``WINDOW_SECONDS``); ``market`` (``MARKET``) is shown beside the symbol."""
    configured = list(dict.fromkeys(parse_symbol(symbol) for symbol in default_symbols))
    assets: dict[str, tuple[Path, str, str]] = {
        "app.js": (_STATIC / "app.js", "text/javascript", "no-cache"),
        "style.css": (_STATIC / "style.css", "text/css", "no-cache"),
        # Versioned with the installed plotly; a day of caching spares 4.8 MB per page load.
        "plotly.min.js": (plotly_js_path(), "text/javascript", "public, max-age=86400"),
    }
    # Every handler is a plain ``def``: FastAPI runs it in its thread pool, so a store query never
    # blocks the event loop that the ingestor's WebSocket connections share with this router.
    router = APIRouter()

    def store_call(call: Callable[[Store], T]) -> T:
        try:
            return call(get_store())
        except Exception:
            # The reason goes to the log, never to the client (it may hold DSNs or SQL).
            log.exception("candle page: store query failed")
            raise HTTPException(503, "the bars store is not available") from None

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(_STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @router.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        # A fixed table, not a directory mount: no path ever comes from the request.
        if name not in assets:
            raise HTTPException(404, "not found")
        path, media_type, cache = assets[name]
        return FileResponse(
            path,
            media_type=media_type,
            headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"},
        )

    @router.get("/api/symbols")
    def symbols() -> JSONResponse:
        stored = store_call(lambda store: list_symbols(store, bar_seconds))
        listed = configured + sorted(set(stored) - set(configured))
        return JSONResponse(
            {
                "market": market,
                "symbols": listed,
                "with_bars": stored,
                "default": choose_default(stored, configured),
                "intervals": intervals_for(bar_seconds),
            }
        )

    @router.get("/api/bars")
    def bars(
        symbol: Annotated[str, Query(max_length=100)],
        interval: Annotated[str, Query(max_length=10)] = "1m",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        start: Annotated[str | None, Query(max_length=100)] = None,
        end: Annotated[str | None, Query(max_length=100)] = None,
        time_zone: Annotated[str, Query(alias="timeZone", max_length=10)] = "0",
        include_open: bool = True,
    ) -> JSONResponse:
        try:
            name = parse_symbol(symbol)
            step = parse_interval(interval, bar_seconds)
            offset = parse_time_zone(time_zone)
            since = parse_time(start, "start") if start is not None else None
            until = parse_time(end, "end") if end is not None else None
        except InvalidInput as exc:
            raise HTTPException(422, str(exc)) from None
        if since is not None and until is not None and since >= until:
            raise HTTPException(422, "start must be before end")
        market = store_call(lambda store: store.market)
        found = store_call(
            lambda store: fetch_bars(
                store,
                name,
                interval=step,
                start=since,
                end=until,
                limit=limit,
                tz_offset_ms=offset,
                bar_seconds=bar_seconds,
                include_open=include_open,
            )
        )
        return JSONResponse(
            {
                "market": market,
                "symbol": name,
                "interval": step,
                "bars": [bar_json(bar) for bar in found],
            }
        )

    return router
