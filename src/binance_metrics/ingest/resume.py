"""Resuming after a restart: where Kafka ends, and what to make of the first live trade.

:class:`Resume` is the one owner of the resume state. At start it reads the highest raw trade id
per symbol already in ``KAFKA_TOPIC`` (:func:`read_last_trade_ids`) and seeds each symbol's
sequence to expect the next id (:meth:`SymbolSequence.resume_after`); the first live trade then
opens a gap over the trades made while the ingestor was down, which the REST backfill fills, and
a restart loses no trade. :meth:`Resume.judge` looks at that first live trade once per symbol:
a gap above ``max_resume_gap`` is given up rather than fetched, and a live stream far behind the
topic (another stream's topic) starts afresh.

How the tail is read (one ``Consumer`` with ``assign``, no consumer group, no commits):

* every partition of the topic is read (records are keyed by symbol, so a symbol lives in one
  partition, but which one is the producer's business), from ``max(low, high - tail_records)``
  **to partition EOF**. The high watermark only chooses where to start: Tansu reports the start
  of the last record batch + 1 rather than the true end (``docs/architecture.md``, Kafka), so
  stopping there would miss the newest records, exactly the ones that matter. Starting earlier
  than the true ``end - tail_records`` on Tansu only means reading a little more;
* a record counts when :func:`~binance_metrics.trades.decode_trade` accepts it and its symbol is
  subscribed; its last raw id is ``l`` for an aggregate, else ``t``. The maximum is taken, not
  the last record, so a record produced out of order cannot move the resume point back;
* everything is bounded by ``timeout_s``. If any partition did not reach EOF in time, nothing
  is resumed: a partial tail can be older than the end, and resuming from it would fetch, and
  produce a second time, trades that are already in Kafka. Losing the downtime's trades (as
  without a resume) is the lesser evil, and it is logged as an error.

With a store (``up``, or ``ingest`` with ``CLICKHOUSE_URL``) the bars table is a checkpoint too
(:mod:`binance_metrics.store.checkpoint`): when Kafka does not hold the newest stored trade (the
embedded broker lost its topics in a crash, a broker's data was lost), the symbol resumes before
the first trade of its last stored minute, which is rebuilt whole from backfilled trades.

A symbol whose last trade lies further back than ``tail_records`` of its partition (a very quiet
symbol sharing a partition with busy ones) is not found and starts at its first live trade.

The read also keeps each symbol's last *run* in Kafka (its trailing trades of one time, price and
side, :attr:`Resume.last_runs`): on the futures markets the first aggregate after the restart is
cut there (:mod:`binance_metrics.ingest.aggregates`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from binance_metrics.errors import InvalidTradeError
from binance_metrics.heartbeats import decode_heartbeat
from binance_metrics.ingest.sequence import SymbolSequence
from binance_metrics.ingest.tuning import IngestTuning
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.store.checkpoint import StoredTail, start_points, stored_tails
from binance_metrics.store.clickhouse import Store
from binance_metrics.trades import TradeMessage, decode_trade

log = logging.getLogger(__name__)


class Resume:
    """The resume policy of one ingestor: seeds the sequences, judges each first live trade."""

    def __init__(self, topic: str, tuning: IngestTuning) -> None:
        self.topic = topic
        self._tuning = tuning
        #: symbol -> the last trade id found in Kafka at start (its sequence resumed after it)
        self.after: dict[str, int] = {}
        #: symbol -> the id expected next, until the symbol's first live trade is judged
        #: (emptied as trades come, never replaced: the hot path binds it once)
        self.awaiting: dict[str, int] = {}
        #: symbol -> its last run in Kafka, when it resumed after its last trade there
        self.last_runs: dict[str, list[TradeMessage]] = {}

    async def seed(
        self,
        kafka: KafkaConnection,
        sequences: Mapping[str, SymbolSequence],
        store: Store | None = None,
    ) -> None:
        """Read the end of the topic and the store's last bars (off the event loop; bounded,
        never raises) and seed."""
        tuning = self._tuning
        if not tuning.resume_from_kafka:
            log.info("resume from Kafka disabled: every symbol starts at its first live trade")
            return
        loop = asyncio.get_running_loop()
        stored: dict[str, StoredTail] = {}
        starts: dict[str, int] = {}
        if store is not None:
            try:
                stored = await loop.run_in_executor(None, stored_tails, store, list(sequences))
                starts = await loop.run_in_executor(None, start_points, store, list(sequences))
            except Exception as exc:  # noqa: BLE001 - the resume goes on from Kafka alone
                log.error("could not read the last stored bars (%s): resuming from Kafka", exc)
        scan = await loop.run_in_executor(
            None,
            functools.partial(
                read_last_trade_ids,
                kafka,
                self.topic,
                list(sequences),
                tail_records=tuning.resume_tail_records,
                timeout_s=tuning.resume_timeout_s,
            ),
        )
        self.apply(scan, sequences, stored, starts)

    def apply(
        self,
        scan: TailScan,
        sequences: Mapping[str, SymbolSequence],
        stored: Mapping[str, StoredTail] | None = None,
        starts: Mapping[str, int] | None = None,
    ) -> None:
        """Seed each symbol's sequence after its last id in ``scan``, or before its last stored
        minute when Kafka does not reach the store's newest trade, or, with nothing stored yet,
        before the trade an earlier run started at; nothing if all failed."""
        stored = stored or {}
        starts = starts or {}
        if scan.error is not None:
            log.error(
                "could not read the end of %s (%s, %.1f s): %s",
                self.topic,
                scan.error,
                scan.seconds,
                "resuming from the store only"
                if stored
                else "not resuming; trades made while the ingestor was down are not backfilled",
            )
            if not stored and not starts:
                return
            scan = TailScan()
        log.info(
            "read the last %d records of %s (%d partitions, %d not trades) in %.2f s",
            scan.records,
            self.topic,
            scan.partitions,
            scan.skipped,
            scan.seconds,
        )
        for symbol, sequence in sequences.items():
            last = scan.last_ids.get(symbol)
            tail = stored.get(symbol)
            if tail is not None and (last is None or last < tail.last_trade_id):
                self._seed(sequence, tail.resume_after)
                log.info(
                    "%s: the store holds trades up to %d, %s: resuming after trade %d, rebuilding "
                    "its last stored minute (%d) from its first trade",
                    symbol, tail.last_trade_id,
                    "Kafka none" if last is None else f"Kafka only up to {last}",
                    tail.resume_after, tail.window_start_ms,
                )  # fmt: skip
                continue
            start = starts.get(symbol)
            if tail is None and start is not None and (last is None or last < start):
                self._seed(sequence, start - 1)
                log.info(
                    "%s: no bar stored yet: resuming before trade %d, where an earlier run "
                    "started", symbol, start,
                )  # fmt: skip
                continue
            if last is None:
                log.info(
                    "%s: no trade in the end of %s: starts at its first live trade",
                    symbol,
                    self.topic,
                )
                continue
            self._seed(sequence, last)
            if (run := scan.last_runs.get(symbol)) and run[-1].last_trade_id == last:
                self.last_runs[symbol] = run
            log.info("%s: resuming after trade %d, the last one in %s", symbol, last, self.topic)

    def _seed(self, sequence: SymbolSequence, after: int) -> None:
        sequence.resume_after(after)
        self.after[sequence.symbol] = after
        self.awaiting[sequence.symbol] = after + 1

    def judge(self, sequence: SymbolSequence, trade_id: int) -> str | None:
        """Look at a resumed symbol's first live trade (once); return why to give its gap up.

        Call it before the trade is offered to ``sequence``, only while the symbol is in
        :attr:`awaiting`. A live stream far behind the topic makes the sequence start afresh.
        """
        symbol = sequence.symbol
        expected = self.awaiting.pop(symbol)
        missed, cap = trade_id - expected, self._tuning.max_resume_gap
        if missed > cap:
            return (
                f"{missed} trades made while the ingestor was down ({expected}..{trade_id - 1}), "
                f"more than max_resume_gap {cap}: not fetched over REST"
            )
        if missed > 0:
            log.info(
                "%s: backfilling the %d trades made while the ingestor was down (%d..%d)",
                symbol,
                missed,
                expected,
                trade_id - 1,
            )
        elif missed < -cap:
            log.error(
                "%s: the first live trade %d is far behind the last one in %s (%d): the topic "
                "does not hold this stream's trades; not resuming",
                symbol,
                trade_id,
                self.topic,
                expected - 1,
            )
            sequence.start_afresh()
        elif missed < 0:
            log.warning(
                "%s: the first live trade %d is already in %s (last %d): dropping duplicates",
                symbol,
                trade_id,
                self.topic,
                expected - 1,
            )
        return None


@dataclass
class TailScan:
    """What reading the tail found; ``last_ids`` holds only trustworthy resume points."""

    last_ids: dict[str, int] = field(default_factory=dict)
    #: symbol -> its last run: the trailing trades of one time, price and side, in id order
    #: (where a futures gap's first aggregate is cut, ingest/aggregates.py)
    last_runs: dict[str, list[TradeMessage]] = field(default_factory=dict)
    records: int = 0  # records read
    skipped: int = 0  # records that are not a valid trade (garbage, other formats)
    partitions: int = 0
    incomplete: list[int] = field(default_factory=list)  # partitions that did not reach EOF
    error: str | None = None  # why the tail could not be read at all
    seconds: float = 0.0


def read_last_trade_ids(
    kafka: KafkaConnection,
    topic: str,
    symbols: Iterable[str],
    *,
    tail_records: int,
    timeout_s: float,
) -> TailScan:
    """The highest raw trade id of each of ``symbols`` in the last records of ``topic``.

    Never raises for Kafka trouble: the problem is in :attr:`TailScan.error` (and nothing is
    resumed). A topic that does not exist or is empty gives an empty result.
    """
    began = time.monotonic()
    deadline = began + timeout_s
    scan = TailScan()
    wanted = frozenset(symbols)
    consumer = Consumer(
        kafka.client_config(
            **{
                "group.id": "binance-metrics-ingest-resume",  # librdkafka wants one; never joined
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",  # the start fell below the low mark meanwhile
                "fetch.wait.max.ms": 50,  # EOF seen within 50 ms; 1 ms makes fetches crawl on Tansu
            }
        )
    )
    try:
        _scan(consumer, topic, wanted, tail_records, deadline, scan)
    except KafkaException as exc:
        scan.error = str(exc.args[0] if exc.args else exc)
        scan.last_ids.clear()
    finally:
        consumer.close()
        scan.seconds = time.monotonic() - began
    return scan


def _extend_run(runs: dict[str, list[TradeMessage]], trade: TradeMessage) -> None:
    """``trade`` (the symbol's newest so far) continues its run or starts a new one."""
    run = runs.get(trade.symbol)
    if run:
        before = run[-1]
        same = (before.trade_time_ms, before.price, before.buyer_is_maker) == (
            trade.trade_time_ms, trade.price, trade.buyer_is_maker
        )  # fmt: skip
        if same and trade.trade_id == before.last_trade_id + 1:
            run.append(trade)
            return
    runs[trade.symbol] = [trade]


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise KafkaException("timed out")
    return left


def _scan(
    consumer: Consumer,
    topic: str,
    wanted: frozenset[str],
    tail_records: int,
    deadline: float,
    scan: TailScan,
) -> None:
    metadata = consumer.list_topics(topic, timeout=_remaining(deadline))
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        if found is not None and found.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return  # a new topic: nothing to resume
        raise KafkaException(f"topic {topic!r} is not available: {found and found.error}")
    partitions = sorted(found.partitions)
    scan.partitions = len(partitions)
    assignment = []
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=_remaining(deadline), cached=False
        )
        assignment.append(TopicPartition(topic, partition, max(low, high - tail_records)))
    if not assignment:
        return
    consumer.assign(assignment)
    open_partitions = set(partitions)
    best: dict[int, dict[str, int]] = {p: {} for p in partitions}  # partition -> symbol -> id
    while open_partitions:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for record in consumer.consume(1000, min(left, 0.05)):
            error = record.error()
            partition = record.partition()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(partition)
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("reading the tail of %s[%s]: %s", topic, partition, error)
                continue
            scan.records += 1
            try:
                trade = decode_trade(record.value() or b"")
            except InvalidTradeError:
                if decode_heartbeat(record.value() or b"") is None:  # a heartbeat is no trade
                    scan.skipped += 1
                continue
            if trade.symbol not in wanted or partition is None:
                continue
            last = trade.last_trade_id
            seen = best[partition]
            if last > seen.get(trade.symbol, -1):
                seen[trade.symbol] = last
                _extend_run(scan.last_runs, trade)
    if open_partitions:
        scan.incomplete = sorted(open_partitions)
        raise KafkaException(
            f"partitions {scan.incomplete} did not reach their end in time"
            f" ({scan.records} records read)"
        )
    for seen in best.values():
        for symbol, last in seen.items():
            if last > scan.last_ids.get(symbol, -1):
                scan.last_ids[symbol] = last
