"""The local exchange's ``/api/v3/klines`` (and ``/fapi/v1/klines``, ``/dapi/v1/klines``):
kline rows given to it, served with Binance's paging.

The rows are data.binance.vision's 12 columns as text (:func:`read_kline_rows`), served as
Binance serves them: times and the trade count as numbers, the rest as the strings of the file,
so what a client reads is the file, not something computed by this project. The replaying
exchange of ``up --exchange replay:`` has no such file: it serves the klines of the trades it
plays (:func:`kline_rows_of`, folded with the project's own bar). Paging as Binance's:
``startTime`` and ``endTime`` (inclusive, open times, ms) choose the range, ``limit`` (default
500, at most 1000) how many; with only ``endTime`` (or neither) the most recent ``limit``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from binance_metrics.bars import Bar
from binance_metrics.testing.market import MarketTrade
from binance_metrics.trades import parse_scaled

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


def kline_rows_of(trades: Iterable[MarketTrade]) -> dict[str, list[list[str]]]:
    """Symbol -> the 12-column 1m kline rows of ``trades``, minutes without trades filled as
    Binance fills them (the previous close, no volume)."""
    bars: dict[str, dict[int, Bar]] = {}
    for trade in trades:
        minute = trade.trade_time // 60_000 * 60_000
        bar = bars.setdefault(trade.symbol, {}).setdefault(minute, Bar())
        data = trade.data
        bar.add(parse_scaled(data["p"]), parse_scaled(data["q"]), trade.id, trade.id, data["m"])
    rows: dict[str, list[list[str]]] = {}
    for symbol, minutes in bars.items():
        first, last = min(minutes), max(minutes)
        close = 0
        for start in range(first, last + 60_000, 60_000):
            bar = minutes.get(start) or Bar.filler(close)
            close = bar.close
            v = {name: str(value) if isinstance(value, int) else format(value, "f")
                 for name, value in bar.decimals().items()}  # fmt: skip
            rows.setdefault(symbol, []).append(
                [str(start), v["open"], v["high"], v["low"], v["close"], v["volume"],
                 str(start + 59_999), v["quote_volume"], v["trade_count"], v["taker_buy_volume"],
                 v["taker_buy_quote_volume"], "0"]
            )  # fmt: skip
    return rows


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
