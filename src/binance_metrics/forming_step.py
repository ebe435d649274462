"""The dataflow's forming-bar step: each symbol's current window, emitted at most every
``every`` while it changes (:mod:`binance_metrics.forming` holds the fold).

Bytewax's windows emit only when they close, so this step runs beside them, keyed by symbol,
on the same fresh fragments and on the feed's heartbeats. It is a ``stateful`` operator, not a
``stateful_map``, for its timer: a change that comes within ``every`` of the last snapshot is
emitted when the interval is up (``notify_at``), not at the next trade, so the last trades
before a quiet spell show without delay.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final, cast

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators import KeyedStream, StatefulLogic
from typing_extensions import override

from binance_metrics.bars import Bar
from binance_metrics.forming import FormingUpdate, FormingWindow
from binance_metrics.fragments import Fragment
from binance_metrics.heartbeats import Heartbeat

_NOTHING: Final[list[tuple[int, Bar]]] = []


class _FormingLogic(StatefulLogic[Fragment | Heartbeat, tuple[int, Bar], FormingWindow]):
    def __init__(
        self,
        state: FormingWindow | None,
        every: timedelta,
        window_ms: int,
        now: Callable[[], datetime],
    ) -> None:
        self.state = state or FormingWindow()
        self.every = every
        self.window_ms = window_ms
        self.now = now
        self.emitted_at: datetime | None = None
        self.pending = False

    @override
    def on_item(self, value: Fragment | Heartbeat) -> tuple[list[tuple[int, Bar]], bool]:
        if isinstance(value, Fragment):
            changed = self.state.add(value.window, value.bar)
        else:
            # It vouches up to ``through_ms``: the window of the next millisecond is current.
            changed = self.state.reach((value.through_ms + 1) // self.window_ms)
        self.pending = self.pending or changed
        now = self.now()
        if self.pending and (self.emitted_at is None or now - self.emitted_at >= self.every):
            return self._emit(now), StatefulLogic.RETAIN
        return _NOTHING, StatefulLogic.RETAIN

    @override
    def on_notify(self) -> tuple[list[tuple[int, Bar]], bool]:
        return (self._emit(self.now()) if self.pending else _NOTHING), StatefulLogic.RETAIN

    @override
    def on_eof(self) -> tuple[list[tuple[int, Bar]], bool]:
        return self.on_notify()

    @override
    def notify_at(self) -> datetime | None:
        if not self.pending or self.emitted_at is None:
            return None
        return self.emitted_at + self.every

    @override
    def snapshot(self) -> FormingWindow:
        return copy.deepcopy(self.state)

    def _emit(self, now: datetime) -> list[tuple[int, Bar]]:
        self.pending = False
        self.emitted_at = now
        snapshot = self.state.snapshot()
        return [] if snapshot is None else [snapshot]


def forming_bars(
    fragments: KeyedStream[Fragment],
    heartbeats: KeyedStream[Heartbeat],
    *,
    every: timedelta,
    window_ms: int,
    now_getter: Callable[[], datetime] | None = None,
) -> Stream[FormingUpdate]:
    """Snapshots of each symbol's forming bar, at most one per ``every`` per symbol."""
    now = now_getter or (lambda: datetime.now(UTC))
    items = cast(
        KeyedStream[Fragment | Heartbeat], op.merge("forming_items", fragments, heartbeats)
    )
    snapshots = op.stateful(
        "forming",
        items,
        lambda state: _FormingLogic(state, every, window_ms, now),
    )

    def _update(item: tuple[str, tuple[int, Bar]]) -> FormingUpdate:
        symbol, (window, bar) = item
        return FormingUpdate(symbol, window * window_ms, bar)

    return op.map("forming_update", snapshots, _update)
