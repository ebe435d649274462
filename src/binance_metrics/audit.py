"""``binance-metrics audit``: every hole in the stored bars' trade ids, as a table or JSON.

Exit status 0 when the bars are complete, 1 when there is a hole (docs/ledger.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from binance_metrics.ledger.holes import Hole, find_holes
from binance_metrics.markets import Market
from binance_metrics.settings import Settings
from binance_metrics.store.clickhouse import open_store

COLUMNS: Final = (
    "symbol", "kind", "first_missing_id", "last_missing_id", "missing_trades",
    "first_minute", "last_minute",
)  # fmt: skip


def iso_minute(ms: int) -> str:
    """An open time as ISO 8601 UTC (``2024-08-09T00:01:00Z``)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hole_record(hole: Hole) -> dict[str, Any]:
    """A hole as the JSON output has it: its fields, and the minutes also in ISO."""
    return {
        **asdict(hole),
        "first_minute": iso_minute(hole.first_minute_ms),
        "last_minute": iso_minute(hole.last_minute_ms),
    }


def audit(
    settings: Settings,
    out: TextIO,
    *,
    symbol: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    fmt: str = "table",
    market: Market | None = None,
) -> int:
    """Print the holes of ``market``'s bars (default: ``settings.MARKET``) in the store of
    ``settings`` to ``out``; 0 if there is none, else 1."""
    store = open_store(settings.clickhouse_dsn, market or settings.MARKET)
    holes = find_holes(
        store,
        symbol=symbol,
        start_ms=None if start is None else int(start.timestamp() * 1000),
        end_ms=None if end is None else int(end.timestamp() * 1000),
    )
    if fmt == "json":
        json.dump([hole_record(hole) for hole in holes], out, indent=1)
        out.write("\n")
    elif not holes:
        out.write("complete: every trade id between the stored bars is counted once\n")
    else:
        _write_table(holes, out)
    return 1 if holes else 0


def _write_table(holes: list[Hole], out: TextIO) -> None:
    rows = [list(COLUMNS)]
    for hole in holes:
        record = hole_record(hole)
        rows.append([str(record[name]) for name in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")
    gaps = sum(hole.missing_trades for hole in holes if hole.kind == "gap")
    doubled = sum(hole.missing_trades for hole in holes if hole.kind == "overlap")
    out.write(f"{len(holes)} holes: {gaps} trades missing, {doubled} counted twice\n")
