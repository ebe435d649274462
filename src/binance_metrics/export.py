"""Bars written out for people and programs: CSV, JSON, a table, Binance's kline CSV, Parquet.

Every format carries the same values exactly: decimals are written as plain decimal text (at
least the 8 decimals Binance prints, more only where the value has more) or, in Parquet, as
Decimal128 columns; nothing passes through a float.

* ``csv`` (with a header), ``table``: symbol, ISO open time, Binance's kline columns in
  Binance's order, ISO close time;
* ``json``: the same fields, times in epoch milliseconds;
* ``binance``: exactly the 12 columns of data.binance.vision's kline files, no header, times in
  epoch milliseconds (the spot archive's unit before 2025; it writes microseconds since);
* ``parquet``: a file with timestamp and Decimal128 columns, for pandas, polars or DuckDB.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TextIO

from binance_metrics.intervals import INTERVALS
from binance_metrics.store.queries import StoredBar

FORMATS: Final = ("csv", "json", "table", "binance", "parquet")
#: The header of ``csv`` and ``table``, the keys of ``json``.
COLUMNS: Final = (
    "symbol", "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trade_count", "taker_buy_volume", "taker_buy_quote_volume",
)  # fmt: skip
_AMOUNTS: Final = ("open", "high", "low", "close", "volume")
_TAKER: Final = ("taker_buy_volume", "taker_buy_quote_volume")


@dataclass(frozen=True, slots=True)
class Kline:
    """A stored bar with what a kline file says besides: its symbol and close time."""

    symbol: str
    bar: StoredBar
    close_time_ms: int

    @property
    def open_time_ms(self) -> int:
        return self.bar.open_time_ms


def klines(
    symbol: str, bars: Sequence[StoredBar], interval: str, tz_offset_ms: int = 0
) -> list[Kline]:
    """``bars`` of ``interval`` with Binance's close time (the next open time minus 1 ms)."""
    grid = INTERVALS[interval]
    return [Kline(symbol, bar, grid.close_time_ms(bar.open_time_ms, tz_offset_ms)) for bar in bars]


def plain(value: Decimal | int) -> str:
    """A number as a plain decimal: no exponent, at least the 8 decimals Binance prints."""
    if isinstance(value, int):
        return str(value)
    whole, _, frac = format(value, "f").partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(8, '0')}"


def iso_time(ms: int, tz_offset_ms: int = 0) -> str:
    """``2024-08-09T00:00:00.000Z``, or with the offset (``...T08:00:00.000+08:00``)."""
    zone = timezone(timedelta(milliseconds=tz_offset_ms)) if tz_offset_ms else UTC
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    text = moment.astimezone(zone).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def binance_row(kline: Kline) -> list[str]:
    """The 12 columns of data.binance.vision's kline CSV (``Ignore`` is ``0``)."""
    bar = kline.bar
    return [
        str(kline.open_time_ms),
        *(plain(getattr(bar, name)) for name in _AMOUNTS),
        str(kline.close_time_ms),
        plain(bar.quote_volume),
        str(bar.trade_count),
        *(plain(getattr(bar, name)) for name in _TAKER),
        "0",
    ]


def text_row(kline: Kline, tz_offset_ms: int = 0, closed: bool = False) -> list[str]:
    """The ``csv`` and ``table`` row: :data:`COLUMNS` (and ``closed``, ``true``/``false``)."""
    row = binance_row(kline)[:-1]
    row[0] = iso_time(kline.open_time_ms, tz_offset_ms)
    row[6] = iso_time(kline.close_time_ms, tz_offset_ms)
    return [kline.symbol, *row, *([str(kline.bar.closed).lower()] if closed else [])]


def json_object(kline: Kline, closed: bool = False) -> dict[str, Any]:
    row = binance_row(kline)[:-1]
    values: list[Any] = [kline.symbol, *row]
    obj = dict(zip(COLUMNS, values, strict=True))
    for name in ("open_time", "close_time", "trade_count"):
        obj[name] = int(obj[name])
    if closed:
        obj["closed"] = kline.bar.closed
    return obj


def write_text(
    rows: Sequence[Kline], fmt: str, out: TextIO, tz_offset_ms: int = 0, closed: bool = False
) -> None:
    """Write ``rows`` as ``csv``, ``json``, ``table`` or ``binance`` text; ``closed`` adds that
    column (false for the forming bar) to all but ``binance``, whose 12 columns are Binance's."""
    columns = (*COLUMNS, "closed") if closed else COLUMNS
    if fmt == "binance":
        csv.writer(out, lineterminator="\n").writerows(binance_row(k) for k in rows)
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(text_row(k, tz_offset_ms, closed) for k in rows)
    elif fmt == "json":
        json.dump([json_object(k, closed) for k in rows], out, indent=1)
        out.write("\n")
    elif fmt == "table":
        table = [list(columns), *(text_row(k, tz_offset_ms, closed) for k in rows)]
        widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
        for row in table:
            out.write("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
            out.write("\n")
    else:
        raise ValueError(f"not a text format: {fmt!r}")


def write_parquet(rows: Sequence[Kline], path: Path, closed: bool = False) -> None:
    """Write ``rows`` to a Parquet file: times as UTC timestamps (ms), prices and volumes as
    Decimal128(38, 8), quote volumes as Decimal128(38, 16), exactly as the store holds them;
    ``closed`` adds that boolean column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    price = pa.decimal128(38, 8)
    quote = pa.decimal128(38, 16)
    moment = pa.timestamp("ms", tz="UTC")
    schema = pa.schema(
        [
            ("symbol", pa.string()),
            ("open_time", moment),
            *((name, price) for name in _AMOUNTS),
            ("close_time", moment),
            ("quote_volume", quote),
            ("trade_count", pa.uint64()),
            ("taker_buy_volume", price),
            ("taker_buy_quote_volume", quote),
            *([("closed", pa.bool_())] if closed else []),
        ]
    )
    columns: dict[str, list[Any]] = {
        "symbol": [k.symbol for k in rows],
        "open_time": [k.open_time_ms for k in rows],
        "close_time": [k.close_time_ms for k in rows],
    }
    for name in (*_AMOUNTS, "quote_volume", "trade_count", *_TAKER):
        columns[name] = [getattr(k.bar, name) for k in rows]
    if closed:
        columns["closed"] = [k.bar.closed for k in rows]
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path)
