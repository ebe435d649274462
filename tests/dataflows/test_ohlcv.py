"""``python -m bytewax.run dataflows.ohlcv:flow`` as the dataflow container runs it: problems at
start are one line, and SIGINT / SIGTERM end the run cleanly with every bar written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir
from confluent_kafka import Producer

from binance_metrics.export import plain as _plain
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics, free_port
from binance_metrics.recordings import read_recording
from binance_metrics.trades import TradeMessage, encode_trade
from tests.support.data import BTCUSDT_CAPTURE, REPO
from tests.support.oracle import FIELDS, reference_klines

DATAFLOW = [sys.executable, "-m", "bytewax.run", "dataflows.ohlcv:flow"]


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This tree's code first; a chDB store of its own (chDB serves one directory per process)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KAFKA_")}
    path = [str(REPO / "src"), str(REPO), env.get("PYTHONPATH", "")]
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, path)),
        CLICKHOUSE_URL=f"chdb://{tmp_path / 'clickhouse'}",
        DATA_DIR=str(tmp_path),
        PYTHONUNBUFFERED="1",
        **settings,
    )
    return env


def run_dataflow(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        DATAFLOW, env=environment(tmp_path, **settings), cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_an_unreachable_broker_is_one_line_and_no_panic(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    done = run_dataflow(tmp_path, KAFKA_BOOTSTRAP_SERVERS=address)
    assert done.returncode == 1
    assert done.stderr == (
        f"binance-metrics dataflow: error: cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS={address} "
        f"(Connect to ipv4#{address} failed: Connection refused): is the broker running?\n"
    )


def test_without_kafka_settings_it_says_to_use_up(tmp_path: Path) -> None:
    done = run_dataflow(tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "binance-metrics dataflow: KAFKA_BOOTSTRAP_SERVERS is not set: the stand-alone dataflow "
        "reads a real Kafka. Use `binance-metrics up` for the all-in-one embedded pipeline.\n"
    )


def test_missing_topics_are_named_not_created(
    tmp_path: Path, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    done = run_dataflow(
        tmp_path, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        KAFKA_TOPIC=f"{topic_prefix}-trades", KAFKA_DLQ_TOPIC=f"{topic_prefix}-dlq",
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"binance-metrics dataflow: error: no topic '{topic_prefix}-trades', '{topic_prefix}-dlq' "
        f"on KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}: create it"
    )
    assert len(done.stderr.splitlines()) == 1


def produce(broker: EmbeddedBroker, topic: str, trades: list[TradeMessage]) -> None:
    """The trades, then a record that is not one, last in the same partition: once the dataflow
    has dead-lettered it, it has read every trade."""
    producer = Producer(broker.connection.client_config(**{"linger.ms": 20}))
    for trade in trades:
        producer.produce(topic, key=b"BTCUSDT", value=encode_trade(trade))
    producer.produce(topic, key=b"BTCUSDT", value=b"not a trade")
    assert producer.flush(30) == 0


def run_until_read_then_signal(env: dict[str, str], log: Path, signum: signal.Signals) -> str:
    """Run the dataflow until it has read the topic, send ``signum``; return its stderr."""
    with log.open("w") as stderr:
        dataflow = subprocess.Popen(DATAFLOW, env=env, cwd=log.parent, stderr=stderr)
        try:
            deadline = time.monotonic() + 90
            while "dead-lettered" not in log.read_text():
                assert dataflow.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            dataflow.send_signal(signum)
            status = dataflow.wait(60)
        finally:
            dataflow.kill()
    output = log.read_text()
    assert status == 0, output
    assert "panicked" not in output and "Traceback" not in output, output
    assert f"{signum.name}: stopping" in output
    return output


def assert_exact_bars(
    env: dict[str, str], trades: list[TradeMessage], symbol: str = "BTCUSDT"
) -> None:
    """The stored bars of ``symbol`` equal the reference klines of its ``trades``."""
    trades = [trade for trade in trades if trade.symbol == symbol]
    bars = subprocess.run(
        [sys.executable, "-m", "binance_metrics.cli", "bars", "--symbol", symbol,
         "--format", "json"],
        env=env, cwd=Path(env["DATA_DIR"]), capture_output=True, text=True, check=True,
        timeout=60,
    )  # fmt: skip
    stored = json.loads(bars.stdout)
    expected = sorted(reference_klines(trades).items())
    assert [bar["open_time"] for bar in stored] == [start for (_, start), _ in expected]
    for bar, (_, fields) in zip(stored, expected, strict=True):
        assert {name: bar[name] for name in FIELDS} == {
            name: value if name == "trade_count" else _plain(value)
            for name, value in fields.items()
        }, bar["open_time"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_run_cleanly_with_the_open_windows_written(
    tmp_path: Path, broker: EmbeddedBroker, topic_prefix: str, signum: signal.Signals
) -> None:
    topics = {"KAFKA_TOPIC": f"{topic_prefix}-trades", "KAFKA_DLQ_TOPIC": f"{topic_prefix}-dlq"}
    ensure_topics(broker.connection, topics.values(), 3)
    trades = [r for r in read_recording(BTCUSDT_CAPTURE) if isinstance(r, TradeMessage)]
    produce(broker, topics["KAFKA_TOPIC"], trades)
    env = environment(tmp_path, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, **topics)
    run_until_read_then_signal(env, tmp_path / "dataflow.log", signum)
    # The last minute was still open when the signal came: it is written all the same.
    assert_exact_bars(env, trades)


def test_a_stopped_run_with_recovery_continues_where_it_stopped(
    tmp_path: Path, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    """``docker compose stop`` / ``start``: the minute open at the stop is completed by the
    next run (its first part stays in the recovery state), and nothing is read twice."""
    topics = {"KAFKA_TOPIC": f"{topic_prefix}-trades", "KAFKA_DLQ_TOPIC": f"{topic_prefix}-dlq"}
    ensure_topics(broker.connection, topics.values(), 1)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    env = environment(
        tmp_path, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, **topics,
        BYTEWAX_RECOVERY_DIRECTORY=str(recovery), BYTEWAX_SNAPSHOT_INTERVAL="1",
        BYTEWAX_RECOVERY_BACKUP_INTERVAL="0",
    )  # fmt: skip
    trades = [r for r in read_recording(BTCUSDT_CAPTURE) if isinstance(r, TradeMessage)]
    half = len(trades) // 2  # in the middle of a minute
    assert trades[half - 1].trade_time_ms // 60_000 == trades[half].trade_time_ms // 60_000

    produce(broker, topics["KAFKA_TOPIC"], trades[:half])
    run_until_read_then_signal(env, tmp_path / "first.log", signal.SIGTERM)
    produce(broker, topics["KAFKA_TOPIC"], trades[half:])
    second = run_until_read_then_signal(env, tmp_path / "second.log", signal.SIGTERM)
    assert second.count("dead-lettered") == 1, "the second run read the topic from its start"
    assert_exact_bars(env, trades)


def test_an_error_that_ends_the_run_is_one_line_not_a_traceback(
    tmp_path: Path, broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topics = {"KAFKA_TOPIC": f"{topic_prefix}-trades", "KAFKA_DLQ_TOPIC": f"{topic_prefix}-dlq"}
    ensure_topics(broker.connection, topics.values(), 1)
    store = f"http://127.0.0.1:{free_port()}"  # the store sink fails as the run starts
    env = environment(tmp_path, KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, **topics)
    env["CLICKHOUSE_URL"] = store
    done = subprocess.run(
        DATAFLOW, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    # Bytewax prints its own panic header first; the cause is the last line, and only once.
    assert done.stderr.splitlines()[-1].startswith(
        f"binance-metrics dataflow: error: cannot reach ClickHouse at {store}: "
    )
