"""``binance-metrics reconcile``: stored bars against Binance's klines, from REST or from files.

The stored bars are read as ``bars`` reads them (:func:`~binance_metrics.store.queries.fetch_bars`),
so every interval ``bars`` has can be reconciled. Exit status 0 when every field of every minute
is equal, 1 when anything differs (or nothing is there to compare), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from binance_metrics.errors import BinanceMetricsError, ConfigError
from binance_metrics.reconcile.compare import FIELDS, Kline, reconcile
from binance_metrics.reconcile.files import read_klines, symbol_and_interval
from binance_metrics.reconcile.report import Heading, write_json, write_table
from binance_metrics.reconcile.rest import RestKlines
from binance_metrics.reconcile.stored import epoch_ms, stored_klines
from binance_metrics.settings import Settings
from binance_metrics.store.clickhouse import open_store
from binance_metrics.store.queries import INTERVALS


def run_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    symbol = args.symbol.upper()
    start_ms = epoch_ms(args.start) if args.start else None
    end_ms = epoch_ms(args.end) if args.end else None
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ConfigError(
            f"--start ({args.start.isoformat()}) must be before --end ({args.end.isoformat()})"
        )
    rest = args.against == ["rest"]
    if rest and (start_ms is None or end_ms is None):
        raise ConfigError("--against rest needs --start and --end")
    if args.rest_url and not args.rest_url.startswith(("http://", "https://")):
        raise ConfigError(f"--rest-url must start with http:// or https://, not {args.rest_url!r}")
    paths = [] if rest else _kline_files(args.against, symbol, args.interval)
    market = args.market or settings.MARKET
    store = open_store(settings.clickhouse_dsn, market)  # before asking Binance: it may be in use
    if rest:
        assert start_ms is not None and end_ms is not None
        # MARKET's own klines are at BINANCE_REST_URL (the market's unless set).
        url = args.rest_url or (settings.BINANCE_REST_URL if market == settings.MARKET else None)
        client = RestKlines.from_settings(settings, market, base_url=url)
        against = f"{client.base_url}{client.market.path}"
        fields = client.market.fields
        klines = asyncio.run(_fetch(client, symbol, args.interval, start_ms, end_ms))
    else:
        klines = read_klines(paths)
        if not klines:
            raise BinanceMetricsError(f"no klines in {', '.join(map(str, paths))}")
        start_ms = min(k.open_time_ms for k in klines) if start_ms is None else start_ms
        if end_ms is None:  # just after the last kline: its open time plus the interval
            end_ms = max(k.open_time_ms for k in klines) + _length_ms(args.interval)
        klines = [k for k in klines if start_ms <= k.open_time_ms < end_ms]
        against = ", ".join(path.name for path in paths)
        fields = FIELDS
    ours = stored_klines(store, symbol, args.interval, start_ms, end_ms)
    if not ours and not klines:
        raise BinanceMetricsError(
            f"nothing to compare: no {symbol} bars stored and no klines from {against} in that "
            "range"
        )
    result = reconcile(ours, klines, fields)
    heading = Heading(symbol, args.interval, against, start_ms, end_ms)
    (write_json if args.format == "json" else write_table)(heading, result, sys.stdout)
    return 0 if result.equal else 1


async def _fetch(
    client: RestKlines, symbol: str, interval: str, start_ms: int, end_ms: int
) -> list[Kline]:
    try:
        return await client.klines(symbol, interval, start_ms, end_ms)
    finally:
        await client.aclose()


def _kline_files(against: Sequence[str], symbol: str, interval: str) -> list[Path]:
    if "rest" in against:
        raise ConfigError("--against takes 'rest' or kline files, not both")
    paths = [Path(text) for text in against]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise ConfigError(f"--against: no such file: {', '.join(missing)}")
    for path in paths:
        named = symbol_and_interval(path)
        if named is not None and named != (symbol, interval):
            raise ConfigError(
                f"--against {path}: its name says {named[0]} {named[1]}, but --symbol "
                f"{symbol} --interval {interval} was asked for"
            )
    return paths


def _length_ms(interval: str) -> int:
    """An interval's length; 1 ms for months, whose length varies (the end is exclusive)."""
    known = INTERVALS.get(interval)
    return known.length_ms or 1 if known is not None else 1
