"""The ledger's SQL against a plain-Python reference that counts every trade id one by one.

Bars are written to the real store (chDB) through the production insert path, from random id
sequences split into bars, with bars deleted, ids taken out of a bar, ids counted twice (by two
bars, or within a bar whose ids are not known), and ids accounted for without a bar.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.ledger.accounted import AccountedTrades, record_accounted
from binance_metrics.ledger.holes import ACCOUNTED_TABLE, Hole, find_holes
from binance_metrics.store.clickhouse import Store
from binance_metrics.trade_ids import IdRuns
from tests.support.strategies import BASE_TIME_MS

MINUTE_MS = 60_000


@dataclass
class StoredBar:
    """What the ledger reads of a bar: its count, its span and its id runs (None: not known)."""

    symbol: str
    minute_ms: int
    trade_count: int
    first: int
    last: int
    runs: list[tuple[int, int]] | None

    def ids(self) -> list[tuple[int, int]]:
        """The ids the bar stands for: its runs, or (not known) its whole span."""
        return self.runs if self.runs is not None else [(self.first, self.last)]


@dataclass
class Table:
    bars: list[StoredBar]
    fillers: list[tuple[str, int]]  # zero-trade minutes: no ids, nothing to check
    accounted: list[AccountedTrades]


def _runs(ids: set[int]) -> list[tuple[int, int]]:
    runs = IdRuns()
    for i in ids:
        runs.add(i, i)
    return runs.runs


@st.composite
def tables(draw: st.DrawFn) -> Table:
    """Bars of one or two symbols, cut from consecutive ids, then damaged at random."""
    table = Table([], [], [])
    for symbol in draw(st.sampled_from([["AAAUSDT"], ["AAAUSDT", "BBBUSDT"]])):
        next_id = draw(st.integers(0, 10**12))
        minute = BASE_TIME_MS + draw(st.integers(0, 5)) * MINUTE_MS
        chunks: list[tuple[set[int], int]] = []
        for _ in range(draw(st.integers(1, 8))):
            size = draw(st.integers(1, 6))
            chunks.append((set(range(next_id, next_id + size)), minute))
            next_id += size
            step = draw(st.sampled_from([1, 1, 2, 5]))
            if step > 1 and draw(st.booleans()):
                table.fillers.append((symbol, minute + MINUTE_MS))
            minute += step * MINUTE_MS
        all_ids = sorted(set().union(*(ids for ids, _ in chunks)))
        for ids, at in chunks:
            action = draw(
                st.sampled_from(["keep", "keep", "delete", "take_out", "account", "double",
                                 "unknown", "overcount"])
            )  # fmt: skip
            if action == "delete":
                continue
            extra = 0
            if action in ("take_out", "account"):
                taken = draw(st.sets(st.sampled_from(sorted(ids)), max_size=len(ids) - 1))
                ids = ids - taken
                if action == "account":
                    table.accounted += [
                        AccountedTrades(symbol, i, i, at + 7, "X=ADL") for i in taken
                    ]
            elif action == "double":  # ids of other bars counted here too
                ids = ids | draw(st.sets(st.sampled_from(all_ids), min_size=1, max_size=3))
            elif action == "overcount":  # a trade counted twice within the bar
                extra = draw(st.integers(1, 2))
            elif action == "unknown" and len(ids) > 2:  # an older release: no ids, count off
                extra = draw(st.integers(-1, 2))
            runs = _runs(ids)
            known = action != "unknown"
            table.bars.append(
                StoredBar(symbol, at, len(ids) + extra, runs[0][0], runs[-1][1],
                          runs if known else None)
            )  # fmt: skip
    return table


def _store(store: Store, table: Table) -> None:
    store.command("TRUNCATE TABLE binance.ohlcv")
    store.command(f"TRUNCATE TABLE {ACCOUNTED_TABLE}")
    updates = [BarUpdate(symbol, at, Bar.filler(1)) for symbol, at in table.fillers]
    for stored in table.bars:
        bar = Bar(1, 1, 1, 1, 1, 1, stored.trade_count, 0, 0, stored.first, stored.last)
        # Without ids, a bar is stored with its one run when complete, else with none.
        bar.ids = IdRuns(list(stored.runs)) if stored.runs is not None else None
        updates.append(BarUpdate(stored.symbol, stored.minute_ms, bar))
    store.insert_bars(updates)
    record_accounted(store, table.accounted)


def reference_holes(table: Table) -> list[Hole]:
    """The holes, id by id: ids nothing counts, ids counted more than once, miscounted bars."""
    holes: list[Hole] = []
    for symbol in sorted({b.symbol for b in table.bars} | {a.symbol for a in table.accounted}):
        bars = [b for b in table.bars if b.symbol == symbol]
        flat = [(lo, hi, b.minute_ms) for b in bars for lo, hi in b.ids()]
        flat += [
            (a.first_id, a.last_id, a.trade_time_ms // MINUTE_MS * MINUTE_MS)
            for a in table.accounted
            if a.symbol == symbol
        ]
        counts: Counter[int] = Counter()
        for lo, hi, _ in flat:
            counts.update(range(lo, hi + 1))

        def minutes_touching(
            first: int, last: int, flat: list[tuple[int, int, int]] = flat
        ) -> tuple[int, int]:
            found = [m for lo, hi, m in flat if lo <= last and hi >= first]
            return min(found), max(found)

        i, high = min(counts), max(counts)
        while i <= high:
            j = i
            if counts[i] == 0:
                while counts[j + 1] == 0:
                    j += 1
                holes.append(Hole(symbol, "gap", i, j, j - i + 1, *minutes_touching(i - 1, j + 1)))
            elif counts[i] > 1:
                while counts[j + 1] > 1:
                    j += 1
                extra = sum(counts[k] - 1 for k in range(i, j + 1))
                holes.append(Hole(symbol, "overlap", i, j, extra, *minutes_touching(i, j)))
            i = j + 1
        for bar in bars:
            excess = bar.trade_count - sum(hi - lo + 1 for lo, hi in bar.ids())
            if excess:
                kind: Literal["gap", "overlap"] = "overlap" if excess > 0 else "gap"
                holes.append(
                    Hole(symbol, kind, bar.first, bar.last, abs(excess), bar.minute_ms,
                         bar.minute_ms)
                )  # fmt: skip
    return sorted(holes, key=_order)


def _order(hole: Hole) -> tuple[object, ...]:
    return (hole.symbol, hole.first_minute_ms, hole.first_missing_id, hole.kind,
            hole.last_missing_id, hole.missing_trades, hole.last_minute_ms)  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables())
def test_find_holes_equals_the_id_by_id_reference(store: Store, table: Table) -> None:
    _store(store, table)
    assert sorted(find_holes(store), key=_order) == reference_holes(table)
