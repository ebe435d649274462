"""Kafka problems at start, as a user meets them: one line naming the setting, a non-zero exit
status, no traceback and no raw librdkafka line; each command in its own process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from binance_metrics.kafka.broker import free_port
from tests.cli import support
from tests.support.data import BTCUSDT_CAPTURE


def run_cli(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """With HEALTH_PORT free: never the default 8080, which another program may hold."""
    return support.run_cli(tmp_path, *args, HEALTH_PORT=str(free_port()), **settings)


@pytest.mark.parametrize(
    "args",
    [
        ["up", "--exchange", f"replay:{BTCUSDT_CAPTURE}"],
        ["replay", str(BTCUSDT_CAPTURE)],
        ["ingest"],
    ],
    ids=["up", "replay", "ingest"],
)
def test_an_unreachable_broker_is_one_line_naming_the_setting(
    tmp_path: Path, args: list[str]
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    done = run_cli(tmp_path, *args, KAFKA_BOOTSTRAP_SERVERS=address)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"binance-metrics: error: cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS={address} "
        f"(Connect to ipv4#{address} failed: Connection refused): is the broker running?"
    )
    assert "Traceback" not in done.stderr
    assert "%3|" not in done.stderr  # librdkafka's own stderr format


def test_ingest_without_a_kafka_refuses_to_start_a_private_broker(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "ingest")
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "binance-metrics: KAFKA_BOOTSTRAP_SERVERS is not set: the stand-alone ingestor needs a "
        "real Kafka (the trades must outlive it); `binance-metrics up` is the all-in-one "
        "pipeline with an embedded broker\n"
    )
