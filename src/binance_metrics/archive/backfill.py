"""``binance-metrics backfill``: Binance's trade archives downloaded, verified and replayed.

Every file of the range is fetched first (monthly files for the months covered whole, daily
files for the rest and for a month whose monthly file is missing), each verified against its
``.CHECKSUM`` and checked to be the kind of trades asked for; then all of them go through
:func:`~binance_metrics.replay.replay`, the same path as ``binance-metrics replay``, into the
same table as the live bars. So a file that fails stops the backfill before any bar is written.
A day without a file (404: before the symbol was listed, or not published yet) is reported and
skipped; a symbol without any file in the range is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx

from binance_metrics.archive.download import ArchiveCache, Downloader, Fetched, Retry
from binance_metrics.archive.estimate import estimated_trades
from binance_metrics.archive.layout import ArchiveFile, DataKind, daily_files, plan
from binance_metrics.archive.progress import BackfillProgress
from binance_metrics.dataflow import FlowStats
from binance_metrics.errors import BinanceMetricsError
from binance_metrics.markets import Market
from binance_metrics.recordings import (
    AGG_TRADES_CSV,
    TRADES_CSV,
    RecordingError,
    check_recording,
)
from binance_metrics.replay import ReplaySummary, replay
from binance_metrics.settings import Settings

log = logging.getLogger(__name__)

FIRST_MISSING = 3  # missing files named in the summary
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DEFAULT_RETRY = Retry()


class BackfillError(BinanceMetricsError):
    """A backfill that cannot be done as asked: a symbol with no archive in the range."""


@dataclass(frozen=True)
class Request:
    symbols: tuple[str, ...]
    start: date
    end: date  # included
    market: Market = "spot"
    kind: DataKind = "aggTrades"
    contract_size: int | None = None  # COIN-M's (docs/markets.md)


@dataclass(frozen=True)
class BackfillSummary:
    downloaded: int  # files downloaded now
    cached: int  # files that were already in the cache
    downloaded_bytes: int
    missing: tuple[str, ...]  # the archive's paths that answered 404, daily files only
    replayed: ReplaySummary

    def lines(self) -> list[str]:
        missing = f"missing      {len(self.missing)} daily files (not published)"
        if self.missing:
            shown = ", ".join(Path(path).name for path in self.missing[:FIRST_MISSING])
            missing += f": {shown}{', ...' if len(self.missing) > FIRST_MISSING else ''}"
        return [
            f"downloaded   {self.downloaded} files, {self.downloaded_bytes / 1e6:,.1f} MB",
            f"cached       {self.cached} files",
            missing,
            *self.replayed.lines(),
        ]


def backfill(
    request: Request,
    settings: Settings,
    *,
    progress: BackfillProgress | None = None,
    retry: Retry = DEFAULT_RETRY,
) -> BackfillSummary:
    """Download the archives of ``request`` into ``DATA_DIR/archive`` (what is there already
    is not downloaded again), verify them, and replay them into the store."""
    display = progress or BackfillProgress()
    cache = ArchiveCache(settings.DATA_DIR / "archive")
    fetched: list[Fetched] = []
    missing: list[str] = []
    with display:
        with httpx.Client(timeout=_TIMEOUT, follow_redirects=True) as client:
            downloader = Downloader(
                settings.BINANCE_ARCHIVE_URL, cache, client, display.transfer, retry
            )
            for symbol in request.symbols:
                found = _fetch_symbol(downloader, request, symbol, missing)
                if not found:
                    raise BackfillError(
                        f"no archive of {symbol} ({request.market} {request.kind}) from "
                        f"{request.start} to {request.end} at {settings.BINANCE_ARCHIVE_URL}: "
                        f"every file was missing (404), the first "
                        f"{downloader.url(_first(request, symbol))}; is the symbol right, was "
                        "it listed on that market then, and are the days published yet (a "
                        "day's file appears the day after)?"
                    )
                fetched.extend(found)
        paths = [item.path for item in fetched]
        for path in paths:
            _check_kind(path, request.kind)
        stats = FlowStats()
        expected = sum(estimated_trades(path, request.kind) for path in paths)
        with display.replaying(lambda: stats.summary()["trades"], len(paths), expected):
            replayed = replay(paths, settings, stats=stats, contract_size=request.contract_size)
    return BackfillSummary(
        downloaded=sum(1 for item in fetched if not item.cached),
        cached=sum(1 for item in fetched if item.cached),
        downloaded_bytes=sum(item.downloaded_bytes for item in fetched),
        missing=tuple(missing),
        replayed=replayed,
    )


def _fetch_symbol(
    downloader: Downloader, request: Request, symbol: str, missing: list[str]
) -> list[Fetched]:
    found: list[Fetched] = []
    for file in plan(symbol, request.market, request.kind, request.start, request.end):
        if file.monthly:
            days = daily_files(file)
            # A month already in the cache as days (its monthly file was missing before) is
            # used as it is, without asking for the monthly file again.
            if downloader.cache.holds(file) or not all(map(downloader.cache.holds, days)):
                monthly = downloader.fetch(file)
                if monthly is not None:
                    found.append(monthly)
                    continue
                log.info("%s: no monthly file; fetching its days", file.name)
            found.extend(_fetch_days(downloader, days, missing))
        else:
            found.extend(_fetch_days(downloader, [file], missing))
    return found


def _fetch_days(
    downloader: Downloader, days: Sequence[ArchiveFile], missing: list[str]
) -> list[Fetched]:
    found = []
    for day in days:
        fetched = downloader.fetch(day)
        if fetched is None:
            log.info("%s: not in the archive (404)", downloader.url(day))
            missing.append(day.path)
        else:
            found.append(fetched)
    return found


def _first(request: Request, symbol: str) -> ArchiveFile:
    return plan(symbol, request.market, request.kind, request.start, request.end)[0]


def _check_kind(path: Path, kind: DataKind) -> None:
    """Each zip must hold the trades its name says: a klines or other file, or aggTrades where
    trades were asked for, stops the backfill before anything is stored."""
    expected = {"aggTrades": AGG_TRADES_CSV, "trades": TRADES_CSV}[kind]
    what = f"backfill --data {kind} reads {expected.name} in each zip"
    try:
        fmt = check_recording(path)
    except RecordingError as exc:
        raise RecordingError(path, exc.problem, what) from None
    if fmt != expected:
        raise RecordingError(path, f"it holds {fmt.name}", what)
