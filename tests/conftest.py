"""Shared fixtures: a real Kafka-protocol broker (Tansu) and the real recordings in tests/data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from binance_metrics.kafka.broker import EmbeddedBroker

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker for the whole test session (give each test its own topics)."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so tests sharing the session broker never see each other's records."""
    return f"t{uuid.uuid4().hex[:10]}"
