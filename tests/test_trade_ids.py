"""IdRuns behaves as a set of integers, kept as few sorted runs."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.trade_ids import IdRuns

ranges = st.tuples(st.integers(0, 60), st.integers(0, 8)).map(lambda r: (r[0], r[0] + r[1]))


@given(st.lists(ranges, max_size=15), st.lists(ranges, max_size=15), ranges)
def test_runs_are_a_set_of_ids(added: list[tuple[int, int]], other: list[tuple[int, int]],
                               probe: tuple[int, int]) -> None:  # fmt: skip
    ids, reference = IdRuns(), set[int]()
    for first, last in added:
        ids.add(first, last)
        reference |= set(range(first, last + 1))
    runs = ids.runs
    assert all(a <= b for a, b in runs)
    assert all(b + 1 < c for (_, b), (c, _) in pairwise(runs)), "not merged"
    assert {i for a, b in runs for i in range(a, b + 1)} == reference
    assert ids.count == len(reference)
    wanted = set(range(probe[0], probe[1] + 1))
    assert ids.overlaps(*probe) == bool(wanted & reference)
    assert ids.covers(*probe) == (wanted <= reference)

    more = IdRuns()
    for first, last in other:
        more.add(first, last)
    union = ids.union(more)
    assert union.count == len(reference | {i for a, b in more.runs for i in range(a, b + 1)})
    assert ids.runs == runs, "union must not change its operands"
