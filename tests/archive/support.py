"""Archives in data.binance.vision's layout, built from the real recordings of tests/data.

Only the layout changes (split by day, zipped, a ``.CHECKSUM`` beside): prices, quantities, ids
and times are the recordings' own.
"""

from __future__ import annotations

import csv
import json
from calendar import monthrange
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from binance_metrics.archive.layout import DataKind, plan
from binance_metrics.markets import Market
from binance_metrics.testing.archive import LocalArchive
from tests.support.data import XRPETH_AGG_TRADES


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def path_of(symbol: str, period: str, kind: DataKind = "aggTrades", market: Market = "spot") -> str:
    """The archive's path of ``symbol``'s file for ``period`` (``2019-10`` or ``2019-10-11``)."""
    first = date.fromisoformat(period + ("-01" if len(period) == 7 else ""))
    last = first.replace(day=monthrange(first.year, first.month)[1]) if len(period) == 7 else first
    (file,) = plan(symbol, market, kind, first, last)
    return file.path


def xrpeth_rows_by_day() -> dict[str, list[str]]:
    """The XRPETH aggTrades rows (data.binance.vision layout) of 2019-10-11 and 2019-10-12."""
    days: dict[str, list[str]] = defaultdict(list)
    for line in XRPETH_AGG_TRADES.read_text().splitlines():
        days[day_of(int(line.split(",")[5]))].append(line)
    assert sorted(days) == ["2019-10-11", "2019-10-12"]
    return dict(days)


def publish_xrpeth(archive: LocalArchive, *, monthly: bool, daily: bool) -> None:
    """XRPETH's two days as daily files and/or as the monthly file of October 2019."""
    days = xrpeth_rows_by_day()
    if daily:
        for day, rows in days.items():
            archive.publish(path_of("XRPETH", day), "\n".join(rows) + "\n")
    if monthly:
        rows = [row for day in sorted(days) for row in days[day]]
        archive.publish(path_of("XRPETH", "2019-10"), "\n".join(rows) + "\n")


def trades_rows_from_stream_csv(path: Path) -> list[str]:
    """A trade-stream CSV (TimestampOfReceive,...) as data.binance.vision ``trades`` rows,
    ``id,price,qty,quote_qty,time,is_buyer_maker,is_best_match``, times as the stream has them
    (microseconds for TRXUSDT 2025, like the spot archives since 2025)."""
    with path.open(newline="") as f:
        return [
            _trades_row(row["TradeId"], row["Price"], row["Quantity"], row["TransactionTime"],
                        row["IsBuyerMarketMaker"] == "1", row["MUnknownParameter"] == "1")
            for row in csv.DictReader(f)
        ]  # fmt: skip


def trades_rows_from_capture(path: Path) -> list[tuple[int, str]]:
    """A JSON-lines ``@trade`` capture as (trade time ms, data.binance.vision trades row)."""
    rows = []
    for line in path.read_text().splitlines():
        data = json.loads(line)["data"]
        row = _trades_row(
            str(data["t"]), data["p"], data["q"], str(data["T"]), data["m"], data["M"]
        )
        rows.append((int(data["T"]), row))
    return rows


def _trades_row(
    trade_id: str, price: str, qty: str, time: str, buyer_maker: bool, best: bool
) -> str:
    quote = Decimal(price) * Decimal(qty)
    return f"{trade_id},{price},{qty},{quote},{time},{buyer_maker},{best}"
