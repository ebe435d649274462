"""Invalid configuration stops the program at start, naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from binance_metrics.errors import ConfigError
from binance_metrics.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.env
    for name in ("SYMBOLS", "HEALTH_PORT", "CLICKHOUSE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_run_the_embedded_pipeline() -> None:
    settings = load_settings()
    assert settings.embedded_kafka and settings.SYMBOLS == ("BTCUSDT",)
    assert settings.clickhouse_dsn.startswith("chdb://")
    assert settings.KAFKA_TOPIC == "binance-trades"


def test_symbols_are_parsed_and_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMBOLS", "btcusdt, ETHUSDT ethusdt")
    assert load_settings().SYMBOLS == ("BTCUSDT", "ETHUSDT")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYMBOLS", "BTC-USDT"),
        ("HEALTH_PORT", "99999"),
        ("WATERMARK_WAIT_S", "-1"),
        ("CLICKHOUSE_URL", "mysql://x"),
        ("BINANCE_WS_URL", "http://example"),
        ("RECONNECT_DELAY_S", "zero"),
        ("STOP_AT_END", "perhaps"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_delays_must_be_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONNECT_DELAY_S", "30")
    monkeypatch.setenv("MAX_RECONNECT_DELAY_S", "10")
    with pytest.raises(ConfigError, match="MAX_RECONNECT_DELAY_S"):
        load_settings()


def test_the_cli_stops_at_start_with_the_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "binance_metrics.cli", "bars", "--symbol", "BTCUSDT"],
        env={"PATH": "/usr/bin:/bin", "HEALTH_PORT": "http"}, cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "HEALTH_PORT='http'" in result.stderr
    assert not (tmp_path / "data").exists(), "nothing may start before the check"
