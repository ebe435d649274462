"""The embedded broker never outlives ``replay`` or ``up``, whatever ends them: Ctrl-C, SIGTERM
(``kill``, ``timeout``, a service manager) or ``kill -9``. The runs are real processes, and the
broker is found and watched through /proc. (``replay`` starts a broker by default only for bad
rows: these runs replay through Kafka.)"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from binance_metrics.kafka.broker import free_port
from tests.cli.support import CLI, cli_env
from tests.pipeline.support import Up, wait_for
from tests.support.data import DATA

XRPETH_TRADES = DATA / "XRPETH-aggTrades-2019-10-11_2019-10-12.csv"
CAPTURE = DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"
SIGNALS: list[signal.Signals] = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _tansu_child(parent: int) -> int | None:
    """The broker started by ``parent``: its child whose command line is a Tansu broker's."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or int(stat[1]) != parent:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"broker" in cmdline and b"--listener-url" in cmdline:
            return int(entry.name)
    return None


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for a reaper (it runs nothing)."""
    stat = _stat(pid)
    return stat is None or stat[0] in ("Z", "X")


def _assert_broker_dies_with(process: subprocess.Popen[str], signum: int) -> int:
    broker = wait_for(lambda: _tansu_child(process.pid), 60, "the embedded broker")
    process.send_signal(signum)
    code = process.wait(120)
    deadline = time.monotonic() + 20
    while not _gone(broker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(broker), f"the broker (pid {broker}) outlived its run ({signum!r})"
    return code


PRODUCING = "trade messages so far"  # logged once a file is in the topic
RUNNING = "running the dataflow"


@pytest.mark.parametrize(
    ("signum", "when"),
    [
        *(pytest.param(s, PRODUCING, id=f"{s.name}-producing") for s in SIGNALS),
        *(pytest.param(s, RUNNING, id=f"{s.name}-dataflow") for s in SIGNALS[:2]),
    ],
)
def test_replay_takes_its_broker_with_it(tmp_path: Path, signum: signal.Signals, when: str) -> None:
    log = tmp_path / "replay.log"
    with log.open("w") as out:
        # The same file many times over: a replay of some seconds (a rerun adds nothing).
        replay = subprocess.Popen(
            [*CLI, "replay", "--through-kafka", *[str(XRPETH_TRADES)] * 40],
            env=cli_env(tmp_path / "data"), cwd=tmp_path, stdout=out, stderr=out, text=True,
        )  # fmt: skip
        try:
            wait_for(lambda: when in log.read_text(), 120, repr(when))
            code = _assert_broker_dies_with(replay, signum)
        finally:
            if replay.poll() is None:
                replay.kill()
                replay.wait()
    # Killed: -9; interrupted: 128 + the signal, as for any command.
    assert code == (-9 if signum == signal.SIGKILL else 128 + signum), log.read_text()[-3000:]
    assert "Traceback" not in log.read_text() and "panicked" not in log.read_text()


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: s.name)
def test_up_takes_its_broker_with_it(tmp_path: Path, signum: signal.Signals) -> None:
    up = Up(tmp_path, CAPTURE, speed=50, port=free_port(), SYMBOLS="BTCUSDT")
    try:
        wait_for(lambda: up.health().status_code == 200, 60, "a healthy ingestor")
        code = _assert_broker_dies_with(up.process, signum)
    finally:
        up.kill()
    # Ctrl-C and SIGTERM alike stop it gracefully: every bar written, exit status 0.
    assert code == (-9 if signum == signal.SIGKILL else 0), up.log()[-3000:]
