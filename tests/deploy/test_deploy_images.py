"""containers/Dockerfile and its entry point: base image, build context, layout, commands."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

from tests.deploy.deploy_support import DOCKERFILE, INIT_SQL, REPO

ENTRYPOINT = REPO / "containers" / "dataflow-entrypoint.sh"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    result = []
    for line in lines:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instruction, args in _instructions():
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else words[0]
            current = stages.setdefault(name, [])
        current.append((instruction, args))
    return stages


def _stage_chain(stage: str) -> list[tuple[str, str]]:
    """A stage's instructions, after those of the stages it is built FROM."""
    stages = _stages()
    own = stages[stage]
    parent = own[0][1].split()[0]
    return (_stage_chain(parent) if parent in stages else []) + own


def _last(stage: str, instruction: str) -> str:
    values = [args for ins, args in _stage_chain(stage) if ins == instruction]
    assert values, f"{stage}: no {instruction}"
    return values[-1]


def _dockerignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a pattern covers subpaths."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            tail = pattern[3:]
            hit = any(fnmatch.fnmatchcase(part, tail) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_base_image_is_slim_debian_python_312() -> None:
    bases = [args.split()[0] for ins, args in _instructions() if ins == "FROM"]
    external = [base for base in bases if base not in _stages()]
    assert external, bases
    for base in external:
        assert re.fullmatch(r"python:3\.12(\.\d+)?-slim(-bookworm|-trixie)?", base), base


def test_both_targets_exist() -> None:
    assert {"ingestor", "dataflow"} <= set(_stages())


def test_copied_sources_exist_and_reach_the_build_context() -> None:
    copies = [args for ins, args in _instructions() if ins == "COPY"]
    assert copies
    for args in copies:
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        *sources, _destination = words
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            excluded = _dockerignored(source.rstrip("/"))
            assert not excluded, f"COPY {source}: excluded by .dockerignore"


def test_build_context_leaves_out_secrets_and_local_state() -> None:
    for path in (".env", ".venv", "data", ".git", "tests/data", "src/x/__pycache__"):
        assert _dockerignored(path), path


def test_image_keeps_the_layout_the_code_expects() -> None:
    """The schema is package data under src/ (the image copies src/ whole), and the dataflow
    module is imported from the working directory."""
    from binance_metrics.store.clickhouse import SCHEMA_PATH

    assert Path(str(SCHEMA_PATH)).resolve() == INIT_SQL
    assert INIT_SQL.is_relative_to(REPO / "src")
    workdir = _last("base", "WORKDIR")
    copies = {}
    for ins, args in _instructions():
        if ins == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            for source in words[:-1]:
                copies[source.rstrip("/")] = words[-1].rstrip("/")
    assert copies["src"] == "src" and copies["dataflows"] == "dataflows"
    assert workdir == "/app"
    # Editable: the package, with its schema, stays at /app/src, where COPY put it.
    runs = " ".join(args for ins, args in _stage_chain("base") if ins == "RUN")
    assert "pip install --no-deps -e ." in runs


def test_dependencies_come_from_pyproject() -> None:
    runs = " ".join(args for ins, args in _stage_chain("base") if ins == "RUN")
    assert "tomllib" in runs and "['project']['dependencies']" in runs
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_ingestor_command_is_the_console_script() -> None:
    cmd = json.loads(_last("ingestor", "CMD"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert cmd[0] in scripts and cmd[1:] == ["ingest"]
    env = _last("ingestor", "ENV")
    assert "HEALTH_HOST=0.0.0.0" in env
    assert _last("ingestor", "EXPOSE") == "8080"
    assert _last("ingestor", "USER") == "app"


def test_dataflow_entrypoint_runs_the_flow_module() -> None:
    entrypoint = json.loads(_last("dataflow", "ENTRYPOINT"))
    assert entrypoint == ["dataflow-entrypoint"]
    (import_str,) = json.loads(_last("dataflow", "CMD"))
    module = import_str.split(":")[0]
    assert (REPO / (module.replace(".", "/") + ".py")).is_file()
    copied = [args for ins, args in _stage_chain("dataflow") if ins == "COPY"]
    assert any(args.startswith("containers/dataflow-entrypoint.sh ") for args in copied)
    assert os.access(ENTRYPOINT, os.X_OK)
    assert _last("dataflow", "EXPOSE") == "3030"
    assert _last("dataflow", "USER") == "app"


_TINY_FLOW = """
from bytewax.connectors.stdio import StdOutSink
from bytewax.dataflow import Dataflow
import bytewax.operators as op
from bytewax.testing import TestingSource

flow = Dataflow("tiny")
numbers = op.input("inp", flow, TestingSource([1, 2, 3]))
op.output("out", op.map("double", numbers, lambda x: 2 * x), StdOutSink())
"""


def _run_entrypoint(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "tinyflow.py").write_text(_TINY_FLOW)
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("BYTEWAX_")}
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.update(env)
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "tinyflow:flow"],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_entrypoint_runs_a_flow_without_recovery(tmp_path: Path) -> None:
    proc = _run_entrypoint(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2", "4", "6"]


def test_entrypoint_creates_recovery_partitions_then_resumes(tmp_path: Path) -> None:
    recovery = tmp_path / "state" / "recovery"
    env = {"BYTEWAX_RECOVERY_DIRECTORY": str(recovery), "BYTEWAX_RECOVERY_PARTITIONS": "1"}
    first = _run_entrypoint(tmp_path, **env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["2", "4", "6"]
    assert sorted(p.name for p in recovery.iterdir()) == ["part-0.sqlite3"]
    assert "creating 1 Bytewax recovery partition" in first.stderr
    # A restart finds the partitions, does not re-create them, and resumes after the input it
    # had finished: nothing is emitted twice.
    second = _run_entrypoint(tmp_path, **env)
    assert second.returncode == 0, second.stderr
    assert "creating" not in second.stderr
    assert second.stdout.split() == []
