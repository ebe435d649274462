"""How many trades an archive holds, estimated from its size and its first rows, for the time
remaining of a progress bar (reading the whole file to count would cost as much as a replay)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Final

from binance_metrics.archive.layout import DataKind

_SAMPLE: Final = 256 * 1024  # bytes of the CSV read: a few thousand rows


def estimated_trades(path: Path, kind: DataKind) -> int:
    """Raw trades in the zip ``path`` (an aggTrade counts ``last - first + 1``), estimated from
    the CSV's uncompressed size and the trades per byte of its first rows; 0 if unknown."""
    try:
        with zipfile.ZipFile(path) as archive:
            (member,) = archive.infolist()
            with archive.open(member) as csv:
                sample = csv.read(_SAMPLE)
    except (OSError, ValueError, zipfile.BadZipFile):
        return 0
    whole = sample if len(sample) == member.file_size else sample[: sample.rfind(b"\n") + 1]
    trades = 0
    for line in whole.splitlines():
        cells = line.split(b",")
        if not cells[0].strip().isdigit():
            continue  # a header
        try:
            trades += int(cells[4]) - int(cells[3]) + 1 if kind == "aggTrades" else 1
        except (IndexError, ValueError):
            continue
    return round(trades * member.file_size / len(whole)) if whole else 0
