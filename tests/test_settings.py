"""Invalid configuration stops the program at start, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from binance_metrics.errors import ConfigError
from binance_metrics.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.env
    for name in ("SYMBOLS", "HEALTH_PORT", "CLICKHOUSE_URL", "KAFKA_BOOTSTRAP_SERVERS",
                 "KAFKA_SASL_PASSWORD", "KAFKA_SECURITY_PROTOCOL"):  # fmt: skip
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
        ("WINDOW_SECONDS", "30"),  # 60 (1m bars) or 1 (1s bars): the tables Binance has
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


def test_a_url_password_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKHOUSE_URL", "tcp://grafana:s3cret@host")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert str(raised.value) == (
        "invalid configuration: CLICKHOUSE_URL='tcp://grafana:***@host': must start with "
        "http://, https:// or chdb:// (see docs/configuration.md)"
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_MECHANISM, KAFKA_SASL_US"),
        ({"RECONNECT_DELAY_S": "30", "MAX_RECONNECT_DELAY_S": "10"}, "MAX_RECONNECT_DELAY_S"),
    ],
)
def test_a_check_across_variables_shows_no_value_at_all(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    # such a check's input is every setting, secrets included
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("CLICKHOUSE_URL", "http://binance_writer:s3cret@clickhouse:8123")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named) as raised:
        load_settings()
    assert "s3cret" not in str(raised.value) and "\n" not in str(raised.value)


def test_the_clickhouse_url_is_a_secret_of_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://binance_writer:s3cret@clickhouse:8123"
    monkeypatch.setenv("CLICKHOUSE_URL", url)
    settings = load_settings()
    assert settings.clickhouse_dsn == url
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


def test_the_cli_never_prints_the_password(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "binance_metrics.cli", "bars", "--symbol", "BTCUSDT"],
        env={"PATH": "/usr/bin:/bin", "CLICKHOUSE_URL": "tcp://grafana:s3cret@host",
             "KAFKA_SASL_PASSWORD": "s3cret", "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "binance-metrics: invalid configuration: CLICKHOUSE_URL='tcp://grafana:***@host': must "
        "start with http://, https:// or chdb:// (see docs/configuration.md)"
    ]
