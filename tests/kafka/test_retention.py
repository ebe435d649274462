"""When the embedded broker is due to start afresh, and what the dataflow must have read first.
(``tests/cli/test_memory.py`` starts it afresh in a running ``up``.)"""

from __future__ import annotations

from binance_metrics.kafka.retention import BrokerRetention
from binance_metrics.kafka.source import Positions


def test_due_over_its_size_or_its_age_and_not_before() -> None:
    retention = BrokerRetention(max_bytes=64 << 20, max_age_s=3600)
    assert retention.due(64 << 20, 3599) is None
    assert "KAFKA_RETENTION_BYTES" in (retention.due((64 << 20) + 1, 0) or "")
    assert "KAFKA_RETENTION_MS" in (retention.due(0, 3600) or "")


def test_read_past_every_acknowledged_offset_and_rewound_only_once_each_partition_follows() -> None:
    positions = Positions()
    positions.seen = {0: 0, 1: 0}
    positions.next = {0: 11}  # partition 0 read offsets 0..10, partition 1 nothing yet
    assert positions.read_past({0: 10})
    assert not positions.read_past({0: 11})
    assert not positions.read_past({0: 10, 1: 0})
    assert positions.read_past({})
    positions.rewind()
    assert not positions.rewound()
    positions.seen[0] = positions.seen[1] = positions.generation
    assert positions.rewound()
