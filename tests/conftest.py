"""Shared fixtures: a real Kafka-protocol broker (Tansu) and the real ClickHouse engine (chDB).

Plain helpers (recordings, the reference klines, strategies) are in :mod:`tests.support`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.store.clickhouse import Store, open_store

# The shared assertion helpers report their operands on failure, as assertions in tests do.
pytest.register_assert_rewrite("tests.support", "tests.pipeline.support", "tests.cli.support")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker for the whole test session (give each test its own topics)."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so tests sharing the session broker never see each other's records."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The embedded ClickHouse store (chDB) of the test session.

    chDB serves one data directory per process, so every test shares this one; use
    ``empty_store`` for a test that needs the tables empty.
    """
    return open_store(f"chdb://{tmp_path_factory.mktemp('chdb')}", "spot")


@pytest.fixture
def empty_store(store: Store) -> Store:
    store.command("TRUNCATE TABLE binance.ohlcv")
    store.command("TRUNCATE TABLE binance.ohlcv_forming")
    return store
