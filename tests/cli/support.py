"""Running ``binance-metrics`` as a user does: its own process, DATA_DIR in a temporary folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "binance_metrics.cli"]
#: Settings of the developer's shell that would point a test at a real broker or store.
_LEAKS = ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL", "SYMBOLS", "KAFKA_SASL_PASSWORD")


def cli_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKS}
    return {**env, "DATA_DIR": str(data_dir), **settings}


def run_cli(cwd: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``binance-metrics ARGS`` in ``cwd`` (no ./.env there), DATA_DIR ``cwd/data``."""
    return subprocess.run(
        [*CLI, *args], env=cli_env(cwd / "data", **settings), cwd=cwd,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def error_line(result: subprocess.CompletedProcess[str], code: int, *, alone: bool = True) -> str:
    """The error line of a failed command, after checking its exit code, that no traceback was
    printed and (``alone``) that stderr holds that one line and nothing else."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "panicked" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines and lines[-1].startswith("binance-metrics"), result.stderr[-3000:]
    if alone:
        assert len(lines) == 1, result.stderr
    return lines[-1]


#: ``python -c ON_THE_STORE STATEMENT``: run one statement on the store of DATA_DIR (chDB serves a
#: directory to one process, so a test changes a command's store from a process of its own).
ON_THE_STORE = (
    "import sys; from binance_metrics.settings import load_settings; from "
    "binance_metrics.store.clickhouse import open_store; "
    "s = load_settings(); open_store(s.clickhouse_dsn, s.MARKET).command(sys.argv[1])"
)


def on_the_store(cwd: Path, statement: str) -> None:
    """Run ``statement`` on the store of ``cwd/data`` (as :func:`run_cli` uses it)."""
    subprocess.run(
        [sys.executable, "-c", ON_THE_STORE, statement],
        env=cli_env(cwd / "data"), cwd=cwd, check=True, timeout=120,
    )  # fmt: skip
