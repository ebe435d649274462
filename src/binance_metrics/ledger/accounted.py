"""Trade ids that no bar counts, on purpose, recorded so that the ledger does not report them.

Klines count market trades only: a futures trade whose ``X`` is not ``MARKET`` (insurance fund,
ADL) takes a trade id but belongs in no bar. The dataflow dead-letters it and records its id
here (table ``binance.accounted_trades``), so the id is accounted for rather than missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, NamedTuple

from binance_metrics.fragments import NOT_MARKET
from binance_metrics.ledger.holes import ACCOUNTED_TABLE
from binance_metrics.store.clickhouse import Store
from binance_metrics.trades import Rejected, decode_trade

_COLUMNS: Final = ("market", "symbol", "first_trade_id", "last_trade_id", "trade_time", "reason")


class AccountedTrades(NamedTuple):
    """Trade ids ``first_id..last_id`` of ``symbol``, at ``trade_time_ms``, in no bar because of
    ``reason`` (e.g. ``X=INSURANCE_FUND``)."""

    symbol: str
    first_id: int
    last_id: int
    trade_time_ms: int
    reason: str


def record_accounted(store: Store, entries: Sequence[AccountedTrades]) -> None:
    """Write ``entries`` of ``store.market`` (idempotent: the table keeps one row per market,
    symbol and id range)."""
    if not entries:
        return
    rows = [
        [store.market, e.symbol, e.first_id, e.last_id,
         datetime.fromtimestamp(e.trade_time_ms / 1000, UTC), e.reason]
        for e in entries
    ]  # fmt: skip
    store.insert(ACCOUNTED_TABLE, rows, _COLUMNS)


def accounted_trades(rejected: Rejected) -> AccountedTrades | None:
    """The ids of a dead-lettered trade that klines exclude on purpose, or None (any other
    rejection: its ids, if it has any, are not accounted for)."""
    if rejected.kind != NOT_MARKET:
        return None
    trade = decode_trade(rejected.payload)
    return AccountedTrades(
        trade.symbol, trade.trade_id, trade.last_trade_id, trade.trade_time_ms,
        f"X={trade.trade_type}",
    )  # fmt: skip
