"""The headless Chromium of the page tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .cdp import Browser, chromium_binary


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    binary = chromium_binary()
    with Browser(binary, tmp_path / "profile") as running:
        yield running
