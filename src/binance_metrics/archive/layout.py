"""Where data.binance.vision keeps a symbol's trades, and which files cover a range of days.

The layout (as published by Binance, binance/binance-public-data)::

    data/spot/monthly/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-08.zip
    data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-08-09.zip
    data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-09.zip
    data/futures/cm/monthly/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2024-08.zip

each with ``<file>.CHECKSUM`` beside it. A month that the range covers whole is one monthly
file; the days of a month covered in part are daily files. Monthly files appear some days after
the month ends, so a missing one is replaced by the month's daily files (:func:`daily_files`).
"""

from __future__ import annotations

from calendar import monthrange
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final, Literal

from binance_metrics.markets import MARKET_DEFAULTS, Market

DataKind = Literal["trades", "aggTrades"]
DATA_KINDS: Final = ("aggTrades", "trades")


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One archive: a day's or a month's trades of a symbol. ``path`` is relative to the
    archive's root URL (and to the cache directory)."""

    symbol: str
    market: Market
    kind: DataKind
    first_day: date
    last_day: date  # inclusive: the month's last day for a monthly file

    @property
    def monthly(self) -> bool:
        return self.first_day != self.last_day

    @property
    def name(self) -> str:
        period = self.first_day.strftime("%Y-%m" if self.monthly else "%Y-%m-%d")
        return f"{self.symbol}-{self.kind}-{period}.zip"

    @property
    def path(self) -> str:
        root = MARKET_DEFAULTS[self.market].archive_root
        every = "monthly" if self.monthly else "daily"
        return f"{root}/{every}/{self.kind}/{self.symbol}/{self.name}"

    @property
    def checksum_path(self) -> str:
        return f"{self.path}.CHECKSUM"


def plan(symbol: str, market: Market, kind: DataKind, start: date, end: date) -> list[ArchiveFile]:
    """The files that hold ``symbol``'s trades from ``start`` to ``end`` (both included), oldest
    first: a monthly file for each month covered whole, daily files for the other days."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    files: list[ArchiveFile] = []
    month = start.replace(day=1)
    while month <= end:
        month_end = month.replace(day=monthrange(month.year, month.month)[1])
        if start <= month and month_end <= end:
            files.append(ArchiveFile(symbol, market, kind, month, month_end))
        else:
            files.extend(_days(symbol, market, kind, max(start, month), min(end, month_end)))
        month = month_end + timedelta(days=1)
    return files


def daily_files(monthly: ArchiveFile) -> list[ArchiveFile]:
    """The daily files of a monthly file's days, for when the monthly file is not published."""
    return _days(monthly.symbol, monthly.market, monthly.kind, monthly.first_day, monthly.last_day)


def _days(
    symbol: str, market: Market, kind: DataKind, first: date, last: date
) -> list[ArchiveFile]:
    count = (last - first).days + 1
    days = (first + timedelta(days=n) for n in range(count))
    return [ArchiveFile(symbol, market, kind, day, day) for day in days]
