"""The deploy tests compare files with Settings defaults: keep the caller's environment out."""

from __future__ import annotations

import pytest

from binance_metrics.settings import Settings


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
