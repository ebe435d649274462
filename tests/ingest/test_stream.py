"""Placing new symbols on shards: into the shards with room first, in order, then new shards,
never more than a connection takes; checked against a plain one-by-one reference."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.ingest.stream import place


def reference(loads: list[int], symbols: list[str], limit: int) -> list[list[str]]:
    """Every shard's new symbols, the new shards after the existing ones, one symbol at a time."""
    shards: list[list[str]] = [[] for _ in loads]
    sizes = list(loads)
    for symbol in symbols:
        index = next((i for i, size in enumerate(sizes) if size < limit), None)
        if index is None:
            shards.append([])
            sizes.append(0)
            index = len(sizes) - 1
        shards[index].append(symbol)
        sizes[index] += 1
    return shards


@given(
    limit=st.integers(1, 8),
    loads=st.lists(st.integers(0, 8), max_size=5),
    count=st.integers(0, 40),
)
def test_place_fills_shards_with_room_then_opens_new_ones(
    limit: int, loads: list[int], count: int
) -> None:
    symbols = [f"S{n}" for n in range(count)]
    extra, groups = place(loads, symbols, limit)
    assert [*extra, *map(list, groups)] == reference(loads, symbols, limit)
    assert all(len(group) <= limit for group in groups)


def test_place_never_exceeds_binance_limit() -> None:
    extra, groups = place([1000], [f"S{n}" for n in range(2000)], 5000)
    assert len(extra[0]) == 24 and [len(g) for g in groups] == [1024, 952]
