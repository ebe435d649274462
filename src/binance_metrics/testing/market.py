"""What a :class:`~binance_metrics.testing.exchange.LocalExchange` trades: one timeline of trades,
each with the combined-stream frame it sends and the row REST serves for it.

Two sources:

* raw captures (JSON lines of combined-stream ``@trade`` frames, such as
  ``tests/data/*-spot-trade-stream-*.jsonl``): :func:`load_capture` keeps each frame exactly as
  recorded, so a test can compare what reaches Kafka with the capture byte for byte;
* any recording :func:`binance_metrics.recordings.read_recording` reads (CSV archives, REST
  arrays, JSON lines): :func:`load_trades` and :func:`shifted_to_now`, whose frames are built
  from the trades with their times moved forward by whole minutes, so a replay "happens now"
  and every trade stays in its minute's bar.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from binance_metrics.recordings import read_recording
from binance_metrics.trades import TradeMessage

MINUTE_MS = 60_000


@dataclass(frozen=True)
class MarketTrade:
    """One trade of the market: its stream, ids and times, and the frame that carries it."""

    symbol: str
    stream: str  # btcusdt@trade
    id: int
    event_time: int  # E, ms
    trade_time: int  # T, ms
    raw: str  # the combined-stream frame sent for it
    data: dict[str, Any]  # the frame's "data" object

    @classmethod
    def from_frame(cls, raw: str) -> MarketTrade:
        """A combined-stream ``@trade`` frame, kept as it is."""
        frame = json.loads(raw)
        data = frame["data"]
        return cls(data["s"], frame["stream"], data["t"], data["E"], data["T"], raw, data)

    @classmethod
    def from_message(cls, trade: TradeMessage, shift_ms: int) -> MarketTrade:
        """The frame Binance would have sent for ``trade``, its times moved by ``shift_ms``."""
        data: dict[str, Any] = {
            "e": "trade",
            "E": trade.event_time_ms + shift_ms,
            "s": trade.symbol,
            "t": trade.trade_id,
            "p": trade.price,
            "q": trade.quantity,
            "T": trade.trade_time_ms + shift_ms,
            "m": trade.buyer_is_maker,
        }
        if trade.trade_type is not None:  # a futures trade: X, no M
            data["X"] = trade.trade_type
        else:
            data["M"] = trade.best_match if trade.best_match is not None else True
        stream = f"{trade.symbol.lower()}@trade"
        raw = json.dumps({"stream": stream, "data": data}, separators=(",", ":"))
        return cls(trade.symbol, stream, trade.trade_id, data["E"], data["T"], raw, data)

    def historical(self) -> dict[str, Any]:
        """The trade as ``/api/v3/historicalTrades`` returns it."""
        data = self.data
        price, qty = str(data["p"]), str(data["q"])
        return {
            "id": self.id,
            "price": price,
            "qty": qty,
            "quoteQty": f"{Decimal(price) * Decimal(qty):.8f}",
            "time": data["T"],
            "isBuyerMaker": data["m"],
            "isBestMatch": data.get("M", True),
        }


def load_capture(path: Path, limit: int | None = None) -> list[MarketTrade]:
    """The first ``limit`` frames of a raw capture (one combined-stream frame per line)."""
    trades: list[MarketTrade] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if limit is not None and len(trades) >= limit:
                break
            if line.strip():
                trades.append(MarketTrade.from_frame(line.strip()))
    return trades


def merge_by_event_time(*captures: Sequence[MarketTrade]) -> list[MarketTrade]:
    """One timeline; each symbol keeps its own (trade-id) order."""
    return list(heapq.merge(*captures, key=lambda trade: trade.event_time))


def load_trades(paths: Sequence[Path]) -> list[TradeMessage]:
    """All raw trades of the recordings, merged into one timeline by trade time.

    Raises ``ValueError`` for a file without a single ``@trade`` trade (aggregates cannot be
    replayed as raw trades).
    """
    per_file = []
    for path in paths:
        trades = [
            r
            for r in read_recording(path)
            if isinstance(r, TradeMessage) and r.event_type == "trade"
        ]
        if not trades:
            raise ValueError(f"{path}: no @trade frames to replay")
        per_file.append(trades)
    return list(heapq.merge(*per_file, key=lambda trade: trade.trade_time_ms))


def shifted_to_now(
    trades: Sequence[TradeMessage], speed: float = 1.0, now_ms: int | None = None
) -> list[MarketTrade]:
    """``trades`` moved forward by whole minutes, so that every trade keeps its second within
    the minute and every bar exactly its trades, to happen now when played on the clock
    (:class:`~binance_metrics.testing.exchange.RealTime` ``on_the_clock``) at ``speed``.

    The shift is the largest whole number of minutes that puts the playback's start at or
    before ``now_ms``: at speed 1 each trade is then sent at its own (shifted) time, so its
    latency is the real one, after the trades of the first minute that are already due have
    gone at once; faster, the recording runs ahead of the clock, so it is moved back by that
    much, and no trade is ever dated after the moment it is sent, on the clock or paced from
    a market that opens at ``now_ms`` or later (a trade from the future is refused as corrupt,
    and would make a bar dated in the future).
    """
    if not trades:
        raise ValueError("nothing to replay")
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    # Paced by event time (a frame goes when Binance sent it, never before its trade time).
    first = min(trade.event_time_ms for trade in trades)
    duration_ms = max(trade.event_time_ms for trade in trades) - first
    # How far the first frame is due after its (shifted) time: faster, the last one is due at
    # its own time and the first one ``duration - duration / speed`` after its own.
    first_due_after = max(0.0, duration_ms - duration_ms / speed)
    shift = int(now - first - first_due_after) // MINUTE_MS * MINUTE_MS
    return [MarketTrade.from_message(trade, shift) for trade in trades]


def synthetic_market(
    symbols: Sequence[str],
    trades_per_symbol: int,
    start_ms: int | None = None,
    first_round: int = 0,
) -> list[MarketTrade]:
    """A cheap market of many symbols: ``trades_per_symbol`` trades each, taking turns one
    millisecond apart (symbol by symbol within a round), prices that move a little. Round ``r``
    has trade id ``r + 1``, so a market continued from ``first_round`` goes on without a gap.
    For tests of whole-market scale (2,000 symbols), where recordings of each do not exist."""
    start = time.time_ns() // 1_000_000 if start_ms is None else start_ms
    trades: list[MarketTrade] = []
    for round_ in range(first_round, first_round + trades_per_symbol):
        for n, symbol in enumerate(symbols):
            at = start + len(trades)
            stream = f"{symbol.lower()}@trade"
            data: dict[str, Any] = {
                "e": "trade",
                "E": at,
                "s": symbol,
                "t": round_ + 1,
                "p": f"{100 + n % 97 + round_ / 100:.8f}",
                "q": f"{1 + round_ % 7:.8f}",
                "T": at,
                "m": (n + round_) % 2 == 0,
                "M": True,
            }
            raw = json.dumps({"stream": stream, "data": data}, separators=(",", ":"))
            trades.append(MarketTrade(symbol, stream, round_ + 1, at, at, raw, data))
    return trades


@dataclass(frozen=True)
class Burst:
    """``factor`` times the market's rate from ``at_s`` for ``seconds`` (since the start)."""

    at_s: float
    seconds: float
    factor: float


@dataclass(frozen=True)
class WholeMarket:
    """A market shaped like Binance's: ``rate`` trades a second in all, spread over the symbols
    like Binance's volume (Zipf: the symbol of rank r gets a share proportional to
    ``1 / r**skew``, so a few carry most trades), with ``bursts``."""

    symbols: Sequence[str]
    rate: float
    seconds: float
    bursts: Sequence[Burst] = field(default_factory=tuple)
    skew: float = 1.0
    seed: int = 7

    def rate_at(self, offset_s: float) -> float:
        factor = 1.0
        for burst in self.bursts:
            if burst.at_s <= offset_s < burst.at_s + burst.seconds:
                factor = max(factor, burst.factor)
        return self.rate * factor

    def shares(self) -> list[float]:
        """Each symbol's share of the trades, in the order of ``symbols``."""
        weights = [1 / (rank + 1) ** self.skew for rank in range(len(self.symbols))]
        total = sum(weights)
        return [weight / total for weight in weights]

    def trades(self, start_ms: int) -> list[MarketTrade]:
        """The trades from ``start_ms`` on: Poisson arrivals at :meth:`rate_at`, each symbol's
        ids consecutive from 1, prices that walk a little."""
        rng = random.Random(self.seed)
        cumulative = list(itertools.accumulate(self.shares()))
        ids = [0] * len(self.symbols)
        ticks = [10_000 + 97 * n % 5_000 for n in range(len(self.symbols))]  # in cents
        streams = [f"{symbol.lower()}@trade" for symbol in self.symbols]
        trades: list[MarketTrade] = []
        offset_s = 0.0
        while True:
            offset_s += rng.expovariate(self.rate_at(offset_s))
            if offset_s >= self.seconds:
                return trades
            n = bisect.bisect_left(cumulative, rng.random() * cumulative[-1])
            n = min(n, len(self.symbols) - 1)
            ids[n] += 1
            ticks[n] = max(1, ticks[n] + rng.randint(-3, 3))
            at = start_ms + int(offset_s * 1000)
            data: dict[str, Any] = {
                "e": "trade", "E": at, "s": self.symbols[n], "t": ids[n],
                "p": f"{ticks[n] / 100:.8f}", "q": f"{rng.randint(1, 10**6) / 10**5:.8f}",
                "T": at, "m": rng.random() < 0.5, "M": True,
            }  # fmt: skip
            raw = json.dumps({"stream": streams[n], "data": data}, separators=(",", ":"))
            trades.append(MarketTrade(self.symbols[n], streams[n], ids[n], at, at, raw, data))
