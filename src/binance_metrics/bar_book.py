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
(:class:`~binance_metrics.fragments.StaleFragment`) for the sink to merge into the stored bar. So
is a late fragment of backfilled trades for a window before the first the book holds: this run
of the dataflow never saw that minute, whose bar an earlier run stored (a dataflow restarted
without its recovery state, then the trades of a hole fetched over REST); written as it is, it
would compete with the stored bar instead of completing it.

It also produces Binance's zero-trade bars: every window between two bars the book holds that has
no trades gets O = H = L = C = previous close, volume 0 — only windows the book knows to be empty,
never one it has forgotten. When a late trade lands in such a window, or changes the close of the
bar before a run of them, the affected bars are re-emitted.

Windows after the last bar are filled too, once they are known to be empty: the dataflow closed
the window without a trade (:meth:`BarBook.close_quiet`) and the feed has vouched for every
trade up to its end (:meth:`BarBook.confirm`, from the ingestor's heartbeats), in either order.
A window the feed has not vouched for (an outage) stays open until a later trade shows, by its
id, that nothing came before it.
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
    #: The feed vouched for every trade of the windows up to this one.
    confirmed: int = -1
    #: Windows after the last bar that closed without a trade, waiting for the feed to vouch.
    closed_quiet: list[int] = field(default_factory=list)
    #: The last window after the last bar that was filled (a quiet window, closed and vouched).
    filled_through: int = -1

    def __setstate__(self, state: dict[str, object]) -> None:
        # A book snapshotted by a release before quiet windows lacks their fields.
        self.__dict__.update({"confirmed": -1, "closed_quiet": [], "filled_through": -1, **state})

    def close_quiet(self, window: int) -> BookUpdate:
        """``window`` closed in the dataflow without a trade."""
        if window <= self.confirmed:
            return self._fill_through(window)
        if window not in self.closed_quiet:
            bisect.insort(self.closed_quiet, window)
            # Bounded: an outage opens no windows, but keep the list within the history.
            del self.closed_quiet[: max(0, len(self.closed_quiet) - self.history)]
        return BookUpdate()

    def confirm(self, window: int) -> BookUpdate:
        """The feed vouched for every trade of the windows up to ``window``."""
        if window <= self.confirmed:
            return BookUpdate()
        self.confirmed = window
        cut = bisect.bisect_right(self.closed_quiet, window)
        if cut == 0:
            return BookUpdate()
        due = self.closed_quiet[cut - 1]
        del self.closed_quiet[:cut]
        return self._fill_through(due)

    def _fill_through(self, window: int) -> BookUpdate:
        """Fill the windows after the last bar up to ``window`` (none before the first bar:
        there is no close to carry)."""
        if not self.windows or window <= self.windows[-1]:
            return BookUpdate()  # between bars: the bars' own filling covers it
        last = self.windows[-1]
        start = max(last, self.filled_through)
        if window <= start:
            return BookUpdate()
        self.filled_through = window
        return BookUpdate(bars=_fillers(start, window + 1, self.bars[last].close))

    def update(self, window: int, item: Bar | Fragment, checked: bool = True) -> BookUpdate:
        """Merge ``item`` (trades of ``window``: a closed window's bar or a late fragment) in.

        ``checked``: the trades are known not to be counted yet (the seen-trades step checked
        them); otherwise those the held bar counts are taken out first (``item`` must then be a
        :class:`Fragment`, which keeps its trades).
        """
        previous = self.bars.get(window)
        if (
            previous is None
            and self.windows
            and (
                window < self.windows[-1] - self.history
                or (isinstance(item, Fragment) and item.backfilled and window < self.windows[0])
            )
        ):
            if isinstance(item, Fragment):
                item.load_trades()  # the sink merges by trade (binance_metrics.store.stale)
                return BookUpdate(forward=item)
            return BookUpdate(forward=_bar_only(window, item))
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
        is_last = position == len(self.windows) - 1
        if previous is None and position > 0 and is_last:
            # A new last bar: the minutes since the bar before it had no trades (those filled
            # already as quiet windows carry the same close: not again).
            before = self.windows[position - 1]
            after = max(before, min(self.filled_through, window - 1))
            updates += _fillers(after, window, self.bars[before].close)
        updates.append(WindowBar(window, bar))
        if previous is None or previous.close != bar.close:
            # The fillers after this bar carry its close, which is new.
            if not is_last:
                updates += _fillers(window, self.windows[position + 1], bar.close)
            elif self.filled_through > window:
                updates += _fillers(window, self.filled_through + 1, bar.close)
        if is_last and self.closed_quiet:
            # Quiet windows before the last bar are between bars now.
            del self.closed_quiet[: bisect.bisect_right(self.closed_quiet, window)]
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
