"""Kline files as :class:`~binance_metrics.reconcile.compare.Kline`: data.binance.vision's
12-column CSV, and CSV exports with named columns.

data.binance.vision publishes ``BTCUSDT-1m-2020-01-01.zip``, one CSV inside, no header until
2022 and a header since, open times in milliseconds until 2024 and in microseconds from
2025-01-01 (spot)::

    1577836800000,7195.24000000,7196.25000000,7183.14000000,7186.68000000,51.64281200,
    1577836859999,371233.51835535,493,19.59823000,140888.41428273,0

(open time, open, high, low, close, volume, close time, quote volume, trades, taker-buy base
volume, taker-buy quote volume, ignore). Without a header, the columns are taken in that order,
as many as a row has (at least six); with one, by name (Binance's, ours from ``bars``, or
``open_time,open,high,low,close,volume`` exports). ``open_time`` may also be an ISO time.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from binance_metrics.errors import BinanceMetricsError
from binance_metrics.reconcile.compare import FIELDS, Kline, Value
from binance_metrics.recordings import RecordingError, _open_text

#: data.binance.vision's kline columns, in order.
BINANCE_COLUMNS: Final = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "trade_count", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip
#: Other names of the same columns in headers.
_ALIASES: Final = {
    "count": "trade_count",
    "trades": "trade_count",
    "number_of_trades": "trade_count",
    "quote_asset_volume": "quote_volume",
    "taker_buy_base_asset_volume": "taker_buy_volume",
    "taker_buy_base_volume": "taker_buy_volume",
    "taker_buy_quote_asset_volume": "taker_buy_quote_volume",
    "open_time_ms": "open_time",
}
_MICROSECONDS_FROM: Final = 10**14  # an open time above this is in microseconds
_SYMBOL_AND_INTERVAL: Final = re.compile(r"^([A-Z0-9_]{2,30})-(\d+[smhdwM])-")
EXPECTED: Final = (
    "reconcile reads data.binance.vision kline files (12 columns, .csv or .zip, with or without "
    "header) and CSV with named columns (open_time,open,high,low,close,volume,...)"
)


class KlinesFileError(BinanceMetricsError):
    """A file that cannot be read as klines; the message names the file (and line)."""


def symbol_and_interval(path: Path) -> tuple[str, str] | None:
    """``BTCUSDT-1m-2020-01-01.zip`` -> ``("BTCUSDT", "1m")``; None for other names."""
    match = _SYMBOL_AND_INTERVAL.match(path.name)
    return (match.group(1), match.group(2)) if match else None


def read_klines(paths: Iterable[Path]) -> list[Kline]:
    """The klines of every file, in file order."""
    return [kline for path in paths for kline in _read(path)]


def _read(path: Path) -> Iterator[Kline]:
    columns: tuple[str, ...] | None = None
    try:
        with _open_text(path) as text:
            rows = csv.reader(text)
            for row in rows:
                if not row or not "".join(row).strip():
                    continue
                if columns is None:
                    columns = _columns(path, row)
                    if not row[0].strip().isdigit():
                        continue  # the header
                yield _kline(path, rows.line_num, columns, row)
    except RecordingError as exc:
        raise KlinesFileError(f"{path}: {exc.problem}; {EXPECTED}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KlinesFileError(f"{path}: cannot be read to its end ({exc})") from None
    if columns is None:
        raise KlinesFileError(f"{path}: no klines in it; {EXPECTED}")


def _columns(path: Path, first: list[str]) -> tuple[str, ...]:
    cells = [cell.strip().lower() for cell in first]
    if cells[0].isdigit():
        if len(cells) < 6:
            raise KlinesFileError(
                f"{path}: rows of {len(cells)} columns; a kline row has 12 ({EXPECTED})"
            )
        return BINANCE_COLUMNS[: len(cells)]
    names = tuple(_ALIASES.get(cell, cell) for cell in cells)
    if "open_time" not in names:
        shown = ",".join(first)[:60]
        raise KlinesFileError(f"{path}: no open_time column in its header ({shown}); {EXPECTED}")
    if not set(FIELDS) & set(names):
        raise KlinesFileError(f"{path}: none of the kline fields in its header; {EXPECTED}")
    return names


def _kline(path: Path, line: int, columns: tuple[str, ...], row: list[str]) -> Kline:
    if len(row) < len(columns):
        raise KlinesFileError(f"{path}:{line}: {len(row)} columns, expected {len(columns)}")
    values: dict[str, Value] = {}
    open_time = 0
    for name, cell in zip(columns, row, strict=False):
        cell = cell.strip()
        try:
            if name == "open_time":
                open_time = _open_time(cell)
            elif name == "trade_count":
                values[name] = int(cell)
            elif name in FIELDS:
                number = Decimal(cell)
                if not number.is_finite():
                    raise ValueError(cell)
                values[name] = number
        except (ValueError, InvalidOperation):
            raise KlinesFileError(f"{path}:{line}: {name} is not a number: {cell!r}") from None
    return Kline(open_time, values)


def _open_time(cell: str) -> int:
    if cell.isdigit():
        value = int(cell)
        return value // 1000 if value >= _MICROSECONDS_FROM else value
    moment = datetime.fromisoformat(cell.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
