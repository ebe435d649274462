"""Cheap snapshots of per-symbol state.

Bytewax's ``stateful_flat_map`` snapshots every key its epoch touched with ``copy.deepcopy``,
whether recovery is on or not (bytewax 0.21.1). For the dataflow's per-symbol state (a day of
bars and trade-id runs) Python's deepcopy walks every object one call at a time; with hundreds
of symbols it took a third of the dataflow's time (docs/performance.md). A pickle round trip
makes the same independent copy in C.
"""

from __future__ import annotations

import pickle
from typing import Any, Self


class PickleCopied:
    """A state whose ``copy.deepcopy`` is a pickle round trip (it must be picklable anyway:
    recovery stores it)."""

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        copied: Self = pickle.loads(pickle.dumps(self, pickle.HIGHEST_PROTOCOL))
        return copied
