"""Kafka problems at start, as a user meets them: one line naming the setting, a non-zero exit
status, no traceback and no raw librdkafka line; each command in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from binance_metrics.kafka.broker import free_port
from tests.conftest import DATA

CAPTURE = DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"
CLI = [sys.executable, "-m", "binance_metrics.cli"]


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "HEALTH_PORT": str(free_port())}
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL"):
        environ.pop(name, None)
    return subprocess.run(
        [*CLI, *args], env={**environ, **env}, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [["up", "--exchange", f"replay:{CAPTURE}"], ["replay", str(CAPTURE)], ["ingest"]],
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
