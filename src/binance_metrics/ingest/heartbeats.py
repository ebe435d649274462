"""The ingestor's heartbeats: per symbol and second, "every trade up to T is in Kafka".

A heartbeat (:mod:`binance_metrics.heartbeats`) is produced after a trade frame, keyed by the
symbol like its trades, so it follows every trade it vouches for in the partition. It vouches
up to the last millisecond before the whole second that the frame's event time ``E`` (Binance's
clock, like the trade times) has passed (``T = boundary - 1``), and only what the ingestor
knows:

* the connection delivers: Binance sent this frame after the boundary, and WebSocket frames
  arrive in order, so every trade it sent before has been read, and produced (a reader held
  back by Kafka reads older frames, which vouch for older times). Pongs do not count: a stalled
  connection may still answer pings. A connection whose every symbol is quiet therefore sends
  no heartbeat, and its quiet minutes close at the next trade;
* the symbol's sequence is whole: it had a live trade on this connection, or on the one it
  replaced without a break (make-before-break), so every trade id since is accounted for; no
  gap is waiting for its backfill; its first trade after a restart has been judged. A
  connection lost and opened again starts a new session: the symbol is vouched for again once
  a trade shows, by its id, that nothing was missed meanwhile.

Heartbeats are offered, never queued: when Kafka is slow they are skipped (a later one says
more), and they are not counted as produced trades.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Protocol

from binance_metrics.heartbeats import encode_heartbeat
from binance_metrics.ingest.sequence import SymbolSequence

#: One heartbeat per symbol and this many ms: a whole fraction of every window length.
HEARTBEAT_EVERY_MS: Final = 1000


class _Conn(Protocol):
    @property
    def symbols(self) -> tuple[str, ...]: ...

    session: tuple[int, int]
    next_heartbeat_ms: int


class Heartbeats:
    """Decides, after each frame, which symbols of its connection get a heartbeat."""

    def __init__(
        self,
        sequences: Mapping[str, SymbolSequence],
        awaiting: Mapping[str, int],
        offer: Callable[[str, bytes], bool],
        every_ms: int = HEARTBEAT_EVERY_MS,
    ) -> None:
        """``awaiting``: the symbols whose first trade after a restart is not judged yet;
        ``offer(symbol, payload)`` produces a heartbeat if Kafka can take it at once (and
        says whether it did)."""
        self._sequences = sequences
        self._awaiting = awaiting
        self._offer = offer
        self.every_ms = every_ms
        #: symbol -> the session of the connection its last live trade came on
        self.sessions: dict[str, tuple[int, int]] = {}
        #: symbol -> the newest ``T`` a heartbeat was offered for
        self.vouched: dict[str, int] = {}
        self.sent = 0

    def beat(self, conn: _Conn, event_ms: int, now_ms: int) -> None:
        """Called after a trade frame sent at ``event_ms`` (its ``E``) and read at ``now_ms``,
        when ``event_ms >= conn.next_heartbeat_ms``."""
        boundary = event_ms - event_ms % self.every_ms
        conn.next_heartbeat_ms = boundary + self.every_ms
        for symbol in conn.symbols:
            if (
                self.sessions.get(symbol) == conn.session
                and not self._sequences[symbol].pending
                and symbol not in self._awaiting
            ):
                self.vouch(symbol, boundary - 1, now_ms)

    def vouch(self, symbol: str, through_ms: int, now_ms: int) -> bool:
        """Offer a heartbeat: every trade of ``symbol`` up to ``through_ms`` is produced (the
        caller knows it); nothing when an earlier one said as much. Whether it was produced."""
        if through_ms <= self.vouched.get(symbol, -1) or not self._offer(
            symbol, encode_heartbeat(symbol, through_ms, now_ms)
        ):
            return False
        self.vouched[symbol] = through_ms
        self.sent += 1
        return True
