"""The forming bar: a symbol's current window as its trades arrive, before the window closes.

:class:`FormingWindow` folds the fragments that the seen-trades step let through (each trade
once) into the newest window it has seen, with the exact monoid, so a snapshot is exactly the
bar of the window's trades so far. Fragments of the window before it still count towards that
window's close, which a new window without trades shows (O = H = L = C = that close, volume 0,
as Binance's kline stream does): a heartbeat that vouches for a time in a newer window moves the
forming bar on even when nothing trades. Older fragments belong to closed bars and are ignored.

A forming bar is never a closed bar: it is stored apart (``binance.ohlcv_forming``) and shown
only while no closed bar of its window exists (docs/live.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from binance_metrics.bars import Bar, merge


class FormingUpdate(NamedTuple):
    """A snapshot of one symbol's forming bar: what the dataflow emits, the store keeps."""

    symbol: str
    window_start_ms: int
    bar: Bar  # a filler (trade count 0) for a window without trades yet


@dataclass
class FormingWindow:
    """The state of one symbol. Picklable, so Bytewax recovery snapshots it."""

    window: int = -1
    bar: Bar = field(default_factory=Bar)
    #: The window before ``window`` that had trades, and its bar (for the close a quiet window
    #: repeats).
    previous_window: int = -1
    previous: Bar = field(default_factory=Bar)

    def add(self, window: int, bar: Bar) -> bool:
        """Fold in the bar of fresh trades of ``window``; return whether the snapshot changed."""
        if bar.is_empty:
            return False
        if window > self.window:
            self._move_to(window)
        if window == self.window:
            self.bar = merge(self.bar, bar)
            return True
        if window == self.previous_window:
            self.previous = merge(self.previous, bar)
            return self.bar.is_empty  # a quiet window shows the previous close
        if window > self.previous_window and self.bar.is_empty:
            # A window between the last one with trades and a quiet current one (heartbeats
            # moved on while its trades were on their way): it is the previous one now.
            self.previous_window, self.previous = window, bar
            return True
        return False

    def reach(self, window: int) -> bool:
        """The feed vouched for a time in ``window``: it is the current one, trades or not."""
        if window <= self.window:
            return False
        self._move_to(window)
        return not self.previous.is_empty

    def _move_to(self, window: int) -> None:
        if not self.bar.is_empty:
            self.previous_window, self.previous = self.window, self.bar
        self.window, self.bar = window, Bar()

    def snapshot(self) -> tuple[int, Bar] | None:
        """``(window, bar)`` of the forming bar; a quiet window repeats the previous close;
        None before the first trade."""
        if not self.bar.is_empty:
            return self.window, self.bar
        if self.previous.is_empty:
            return None
        return self.window, Bar.filler(self.previous.close)
