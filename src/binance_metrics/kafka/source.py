"""A lean Bytewax Kafka input: each partition's records as raw value bytes, in batches.

Bytewax's own ``KafkaSource`` wraps every record in a ``KafkaSourceMessage`` dataclass; at the
rates Binance reaches that costs more than decoding the trade (docs/performance.md). This source
hands the value bytes straight to the dataflow's batch step. Like ``KafkaSource`` it keeps
offsets only in Bytewax's recovery state (never in a consumer group), so a resumed dataflow
continues exactly where its last snapshot was; ``tail=False`` ends each partition at partition
EOF, which is exact on Tansu too (its high watermark is not, docs/architecture.md).

Where each partition has read to is shared (:class:`Positions`): the embedded broker is started
afresh (empty) only once every acknowledged record was read, and then each partition is told to
read its new topic from the start (:mod:`binance_metrics.kafka.retention`).

A stop request (``stop``) loses nothing: every partition is read on to its end as of the request
(the next partition EOF), so that what was produced before it reaches the bars; then the
partition ends, the windows close and are written, and the dataflow returns. The consumer always
reports partition EOF; while tailing, those events are ignored.

Kafka trouble while running: a broker that is down or moving is waited for (librdkafka retries;
its errors are logged, each at most once per :data:`~binance_metrics.kafka.log.REPEAT_INTERVAL_S`
per partition). An error that retrying cannot cure (a fatal one, or a lost authorisation) raises
:class:`~binance_metrics.errors.BrokerError` naming the partition and the cause, and so ends the
dataflow.
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

from binance_metrics.errors import BrokerError
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.log import RepeatFilter

log = logging.getLogger(__name__)
log.addFilter(RepeatFilter())  # a broker that is down repeats the same error at every retry

#: When a poll finds nothing, ask Bytewax to come back this much later instead of spinning.
IDLE_BACKOFF: Final = timedelta(milliseconds=5)

#: Consumer errors that no retry cures: the dataflow stops with a clear error instead of idling.
_PERMANENT: Final = frozenset(
    {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}
)


class Positions:
    """Each partition's next offset to read, and rewinds to the start of a new (empty) topic."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}  # partition -> next offset (only once a record was read)
        self.generation = 0  # raised by rewind()
        self.seen: dict[int, int] = {}  # partition -> the generation it follows

    def rewind(self) -> None:
        """Every partition reads from the start again (at its next batch)."""
        self.generation += 1

    def rewound(self) -> bool:
        """Whether every partition follows the last :meth:`rewind`."""
        return all(seen == self.generation for seen in list(self.seen.values()))

    def read_past(self, offsets: dict[int, int]) -> bool:
        """Whether every partition has read past ``offsets`` (partition -> offset)."""
        return all(self.next.get(partition, 0) > offset for partition, offset in offsets.items())


class _RawPartition(StatefulSourcePartition[bytes, int]):
    def __init__(
        self,
        config: dict[str, object],
        topic: str,
        partition: int,
        offset: int,
        batch_size: int,
        *,
        tail: bool,
        stop: threading.Event | None,
        abort: threading.Event | None,
        positions: Positions | None,
    ) -> None:
        self._consumer = Consumer(config)
        self._topic = topic
        self._partition = partition
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._where = f"{topic}[{partition}]"
        self._offset = offset
        self._batch_size = batch_size
        self._ends_at_eof = not tail
        self._eof = False
        self._awake_at: datetime | None = None
        self._stop = stop
        self._abort = abort
        self._positions = positions
        if positions is not None:
            positions.seen[partition] = positions.generation

    @override
    def next_batch(self) -> list[bytes]:
        if self._eof or (self._abort is not None and self._abort.is_set()):
            raise StopIteration
        if not self._ends_at_eof and self._stop is not None and self._stop.is_set():
            self._read_to_the_end()
        positions = self._positions
        if positions is not None and positions.seen[self._partition] != positions.generation:
            self._from_the_start(positions)
        self._awake_at = None
        batch: list[bytes] = []
        last = None
        for record in self._consumer.consume(self._batch_size, 0):
            error = record.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if self._ends_at_eof:
                        self._eof = True  # emit this batch; stop at the next call
                        break
                    continue  # tailing: the end moves on
                if error.fatal() or error.code() in _PERMANENT:
                    raise BrokerError(f"Kafka consumer of {self._where} failed: {error.str()}")
                # Transient (broker down, rebalance of leaders): librdkafka retries by itself.
                log.warning("Kafka consumer on %s: %s", self._where, error)
                continue
            batch.append(record.value() or b"")
            last = record
        if last is not None and (offset := last.offset()) is not None:
            self._offset = offset + 1  # resume after the last record emitted
            if positions is not None:
                positions.next[self._partition] = self._offset
        if not batch and not self._eof:
            self._awake_at = datetime.now(UTC) + IDLE_BACKOFF
        return batch

    def _from_the_start(self, positions: Positions) -> None:
        """The broker was started afresh: its topic begins again at offset 0."""
        self._offset = 0
        self._consumer.assign([TopicPartition(self._topic, self._partition, OFFSET_BEGINNING)])
        positions.next.pop(self._partition, None)
        positions.seen[self._partition] = positions.generation

    def _read_to_the_end(self) -> None:
        """End at the next partition EOF. librdkafka reports EOF once per offset, so the one
        seen while tailing may predate records produced since: assigning the partition again
        at the next offset makes it report the end as of now."""
        self._ends_at_eof = True
        self._consumer.assign([TopicPartition(self._topic, self._partition, self._offset)])

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
        stop: threading.Event | None = None,
        abort: threading.Event | None = None,
        positions: Positions | None = None,
    ) -> None:
        """``stop``, once set, ends every partition at its end as of then (see the module);
        ``abort`` ends them at once (the run is failing: the bar sink gave up); ``positions``
        shares where each partition has read to."""
        self.kafka = kafka
        self.topic = topic
        self.tail = tail
        self.batch_size = batch_size
        self.stop = stop
        self.abort = abort
        self.positions = positions

    @override
    def list_parts(self) -> list[str]:
        """The topic's partitions; :class:`BrokerError` if it cannot be listed or is missing."""
        admin = AdminClient(self.kafka.client_config())
        try:
            metadata = admin.list_topics(self.topic, timeout=30)
        except KafkaException as exc:
            raise BrokerError(
                f"cannot list the partitions of {self.topic!r} on KAFKA_BOOTSTRAP_SERVERS="
                f"{self.kafka.bootstrap_servers}: {exc.args[0].str()}"
            ) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            reason = topic.error.str() if topic is not None and topic.error else "not found"
            raise BrokerError(
                f"topic {self.topic!r} is not available on KAFKA_BOOTSTRAP_SERVERS="
                f"{self.kafka.bootstrap_servers} ({reason}): check KAFKA_TOPIC"
            )
        return [str(partition) for partition in sorted(topic.partitions)]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _RawPartition:
        config = self.kafka.client_config(
            **{
                "group.id": "binance-metrics-unused",  # required by librdkafka; never joined
                "enable.auto.commit": False,
                # An offset beyond the end (a broker that lost its topics) or below the start
                # (retention) reads from the start of what there is, skipping nothing.
                "auto.offset.reset": "earliest",
                # On while tailing too: a stop ends each partition at its next EOF.
                "enable.partition.eof": True,
                # The broker answers an empty fetch after this wait: it bounds how late the end
                # of a partition is noticed. 1 ms makes fetches crawl on Tansu; 50 does not
                # (docs/performance.md).
                "fetch.wait.max.ms": 50,
                # Keep fetching ahead until a million records (or the default 64 MB) wait
                # locally: with the default 100 k the source stalls between fetches, at a
                # quarter of the rate (benchmarks/dataflow_bench.py, docs/performance.md).
                "queued.min.messages": 1_000_000,
            }
        )
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _RawPartition(
            config,
            self.topic,
            int(for_part),
            offset,
            self.batch_size,
            tail=self.tail,
            stop=self.stop,
            abort=self.abort,
            positions=self.positions,
        )
