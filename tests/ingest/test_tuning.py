"""The ingestor's tuning is the ``INGEST`` settings group: reachable as ``INGEST__<FIELD>``,
validated at start with the variable named, and documented with its default."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from binance_metrics.errors import ConfigError
from binance_metrics.ingest.tuning import IngestTuning
from binance_metrics.settings import load_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.env
    for name in list(os.environ):
        if name.upper().startswith("INGEST"):
            monkeypatch.delenv(name)


def test_a_nested_variable_sets_one_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST__SILENCE_TIMEOUT_S", "30")
    monkeypatch.setenv("INGEST__RESUME_FROM_KAFKA", "false")
    tuning = load_settings().INGEST
    assert tuning.silence_timeout_s == 30.0 and tuning.resume_from_kafka is False
    defaults = IngestTuning()
    others = set(IngestTuning.model_fields) - {"silence_timeout_s", "resume_from_kafka"}
    assert {name: getattr(tuning, name) for name in others} == {
        name: getattr(defaults, name) for name in others
    }


def test_overrides_merge_with_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST__SILENCE_TIMEOUT_S", "30")
    tuning = load_settings(INGEST={"max_resume_gap": 5}).INGEST
    assert (tuning.silence_timeout_s, tuning.max_resume_gap) == (30.0, 5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INGEST__SILENCE_TIMEOUT_S", "0"),
        ("INGEST__STREAMS_PER_CONNECTION", "1025"),  # Binance's limit
        ("INGEST__CONNECTION_ATTEMPTS", "301"),  # more would get the IP banned
        ("INGEST__CONNECTION_ATTEMPT_WINDOW_S", "60"),
        ("INGEST__REST_WEIGHT_BUDGET", "7000"),
        ("INGEST__MAX_CONNECTION_AGE_S", "90000"),  # Binance cuts at 24 h
        ("INGEST__RESUME_FROM_KAFKA", "perhaps"),
        ("INGEST__MAX_PENDING_PER_SYMBOL", "lots"),
        ("INGEST__SILENCE_TIMEOUT", "30"),  # a misspelt name is refused, not ignored
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name}={value!r}"):
        load_settings()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"INGEST__MAX_FRAME_BYTES": "2000000"}, "max_message_bytes"),
        ({"INGEST__BACKFILL_RETRY_BASE_S": "60"}, "backfill_retry_cap_s"),
    ],
)
def test_inconsistent_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def _doc_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_every_field_is_documented_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(INGEST__[A-Z0-9_]+)` \| `([^`]*)` \|", DOC.read_text(), re.M))
    expected = {
        f"INGEST__{name.upper()}": _doc_value(field.default)
        for name, field in IngestTuning.model_fields.items()
    }
    assert rows == expected
