"""Trade ids that no bar counts, on purpose, recorded so that the ledger does not report them.

Klines count market trades only: a futures trade whose ``X`` is not ``MARKET`` (insurance fund,
ADL) takes a trade id but belongs in no bar. The dataflow dead-letters it and records its id
here (table ``binance.accounted_trades``), so the id is accounted for rather than missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, NamedTuple

from binance_metrics.ledger.holes import ACCOUNTED_TABLE
from binance_metrics.store.clickhouse import Store

_COLUMNS: Final = ("symbol", "first_trade_id", "last_trade_id", "trade_time", "reason")


class AccountedTrades(NamedTuple):
    """Trade ids ``first_id..last_id`` of ``symbol``, at ``trade_time_ms``, in no bar because of
    ``reason`` (e.g. ``X=INSURANCE_FUND``)."""

    symbol: str
    first_id: int
    last_id: int
    trade_time_ms: int
    reason: str


def record_accounted(store: Store, entries: Sequence[AccountedTrades]) -> None:
    """Write ``entries`` (idempotent: the table keeps one row per symbol and id range)."""
    if not entries:
        return
    rows = [
        [e.symbol, e.first_id, e.last_id, datetime.fromtimestamp(e.trade_time_ms / 1000, UTC),
         e.reason]
        for e in entries
    ]  # fmt: skip
    store.insert(ACCOUNTED_TABLE, rows, _COLUMNS)
