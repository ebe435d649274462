"""The wheel, installed (not editable) into a fresh virtual environment, works on its own.

The wheel is built from a clean copy of the checkout with this environment's build backend (no
download) and installed with ``--no-deps``; its dependencies come from this environment's
site-packages, appended by a ``.pth`` line. A path line only extends ``sys.path``: the ``.pth``
files in that directory, among them the editable install's ``__editable__.*.pth`` pointing at
``src/``, are not processed, so ``binance_metrics`` can only come from the wheel. The commands run
outside the repository, without ``PYTHONPATH``, as a user runs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from binance_metrics.settings import Settings
from binance_metrics.web.routes import plotly_js_path
from tests.support.data import REPO, XRPETH_AGG_TRADES, XRPETH_KLINES

PACKAGE = REPO / "src" / "binance_metrics"
#: Where this environment's packages are installed (the dependencies the wheel runs with).
SITE_DIRS = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
#: Build state, local state, secrets and caches, left out of the copy that is built: a stale
#: build/lib would put files in the wheel that package data no longer names.
_TOP_LEVEL_STATE = {".git", ".venv", "build", "dist", "data", ".env"}
_CACHES = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}

_WHERE_FROM = """
import importlib.metadata, json, sys
import binance_metrics
dist = importlib.metadata.distribution("binance-metrics")
print(json.dumps({
    "file": binance_metrics.__file__,
    "dist": str(dist.locate_file("binance_metrics/__init__.py")),
    "direct_url": json.loads(dist.read_text("direct_url.json") or "{}"),
    "path": sys.path,
    "editable_modules": sorted(m for m in sys.modules if m.startswith("__editable__")),
}))
"""

_SERVE_PAGE = """
import hashlib, json
from fastapi import FastAPI
from fastapi.testclient import TestClient
from binance_metrics.web import create_router
app = FastAPI()
app.include_router(create_router(lambda: None, ["XRPETH"]))  # the store serves only /api
client = TestClient(app)
paths = ["/", "/static/app.js", "/static/style.css", "/static/plotly.min.js"]
print(json.dumps({p: [(r := client.get(p)).status_code, hashlib.sha256(r.content).hexdigest()]
                  for p in paths}))
"""


def _run(args: Sequence[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def _not_sources(directory: str, names: list[str]) -> set[str]:
    state = _TOP_LEVEL_STATE if Path(directory) == REPO else set()
    return {n for n in names if n in state or n in _CACHES or n.endswith(".egg-info")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("checkout") / "binance-metrics"
    shutil.copytree(REPO, source, ignore=_not_sources)
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--check-build-dependencies", "--wheel-dir", out, source])  # fmt: skip
    (built,) = out.glob("binance_metrics-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", root])
    python = root / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", wheel])  # fmt: skip
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     env=_user_env()).stdout.strip())  # fmt: skip
    (site / "zz_test_dependencies.pth").write_text("".join(f"{d}\n" for d in SITE_DIRS))
    return root


def _user_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH and without any of the application's settings."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", *Settings.model_fields}
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, **extra}


def _editable_paths() -> set[str]:
    """The directories that this environment's editable installs put on sys.path."""
    paths = set()
    for site in SITE_DIRS:
        for pth in Path(site).glob("__editable__*.pth"):
            for line in pth.read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.startswith(("#", "import")):
                    paths.add(str(Path(line.strip()).resolve()))
    return paths


def test_the_wheel_holds_every_file_the_package_reads(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {n for n in archive.namelist() if n.startswith("binance_metrics/")}
    sources = {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {"binance_metrics/store/schema/init.sql", "binance_metrics/py.typed",
            "binance_metrics/web/static/index.html"} <= sources  # fmt: skip
    assert sorted(sources - in_wheel) == []


def test_binance_metrics_comes_from_the_wheel_not_from_src(venv: Path, tmp_path: Path) -> None:
    seen = json.loads(
        _run([venv / "bin" / "python", "-c", _WHERE_FROM], env=_user_env(), cwd=tmp_path).stdout
    )
    assert Path(seen["file"]).resolve().is_relative_to(venv.resolve())
    assert Path(seen["dist"]).resolve().is_relative_to(venv.resolve())
    assert "archive_info" in seen["direct_url"], seen["direct_url"]  # a wheel, not editable
    on_path = {str(Path(p).resolve()) for p in seen["path"] if p}
    assert str(PACKAGE.parent) not in on_path
    assert not _editable_paths() & on_path
    assert seen["editable_modules"] == []
    assert set(SITE_DIRS) <= set(seen["path"])  # where the dependencies come from


def test_replay_then_bars_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    env = _user_env(DATA_DIR=str(tmp_path / "data"))
    cli = venv / "bin" / "binance-metrics"
    replayed = _run([cli, "replay", XRPETH_AGG_TRADES], env=env, cwd=tmp_path).stdout
    summary = dict(line.rsplit(maxsplit=1) for line in replayed.splitlines())
    counts = ("messages", "trades", "bars written", "late trades", "dead-letters")
    assert [summary[name] for name in counts] == ["10063", "11884", "2880", "0", "0"], replayed

    args = ["bars", "--symbol", "XRPETH", "--limit", "3", "--format", "binance"]
    printed = _run([cli, *args], env=env, cwd=tmp_path).stdout.splitlines()
    # Binance's klines of these minutes: open time to volume, as the 12-column file starts.
    klines = XRPETH_KLINES.read_text().splitlines()[-3:]
    assert [",".join(line.split(",")[:6]) for line in printed] == klines


def test_the_installed_wheel_serves_the_candle_page(venv: Path, tmp_path: Path) -> None:
    served = json.loads(
        _run([venv / "bin" / "python", "-c", _SERVE_PAGE], env=_user_env(), cwd=tmp_path).stdout
    )
    static = PACKAGE / "web" / "static"
    files = {
        "/": static / "index.html",
        "/static/app.js": static / "app.js",
        "/static/style.css": static / "style.css",
        "/static/plotly.min.js": plotly_js_path(),
    }
    assert served == {
        path: [200, hashlib.sha256(file.read_bytes()).hexdigest()] for path, file in files.items()
    }
