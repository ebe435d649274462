"""Helpers of the deploy tests: the repository's files, and Compose-style interpolation.

Docker does not run where these tests run, so they read compose.yaml the way Compose does
(YAML, then ``${VAR...}`` interpolation from an environment) and check the result against the
code: Settings fields, entry points, paths, users and the schema.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
DOCKERFILE = REPO / "containers" / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
#: The schema: package data that the store reads, and the file compose mounts into the server.
INIT_SQL = REPO / "src" / "binance_metrics" / "store" / "schema" / "init.sql"
USERS_XML = REPO / "clickhouse" / "users.d" / "binance-users.xml"
GRAFANA = REPO / "grafana" / "provisioning"
DASHBOARD = GRAFANA / "dashboards" / "binance-ohlcv.json"

#: Our two application services (built from containers/Dockerfile, configured by Settings).
APP_SERVICES = ("ingestor", "dataflow")

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A required variable (``${VAR:?message}``) is missing, as ``docker compose`` reports it."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Expand one string as Compose does: ``$$``, ``$VAR``, ``${VAR:-d}``, ``${VAR:?e}``..."""

    def expand(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        empty = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("-", ":-"):
            return arg if empty else str(current)
        if op in ("?", ":?"):
            if empty:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return str(current)
        if op in ("+", ":+"):
            return "" if empty else arg
        return "" if current is None else str(current)

    return _VAR.sub(expand, value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(item, env) for key, item in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def env_example() -> dict[str, str]:
    """``KEY=value`` lines of .env.example (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example: not KEY=value: {line!r}"
        values[key.strip()] = value.strip()
    return values


def filled_env() -> dict[str, str]:
    """.env.example with every empty value (the passwords) filled, as an operator would."""
    example = env_example()
    return {key: value or f"test-{key.lower()}-0123456789abcdef" for key, value in example.items()}


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml interpolated with ``env`` (default: the filled-in .env.example)."""
    tree = interpolate_tree(raw_compose(), filled_env() if env is None else env)
    assert isinstance(tree, dict)
    return tree


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.partition("=") for item in environment)
        return {key: value for key, _, value in pairs}
    return {key: "" if value is None else str(value) for key, value in environment.items()}


def run_chdb(data_dir: Path, setup: list[str], queries: dict[str, str]) -> dict[str, Any]:
    """Run ``queries`` on a fresh chDB store with init.sql applied, in a subprocess."""
    job = {
        "data_dir": str(data_dir),
        "schema": INIT_SQL.read_text(encoding="utf-8"),
        "setup": setup,
        "queries": queries,
    }
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("chdb_runner.py"))],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"chdb runner failed:\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result
