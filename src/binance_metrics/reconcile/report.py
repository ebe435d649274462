"""A reconciliation as JSON (every difference) or as a table a person reads (differing fields
side by side, long lists cut short)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from binance_metrics.export import plain as _plain
from binance_metrics.reconcile.compare import Reconciliation, Value

#: Rows of each list the table shows; JSON lists them all.
TABLE_ROWS: Final = 50


@dataclass(frozen=True, slots=True)
class Heading:
    """What was compared with what."""

    symbol: str
    interval: str
    against: str
    start_ms: int
    end_ms: int


def as_json(heading: Heading, result: Reconciliation) -> dict[str, Any]:
    return {
        "symbol": heading.symbol,
        "interval": heading.interval,
        "against": heading.against,
        "start": heading.start_ms,
        "end": heading.end_ms,
        "fields": list(result.fields),
        "matched": result.matched,
        "mismatched": [
            {
                "open_time": d.open_time_ms,
                "field": d.field,
                "ours": _value(d.ours),
                "binance": _value(d.binance),
            }
            for d in result.mismatched
        ],
        "missing_here": result.missing_here,
        "missing_there": result.missing_there,
    }


def write_json(heading: Heading, result: Reconciliation, out: TextIO) -> None:
    json.dump(as_json(heading, result), out, indent=1)
    out.write("\n")


def write_table(heading: Heading, result: Reconciliation, out: TextIO) -> None:
    lines = [
        f"{heading.symbol} {heading.interval} bars from {iso(heading.start_ms)} to "
        f"{iso(heading.end_ms)} against {heading.against}",
        f"fields compared: {', '.join(result.fields) or 'none'}",
        f"{result.matched} equal, {len(result.mismatched_minutes)} differ "
        f"({len(result.mismatched)} fields), {len(result.missing_here)} missing here, "
        f"{len(result.missing_there)} missing at Binance",
    ]
    if result.mismatched:
        rows = [("open_time", "open_time_ms", "field", "ours", "binance")]
        rows += [
            (iso(d.open_time_ms), str(d.open_time_ms), d.field, _plain(d.ours), _plain(d.binance))
            for d in result.mismatched[:TABLE_ROWS]
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines += ["", "differing fields:"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                  for r in rows]  # fmt: skip
        lines += _more(len(result.mismatched))
    for title, times in (
        ("missing here (Binance has a kline, the store has no bar)", result.missing_here),
        ("missing at Binance (the store has a bar, Binance no kline)", result.missing_there),
    ):
        if times:
            lines += ["", f"{title}:"]
            lines += [f"  {iso(ms)}  {ms}" for ms in times[:TABLE_ROWS]]
            lines += _more(len(times))
    out.write("\n".join(lines) + "\n")


def iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds" if ms % 1000 else "seconds").replace(
        "+00:00", "Z"
    )


def _value(value: Value) -> str | int:
    return value if isinstance(value, int) else _plain(value)


def _more(count: int) -> list[str]:
    return [f"  ... and {count - TABLE_ROWS} more (--format json lists all)"] * (count > TABLE_ROWS)
