"""Sets of trade ids, kept as sorted runs of consecutive ids.

Binance trade ids are consecutive per symbol, so the trades of a minute are almost always one run
``[first, last]``: the set costs two integers however many trades it holds. The dataflow keeps one
per symbol and minute to count every trade once, whatever the input repeats (a file replayed
twice, overlapping files, a producer retrying onto a shared topic).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from operator import itemgetter


@dataclass(slots=True)
class IdRuns:
    """Disjoint, non-adjacent inclusive runs ``(first, last)``, sorted. Picklable."""

    runs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(last - first + 1 for first, last in self.runs)

    def overlaps(self, first: int, last: int) -> bool:
        """Whether any id in ``first..last`` is in the set."""
        i = bisect.bisect_left(self.runs, first, key=_end)  # the first run ending at or after
        return i < len(self.runs) and self.runs[i][0] <= last

    def covers(self, first: int, last: int) -> bool:
        """Whether every id in ``first..last`` is in the set."""
        i = bisect.bisect_left(self.runs, first, key=_end)
        return i < len(self.runs) and self.runs[i][0] <= first and self.runs[i][1] >= last

    def copy(self) -> IdRuns:
        return IdRuns(list(self.runs))

    def union(self, other: IdRuns) -> IdRuns:
        small, large = sorted((self, other), key=lambda ids: len(ids.runs))
        result = large.copy()
        for first, last in small.runs:
            result.add(first, last)
        return result

    def add(self, first: int, last: int) -> None:
        """Add ``first..last``, merging it with the runs it overlaps or touches."""
        runs = self.runs
        i = bisect.bisect_left(runs, first - 1, key=_end)
        j = bisect.bisect_right(runs, last + 1, key=_start)
        if i < j:
            first, last = min(first, runs[i][0]), max(last, runs[j - 1][1])
        runs[i:j] = [(first, last)]


_start = itemgetter(0)
_end = itemgetter(1)
