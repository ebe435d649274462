"""The reconcile tests' store: 48 hours of real XRPETH aggTrades replayed into it."""

from __future__ import annotations

import pytest

from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.replay import replay
from binance_metrics.store.clickhouse import Store
from tests.support.data import XRPETH_AGG_TRADES
from tests.support.pipeline import pipeline_settings


@pytest.fixture
def xrpeth_store(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Store:
    """The session store holding the 2,880 bars of the XRPETH replay, and CLICKHOUSE_URL set
    to it (for ``main``)."""
    summary = replay([XRPETH_AGG_TRADES], pipeline_settings(broker, empty_store, topic_prefix))
    assert summary.bars_written == 2880
    monkeypatch.setenv("CLICKHOUSE_URL", empty_store.dsn)
    return empty_store
