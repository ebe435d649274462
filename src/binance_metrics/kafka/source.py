"""A lean Bytewax Kafka input: each partition's records as raw value bytes, in batches.

Bytewax's own ``KafkaSource`` wraps every record in a ``KafkaSourceMessage`` dataclass; at the
rates Binance reaches that costs more than decoding the trade (design §4). This source hands the
value bytes straight to the dataflow's batch step. Like ``KafkaSource`` it keeps offsets only in
Bytewax's recovery state (never in a consumer group), so a resumed dataflow continues exactly where
its last snapshot was; ``tail=False`` ends each partition at partition EOF, which is exact on Tansu
too (its high watermark is not, design §1).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Final

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from typing_extensions import override

from binance_metrics.kafka.config import KafkaConnection

log = logging.getLogger(__name__)

#: When a poll finds nothing, ask Bytewax to come back this much later instead of spinning.
IDLE_BACKOFF: Final = timedelta(milliseconds=5)


class _RawPartition(StatefulSourcePartition[bytes, int]):
    def __init__(
        self,
        config: dict[str, object],
        topic: str,
        partition: int,
        offset: int,
        batch_size: int,
        stop: threading.Event | None,
    ) -> None:
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._where = f"{topic}[{partition}]"
        self._offset = offset
        self._batch_size = batch_size
        self._eof = False
        self._awake_at: datetime | None = None
        self._stop = stop

    @override
    def next_batch(self) -> list[bytes]:
        if self._eof or (self._stop is not None and self._stop.is_set()):
            raise StopIteration
        self._awake_at = None
        batch: list[bytes] = []
        last = None
        for record in self._consumer.consume(self._batch_size, 0):
            error = record.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._eof = True  # emit this batch; stop at the next call
                    break
                if error.fatal():
                    raise KafkaException(error)
                # Transient (broker down, rebalance of leaders): librdkafka retries by itself.
                log.warning("Kafka consumer on %s: %s", self._where, error)
                continue
            batch.append(record.value() or b"")
            last = record
        if last is not None and (offset := last.offset()) is not None:
            self._offset = offset + 1  # resume after the last record emitted
        if not batch and not self._eof:
            self._awake_at = datetime.now(UTC) + IDLE_BACKOFF
        return batch

    @override
    def next_awake(self) -> datetime | None:
        return self._awake_at

    @override
    def snapshot(self) -> int:
        return self._offset

    @override
    def close(self) -> None:
        self._consumer.close()


class RawKafkaSource(FixedPartitionedSource[bytes, int]):
    """Every partition of one topic, as batches of raw record values."""

    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        *,
        tail: bool = True,
        batch_size: int = 5000,
        starting_offset: int = OFFSET_BEGINNING,
        stop: threading.Event | None = None,
    ) -> None:
        """``stop``, once set, ends every partition as if it had reached its end (clean exit)."""
        self.kafka = kafka
        self.topic = topic
        self.tail = tail
        self.batch_size = batch_size
        self.starting_offset = starting_offset
        self.stop = stop

    @override
    def list_parts(self) -> list[str]:
        admin = AdminClient(self.kafka.client_config())
        metadata = admin.list_topics(self.topic, timeout=30)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise KafkaException(f"topic {self.topic!r} is not available: {topic and topic.error}")
        return [str(partition) for partition in sorted(topic.partitions)]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _RawPartition:
        config = self.kafka.client_config(
            **{
                "group.id": "binance-metrics-unused",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                "enable.partition.eof": not self.tail,
                # The broker answers an empty fetch after this wait: it bounds how late the end
                # of a partition is noticed. 1 ms makes fetches crawl on Tansu (design §1); 50
                # does not.
                "fetch.wait.max.ms": 50,
                # Keep fetching ahead until a million records (or the default 64 MB) wait
                # locally: with the default 100 k the source stalls between fetches, at a
                # quarter of the rate (benchmarks/dataflow_bench.py, docs/performance.md).
                "queued.min.messages": 1_000_000,
            }
        )
        offset = self.starting_offset if resume_state is None else resume_state
        return _RawPartition(config, self.topic, int(for_part), offset, self.batch_size, self.stop)
