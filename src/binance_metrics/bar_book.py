"""Per-symbol book of recent bars: merges late fragments and fills minutes without trades.

Bytewax drops a key's window state once its windows close, so a late trade comes back as a
second, partial bar for a minute already written (docs/architecture.md, Bytewax 0.21.1). The
book keeps the full bars of the last ``history`` windows, merges every fragment into its minute
with the exact monoid, and emits the corrected full bar — never the fragment alone — so the store
only ever sees complete bars.

What reaches the book has been checked for repeated trade ids by the seen-trades step
(:mod:`binance_metrics.seen_trades`), except fragments for windows that step no longer
remembers: the book takes out of those the trades its bar already counts. A fragment for a window
older than the book's own history is not the book's to merge: it is forwarded
(:class:`~binance_metrics.fragments.StaleFragment`) for the sink to merge into the stored bar.

It also produces Binance's zero-trade bars: every window between two bars the book holds that has
no trades gets O = H = L = C = previous close, volume 0 — only windows the book knows to be empty,
never one it has forgotten. When a late trade lands in such a window, or changes the close of the
bar before a run of them, the affected bars are re-emitted.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import NamedTuple

from binance_metrics.bars import Bar, merge
from binance_metrics.fragments import Fragment
from binance_metrics.snapshots import PickleCopied
from binance_metrics.trade_ids import IdRuns


class WindowBar(NamedTuple):
    """A bar to write and its window index (window i starts at i * length)."""

    window: int
    bar: Bar


@dataclass
class BookUpdate:
    """What one :meth:`BarBook.update` came to."""

    bars: list[WindowBar] = field(default_factory=list)
    #: A fragment for a window older than the history, for the sink to merge.
    forward: Fragment | None = None
    duplicates: int = 0  # trades the held bar already counted, dropped
    conflicts: int = 0  # aggregates overlapping counted trades in part, left out (logged)


@dataclass
class BarBook(PickleCopied):
    """The state of one symbol. Picklable, so Bytewax recovery snapshots it."""

    history: int
    bars: dict[int, Bar] = field(default_factory=dict)
    windows: list[int] = field(default_factory=list)  # sorted keys of ``bars``

    def update(self, window: int, item: Bar | Fragment, checked: bool = True) -> BookUpdate:
        """Merge ``item`` (trades of ``window``: a closed window's bar or a late fragment) in.

        ``checked``: the trades are known not to be counted yet (the seen-trades step checked
        them); otherwise those the held bar counts are taken out first (``item`` must then be a
        :class:`Fragment`, which keeps its trades).
        """
        previous = self.bars.get(window)
        if previous is None and self.windows and window < self.windows[-1] - self.history:
            fragment = item if isinstance(item, Fragment) else _bar_only(window, item)
            return BookUpdate(forward=fragment)
        result = BookUpdate()
        if checked:
            fragment_bar = item.bar if isinstance(item, Fragment) else item
        else:
            assert isinstance(item, Fragment), "unchecked trades must come with their trades"
            seen = previous.ids if previous is not None and previous.ids is not None else IdRuns()
            rest, result.duplicates, conflicts = item.without(seen)
            result.conflicts = sum(t.last_id - t.first_id + 1 for t in conflicts)
            if rest is None:
                return result
            rest.bar.ids = rest.ids()
            fragment_bar = rest.bar
        if fragment_bar.is_empty:
            return result
        bar = merge(previous if previous is not None else Bar(), fragment_bar)
        self.bars[window] = bar
        if previous is None:
            bisect.insort(self.windows, window)
        position = bisect.bisect_left(self.windows, window)

        updates = result.bars
        if previous is None and position > 0 and position == len(self.windows) - 1:
            # A new last bar: the minutes since the bar before it had no trades.
            before = self.windows[position - 1]
            updates += _fillers(before, window, self.bars[before].close)
        updates.append(WindowBar(window, bar))
        if position + 1 < len(self.windows) and (previous is None or previous.close != bar.close):
            # The fillers after this bar carry its close, which is new.
            updates += _fillers(window, self.windows[position + 1], bar.close)
        self._forget_old()
        return result

    def _forget_old(self) -> None:
        horizon = self.windows[-1] - self.history
        cut = bisect.bisect_left(self.windows, horizon)
        if cut > 0:
            for window in self.windows[:cut]:
                del self.bars[window]
            del self.windows[:cut]


def _bar_only(window: int, bar: Bar) -> Fragment:
    """A checked bar as a fragment without trades (its ``ids`` say which trades it holds)."""
    return Fragment("", window, bar, 0, [], consecutive=False)


def _fillers(after: int, before: int, close: int) -> list[WindowBar]:
    return [WindowBar(window, Bar.filler(close)) for window in range(after + 1, before)]
