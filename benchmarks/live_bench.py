"""The live path, Kafka -> bars, against a bare consume loop over the same topic.

For each symbol count, N synthetic Binance-format trades go into the embedded broker once; then,
in one invocation, over the same topic:

* **bare consume** — a confluent-kafka loop that reads every partition to its end and touches
  each record's value (no decoding): what reading Kafka costs at all;
* **dataflow** — the production dataflow (``build_flow``) to the end of the topic, into the
  embedded ClickHouse (chDB);

and prints trades/s of each and the dataflow's fraction of the bare loop (issue 8: at least 0.8),
then the dataflow's rate at the largest symbol count as a fraction of its rate at 5 symbols
(issue 11: at least 0.8 at 2,000 symbols), when both were run. With ``--scale-out``
it also times ``python -m bytewax.run dataflows.ohlcv:flow`` end to end (start-up included) as
one process and as two (``-i/-a``) over the topic of the largest symbol count. Run::

    python benchmarks/live_bench.py [--trades 1000000] [--symbols 1,5,25,500,2000] [--scale-out]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bytewax.testing import run_main
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from dataflow_bench import synthetic_trades

from binance_metrics.dataflow import FlowStats, build_flow
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics, free_port
from binance_metrics.settings import Settings, load_settings
from binance_metrics.store.clickhouse import open_store
from binance_metrics.trades import encode_trade

PARTITIONS = 3
REPO = Path(__file__).resolve().parents[1]


def fill_topic(broker: EmbeddedBroker, topic: str, trades: int, symbols: int) -> None:
    ensure_topics(broker.connection, [topic], PARTITIONS)
    producer = Producer(broker.connection.client_config(**{"linger.ms": 20}))
    for trade in synthetic_trades(trades, symbols):
        while True:
            try:
                producer.produce(topic, key=trade.symbol.encode(), value=encode_trade(trade))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0


def bare_consume(broker: EmbeddedBroker, topic: str) -> tuple[int, float]:
    """Records read and seconds, with the consumer settings of the dataflow's source."""
    started = time.perf_counter()
    consumer = Consumer(
        broker.connection.client_config(
            **{"group.id": "bench", "enable.partition.eof": True, "fetch.wait.max.ms": 50,
               "queued.min.messages": 1_000_000}
        )
    )  # fmt: skip
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    ended = records = 0
    while ended < PARTITIONS:
        for record in consumer.consume(5000, 1):
            error = record.error()
            if error is None:
                record.value()
                records += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                ended += 1
    consumer.close()
    return records, time.perf_counter() - started


def dataflow(settings: Settings, broker: EmbeddedBroker) -> tuple[int, float]:
    stats = FlowStats()
    started = time.perf_counter()
    run_main(build_flow(settings, broker.connection, stats=stats))
    return stats.trades, time.perf_counter() - started


def standalone(broker: EmbeddedBroker, topic: str, processes: int, work: Path) -> float:
    """Seconds for ``bytewax.run`` as ``processes`` processes, start-up included."""
    store = work / f"store-{processes}"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        KAFKA_TOPIC=topic,
        KAFKA_DLQ_TOPIC=f"{topic}-dlq",
        CLICKHOUSE_URL=f"chdb://{store}",
        DATA_DIR=str(store),
        STOP_AT_END="true",
        LOG_LEVEL="WARNING",
    )
    command = [sys.executable, "-m", "bytewax.run", "dataflows.ohlcv:flow"]
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    started = time.perf_counter()
    running = [
        subprocess.Popen(
            command + (["-i", str(i), "-a", addresses] if processes > 1 else []),
            env=env,
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(processes)
    ]
    for process in running:
        assert process.wait() == 0, f"bytewax.run exited with {process.returncode}"
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument(
        "--symbols", default="1,5,25,500,2000", help="comma-separated symbol counts"
    )
    parser.add_argument("--scale-out", action="store_true", help="also time 1 vs 2 processes")
    args = parser.parse_args()
    counts = [int(count) for count in args.symbols.split(",")]

    work = Path(tempfile.mkdtemp(prefix="live-bench-"))
    dsn = f"chdb://{work / 'store'}"
    store = open_store(dsn, "spot")
    rates: dict[int, float] = {}
    with EmbeddedBroker() as broker:
        for symbols in counts:
            topic = f"live-{symbols}"
            fill_topic(broker, topic, args.trades, symbols)
            ensure_topics(broker.connection, [f"{topic}-dlq"], 1)
            settings = load_settings(
                KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, KAFKA_TOPIC=topic,
                KAFKA_DLQ_TOPIC=f"{topic}-dlq", CLICKHOUSE_URL=dsn, STOP_AT_END=True,
            )  # fmt: skip
            records, bare_s = bare_consume(broker, topic)
            store.command("TRUNCATE TABLE binance.ohlcv")
            trades, flow_s = dataflow(settings, broker)
            assert records == trades == args.trades, (records, trades)
            rates[symbols] = trades / flow_s
            print(
                f"{symbols:5d} symbols  bare consume {records / bare_s:>10,.0f} records/s  "
                f"dataflow {trades / flow_s:>10,.0f} trades/s  "
                f"fraction {bare_s / flow_s:.2f}"
            )
        if 5 in rates and max(rates) > 5:
            most = max(rates)
            print(
                f"dataflow at {most} symbols / at 5 symbols: {rates[most]:,.0f} / "
                f"{rates[5]:,.0f} trades/s = {rates[most] / rates[5]:.2f}"
            )
        if args.scale_out:
            topic = f"live-{counts[-1]}"
            one = standalone(broker, topic, 1, work)
            two = standalone(broker, topic, 2, work)
            print(
                f"bytewax.run, {counts[-1]} symbols, start-up included: 1 process {one:.1f} s "
                f"({args.trades / one:,.0f} trades/s), 2 processes {two:.1f} s "
                f"({args.trades / two:,.0f} trades/s): {one / two:.2f}x"
            )
    print(f"machine  {os.cpu_count()} cores, {platform.machine()}, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{datetime.now(UTC):%Y-%m-%d}")  # fmt: skip


if __name__ == "__main__":
    main()
