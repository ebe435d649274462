"""A Bytewax test source with several partitions, and the frozen clock the window tests use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

#: ``now_getter`` of the window tests: the event clock's system time never moves, so windows
#: close by trade time alone and a test is deterministic.
FROZEN_NOW = datetime(2030, 1, 1, tzinfo=UTC)


class _ListPartition(StatefulSourcePartition[bytes, int]):
    def __init__(self, items: Sequence[bytes], batch_size: int, resume: int | None) -> None:
        self._items, self._batch_size, self._next = items, batch_size, resume or 0

    def next_batch(self) -> list[bytes]:
        if self._next >= len(self._items):
            raise StopIteration
        batch = list(self._items[self._next : self._next + self._batch_size])
        self._next += len(batch)
        return batch

    def snapshot(self) -> int:
        return self._next


class ListPartitionsSource(FixedPartitionedSource[bytes, int]):
    """Like bytewax's TestingSource, but with several partitions (as Kafka has)."""

    def __init__(self, partitions: Sequence[Sequence[bytes]], batch_size: int) -> None:
        self.partitions, self.batch_size = partitions, batch_size

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(len(self.partitions))]

    def build_part(self, step_id: str, for_part: str, resume: int | None) -> _ListPartition:
        return _ListPartition(self.partitions[int(for_part)], self.batch_size, resume)
