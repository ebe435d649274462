"""Stored bars read as klines, in pieces when the range holds more than one query returns."""

from __future__ import annotations

import pytest

from binance_metrics.reconcile import stored
from binance_metrics.reconcile.stored import stored_klines
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars

START, END = 1570752000000, 1570752000000 + 2880 * 60_000


def test_a_long_range_is_read_in_pieces_oldest_first(
    xrpeth_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = stored_klines(xrpeth_store, "XRPETH", "1m", START, END)
    monkeypatch.setattr(stored, "_PIECE", 1000)
    pieces = stored_klines(xrpeth_store, "XRPETH", "1m", START, END)
    assert pieces == whole and len(whole) == 2880
    assert [k.open_time_ms for k in whole] == [START + i * 60_000 for i in range(2880)]
    bar = fetch_bars(xrpeth_store, "XRPETH")[1234]
    assert whole[1234].values["quote_volume"] == bar.quote_volume
    assert stored_klines(xrpeth_store, "XRPETH", "1h", START, END)[0].values["trade_count"] == (
        sum(int(k.values["trade_count"]) for k in whole[:60])
    )
