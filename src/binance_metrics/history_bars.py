"""History straight into bars: recorded trades folded in columns, then the dataflow's own steps.

``replay`` does not need Kafka or Bytewax's windows for trades that are all there already: a
chunk of a file is folded per (symbol, minute) in numpy (:mod:`binance_metrics.columnar`), and
the fragments go through the same per-symbol steps as in the dataflow, in the same order:

    fragments -> seen trades (each trade id once) -> bar book (merge, fill empty minutes)
        -> ClickHouse, through the dataflow's sink (best version wins, stale fragments merged
           into the stored bar, retries and giving up)

There is no event clock: every fresh fragment goes to the book at once, which merges it into
its minute (the dataflow's window would have merged it first; the bar is a monoid, so the
result is the same). Memory is what these steps hold: per symbol, the bars and trade ids of the
last ``BAR_HISTORY_MINUTES``, plus the bars not yet written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Final

from binance_metrics.bar_book import BarBook, BookUpdate
from binance_metrics.bars import Bar, BarUpdate, trade_base_quantity
from binance_metrics.columnar import FoldedChunk, TradeColumns, fold_columns, trade_fragment
from binance_metrics.dataflow import FlowStats
from binance_metrics.fragments import FoldedTrade, Fragment, StaleFragment
from binance_metrics.ledger.accounted import AccountedTrades
from binance_metrics.markets import Market
from binance_metrics.seen_trades import SeenTrades
from binance_metrics.store.clickhouse import bars_table
from binance_metrics.store.sink import ClickHouseBarSink, SinkItem, StoreHealth
from binance_metrics.trades import TradeMessage, parse_scaled

#: Bar updates held before a write (the store takes them best in batches of thousands).
WRITE_EVERY: Final = 20_000


@dataclass
class HistoryBars:
    """Folds chunks of trades into the store. Call :meth:`add` per chunk, then :meth:`finish`."""

    dsn: str
    market: Market
    window_ms: int = 60_000
    history_windows: int = 1440
    stats: FlowStats = field(default_factory=FlowStats)
    health: StoreHealth = field(default_factory=StoreHealth)
    give_up_after_s: float | None = None
    abort: threading.Event = field(default_factory=threading.Event)
    _seen: dict[str, SeenTrades] = field(default_factory=dict)
    _books: dict[str, BarBook] = field(default_factory=dict)
    _pending: dict[tuple[str, int], Bar] = field(default_factory=dict)
    _accounted: list[AccountedTrades] = field(default_factory=list)

    def __post_init__(self) -> None:
        sink = ClickHouseBarSink(
            self.dsn, self.stats.add, market=self.market, health=self.health,
            give_up_after_s=self.give_up_after_s, abort=self.abort,
            table=bars_table(self.window_ms // 1000),  # 1-second bars: binance.ohlcv_1s
        )  # fmt: skip
        self._sink = sink.build_part("history_bars", "bars", None)
        # The seen-trades step must remember what the book holds, and a window more: no window
        # stays open here (the book gets every fragment at once), unlike in the dataflow.
        self._seen_history = self.history_windows + 2

    def add(self, columns: TradeColumns, odd: list[TradeMessage] | None = None) -> None:
        """Fold ``columns`` (and ``odd``: valid trades the columns cannot hold) in."""
        folded = fold_columns(columns, self.window_ms)
        trades = folded.trades
        for index, fragment in enumerate(folded.fragments):
            if self.abort.is_set():  # a signal, or a store given up: the run ends now
                return
            self._admit(fragment, folded, index)
        for trade in odd or ():
            price, qty = parse_scaled(trade.price), parse_scaled(trade.quantity)
            folded_trade = FoldedTrade(
                trade.trade_id, trade.last_trade_id, price, qty, trade.buyer_is_maker,
                trade_base_quantity(trade, price, qty),
            )  # fmt: skip
            window = trade.trade_time_ms // self.window_ms
            self._admit(trade_fragment(trade.symbol, window, folded_trade, trade.trade_time_ms))
            trades += trade.trade_count
        self.stats.add(trades=trades)
        if len(self._pending) >= WRITE_EVERY:
            self._write()

    def account(self, entries: list[AccountedTrades]) -> None:
        """Record trade ids klines exclude on purpose (written with the next bars), as the
        dataflow does, so that the ledger counts them as accounted for."""
        self._accounted += entries

    def finish(self) -> None:
        """Write what is pending."""
        self._write()

    def _admit(self, fragment: Fragment, chunk: FoldedChunk | None = None, index: int = 0) -> None:
        symbol = fragment.symbol
        seen = self._seen.get(symbol)
        if seen is None:
            seen = self._seen[symbol] = SeenTrades(history=self._seen_history)
            self._books[symbol] = BarBook(history=self.history_windows)
        if chunk is not None and not fragment.trades and seen.needs_trades(fragment):
            fragment.trades = chunk.trades_of(index)
        admitted = seen.admit(fragment)
        if admitted.duplicates or admitted.conflicts:
            self.stats.add(
                duplicate_trades=admitted.duplicates, conflicting_trades=admitted.conflicts
            )
        book = self._books[symbol]
        if admitted.stale is not None:
            self.stats.add(late_trades=admitted.stale.bar.trade_count)
            update = book.update(fragment.window, admitted.stale, checked=False)
        elif admitted.fresh is not None:
            update = book.update(fragment.window, admitted.fresh.bar)
        else:
            return
        self._take(symbol, update)

    def _take(self, symbol: str, update: BookUpdate) -> None:
        if update.duplicates or update.conflicts:
            self.stats.add(duplicate_trades=update.duplicates, conflicting_trades=update.conflicts)
        for window, bar in update.bars:
            self._pending[(symbol, window)] = bar  # the book's latest version of the minute
        if update.forward is not None:
            # Older than the book's history: the sink merges it into the stored bar, after
            # what is pending (which it reads back).
            forward = update.forward
            self._write([StaleFragment(symbol, forward.window * self.window_ms, forward)])

    def _write(self, then: list[StaleFragment] | None = None) -> None:
        items: list[SinkItem] = [
            BarUpdate(symbol, window * self.window_ms, bar)
            for (symbol, window), bar in self._pending.items()
        ]
        self._pending.clear()
        items += then or []
        items += self._accounted
        self._accounted = []
        if items:
            self._sink.write_batch(items)
