"""The local exchange's ``/api/v3/klines`` (and ``/fapi/v1/klines``, ``/dapi/v1/klines``):
kline rows given to it, served with Binance's paging.

The rows are data.binance.vision's 12 columns as text (:func:`read_kline_rows`), served as
Binance serves them: times and the trade count as numbers, the rest as the strings of the file,
so what a client reads is the file, not something computed by this project. Paging as Binance's:
``startTime`` and ``endTime`` (inclusive, open times, ms) choose the range, ``limit`` (default
500, at most 1000) how many; with only ``endTime`` (or neither) the most recent ``limit``.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

KLINES_PATHS: Final = frozenset({"/api/v3/klines", "/fapi/v1/klines", "/dapi/v1/klines"})
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 500
#: What a call costs in ``X-MBX-USED-WEIGHT-1M``.
WEIGHT: Final = 2

KlineRow = Sequence[str]


def read_kline_rows(path: Path) -> list[list[str]]:
    """The 12-column rows of a data.binance.vision kline CSV (a header line is skipped)."""
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    return [row for row in rows if row[0].isdigit()]


def klines_page(
    rows_by_symbol: Mapping[str, Sequence[KlineRow]], query: Mapping[str, list[str]]
) -> tuple[int, Any]:
    """``(HTTP status, JSON body)`` of one klines request."""
    try:
        symbol = query["symbol"][0].upper()
        interval = query["interval"][0]
        limit = int(query.get("limit", [str(DEFAULT_LIMIT)])[0])
        start = int(query["startTime"][0]) if "startTime" in query else None
        end = int(query["endTime"][0]) if "endTime" in query else None
    except (KeyError, ValueError):
        return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
    if symbol not in rows_by_symbol:
        return 400, {"code": -1121, "msg": "Invalid symbol."}
    if interval != "1m":
        return 400, {"code": -1120, "msg": "Invalid interval."}
    if not 1 <= limit <= MAX_LIMIT:
        return 400, {"code": -1130, "msg": "Invalid data sent for a parameter."}
    rows = [
        row
        for row in rows_by_symbol[symbol]
        if (start is None or int(row[0]) >= start) and (end is None or int(row[0]) <= end)
    ]
    page = rows[:limit] if start is not None else rows[-limit:]
    return 200, [_as_binance_serves(row) for row in page]


def _as_binance_serves(row: KlineRow) -> list[Any]:
    # Times and the trade count are JSON numbers; prices and volumes strings, as in the file.
    cells: list[Any] = list(row[:12])
    for index in (0, 6, 8):
        cells[index] = int(cells[index])
    return cells
