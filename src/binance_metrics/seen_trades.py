"""Every trade counted once: the trade ids each of a symbol's recent windows already holds.

A fragment (:mod:`binance_metrics.fragments`) passes this per-symbol step before the windows:

* its ids are new for its window: it goes on unchanged (the live case, two integer comparisons);
* some are already counted (a file replayed twice, overlapping files, a record produced twice):
  the fragment is folded again without them; when nothing is left it is dropped;
* its window is older than the ``history`` the step remembers: the step cannot tell what was
  counted, so the fragment (with its trades) is marked stale and goes around the windows to the
  bar book, which checks it against the bar it holds, or has the sink check it against the
  stored bar (:mod:`binance_metrics.store.stale`). It is never written alone.

``history`` must cover the bar book's history plus the windows that can still be open, so that
a window this step forgets is closed and known to the book or the store (the dataflow sets it).
The state is bounded: windows more than ``history`` behind the newest are forgotten.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

from binance_metrics.fragments import Fragment
from binance_metrics.snapshots import PickleCopied
from binance_metrics.trade_ids import IdRuns

log = logging.getLogger(__name__)


@dataclass
class Admitted:
    """What :meth:`SeenTrades.admit` made of a fragment."""

    fresh: Fragment | None = None
    stale: Fragment | None = None
    duplicates: int = 0
    #: Aggregates that overlap counted trades only in part: neither counted nor lost silently.
    conflicts: int = 0


@dataclass
class SeenTrades(PickleCopied):
    """The state of one symbol. Picklable, so Bytewax recovery snapshots it with the offsets."""

    history: int
    ids: dict[int, IdRuns] = field(default_factory=dict)
    windows: list[int] = field(default_factory=list)  # sorted keys of ``ids``

    def needs_trades(self, fragment: Fragment) -> bool:
        """Whether :meth:`admit` (or, for a stale fragment, the book or the sink after it) will
        look at the fragment's trades, not only at its bar: a reader that folds trades in bulk
        keeps them back until asked (:mod:`binance_metrics.columnar`)."""
        if not fragment.consecutive:
            return True
        window = fragment.window
        if self.windows and window < self.windows[-1] - self.history:
            return True
        seen = self.ids.get(window)
        bar = fragment.bar
        return seen is not None and seen.overlaps(bar.first_trade_id, bar.last_trade_id)

    def admit(self, fragment: Fragment) -> Admitted:
        if fragment.pending is not None and self.needs_trades(fragment):
            fragment.load_trades()
        window = fragment.window
        if self.windows and window < self.windows[-1] - self.history:
            return Admitted(stale=fragment)
        seen = self.ids.get(window)
        if seen is None:
            seen = self.ids[window] = IdRuns()
            bisect.insort(self.windows, window)
            self._forget_old()
        bar = fragment.bar
        if fragment.consecutive and not seen.overlaps(bar.first_trade_id, bar.last_trade_id):
            seen.add(bar.first_trade_id, bar.last_trade_id)
            bar.ids = IdRuns([(bar.first_trade_id, bar.last_trade_id)])
            return Admitted(fresh=fragment)
        rest, duplicates, conflicts = fragment.without(seen)
        for trade in conflicts:
            log.error(
                "%s: aggregate of trades %d..%d overlaps trades already counted in part; it "
                "cannot be split, so it is left out of the bar (the ledger reports the gap)",
                fragment.symbol,
                trade.first_id,
                trade.last_id,
            )
        if rest is not None:
            rest.bar.ids = rest.ids()
            for first, last in rest.bar.ids.runs:
                seen.add(first, last)
        return Admitted(fresh=rest, duplicates=duplicates, conflicts=len(conflicts))

    def _forget_old(self) -> None:
        horizon = self.windows[-1] - self.history
        cut = bisect.bisect_left(self.windows, horizon)
        if cut > 0:
            for window in self.windows[:cut]:
                del self.ids[window]
            del self.windows[:cut]
