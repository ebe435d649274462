"""The store as the resume's checkpoint, on the real store (chDB)."""

from __future__ import annotations

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.store.checkpoint import StoredTail, record_start, start_points, stored_tails
from binance_metrics.store.clickhouse import Store

MINUTE_MS = 60_000
T0 = 1_723_161_600_000


def bar(first: int, last: int) -> Bar:
    folded = Bar()
    for trade_id in range(first, last + 1):
        folded.add(100 * 10**8, 10**8, trade_id, trade_id, buyer_is_maker=False)
    return folded


def test_the_tail_is_the_last_stored_minute_with_trades(empty_store: Store) -> None:
    empty_store.insert_bars(
        [
            BarUpdate("AAAUSDT", T0, bar(10, 19)),
            BarUpdate("AAAUSDT", T0 + MINUTE_MS, bar(20, 24)),
            BarUpdate("AAAUSDT", T0 + 2 * MINUTE_MS, Bar.filler(100 * 10**8)),  # no trades
            BarUpdate("BBBUSDT", T0, bar(5, 5)),
        ]
    )
    tails = stored_tails(empty_store, ["AAAUSDT", "BBBUSDT", "CCCUSDT"])
    assert tails == {
        "AAAUSDT": StoredTail(T0 + MINUTE_MS, 20, 24),
        "BBBUSDT": StoredTail(T0, 5, 5),
    }
    assert tails["AAAUSDT"].resume_after == 19, "the last minute is fetched again, whole"


def test_the_first_start_is_kept(empty_store: Store) -> None:
    empty_store.command("TRUNCATE TABLE binance.ingest_starts")
    record_start(empty_store, "AAAUSDT", 500)
    record_start(empty_store, "AAAUSDT", 900)  # a later run that had nothing to resume from
    assert start_points(empty_store, ["AAAUSDT", "BBBUSDT"]) == {"AAAUSDT": 500}
