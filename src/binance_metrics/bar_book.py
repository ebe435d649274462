"""Per-symbol book of recent bars: merges late fragments and fills minutes without trades.

Bytewax drops a key's window state once its windows close, so a late trade comes back as a
second, partial bar for a minute already written (docs/architecture.md, Bytewax 0.21.1). The
book keeps the full bars of the last ``history`` windows, merges every fragment into its minute
with the exact monoid, and emits the corrected full bar — never the fragment alone — so the store
only ever sees complete bars. A fragment of an older window never reaches the book: the
seen-trades step before the windows sends it to the sink (:mod:`binance_metrics.seen_trades`).

It also produces Binance's zero-trade bars: every window between a symbol's first and last trade
that has no trades gets O = H = L = C = previous close, volume 0. When a late trade lands in such a
window, or changes the close of the bar before a run of them, the affected bars are re-emitted.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

from binance_metrics.bars import Bar, merge


class WindowBar(NamedTuple):
    """What the book emits: a bar and its window index (window i starts at i * length)."""

    window: int
    bar: Bar


@dataclass
class BarBook:
    """The state of one symbol. Picklable, so Bytewax recovery snapshots it."""

    history: int
    bars: dict[int, Bar] = field(default_factory=dict)
    windows: list[int] = field(default_factory=list)  # sorted keys of ``bars``

    def update(self, window: int, fragment: Bar) -> list[WindowBar]:
        """Merge ``fragment`` (trades of ``window``) in and return every bar that changed."""
        if fragment.is_empty:
            return []
        previous = self.bars.get(window)
        bar = merge(previous, fragment) if previous is not None else merge(Bar(), fragment)
        self.bars[window] = bar
        if previous is None:
            bisect.insort(self.windows, window)
        position = bisect.bisect_left(self.windows, window)

        updates: list[WindowBar] = []
        if previous is None and position > 0 and position == len(self.windows) - 1:
            # A new last bar: the minutes since the bar before it had no trades.
            before = self.windows[position - 1]
            updates += _fillers(before, window, self.bars[before].close)
        updates.append(WindowBar(window, bar))
        if position + 1 < len(self.windows) and (previous is None or previous.close != bar.close):
            # The fillers after this bar carry its close, which is new.
            updates += _fillers(window, self.windows[position + 1], bar.close)
        self._forget_old()
        return updates

    def _forget_old(self) -> None:
        horizon = self.windows[-1] - self.history
        cut = bisect.bisect_left(self.windows, horizon)
        if cut > 0:
            for window in self.windows[:cut]:
                del self.bars[window]
            del self.windows[:cut]


def _fillers(after: int, before: int, close: int) -> list[WindowBar]:
    return [WindowBar(window, Bar.filler(close)) for window in range(after + 1, before)]
