"""The OHLCV dataflow for ``python -m bytewax.run dataflows.ohlcv:flow``.

Reads ``KAFKA_TOPIC`` on ``KAFKA_BOOTSTRAP_SERVERS`` and writes 1-minute bars to ClickHouse
(``CLICKHOUSE_URL``, or the embedded store under ``DATA_DIR``). Run on its own, the dataflow
needs a real Kafka: the embedded broker lives inside ``binance-metrics up`` / ``replay``.
"""

from __future__ import annotations

import logging

from binance_metrics.dataflow import build_flow
from binance_metrics.errors import ConfigError
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.settings import load_settings

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

_settings = load_settings()
if _settings.KAFKA_BOOTSTRAP_SERVERS is None:
    raise ConfigError(
        "KAFKA_BOOTSTRAP_SERVERS is not set: the stand-alone dataflow reads a real Kafka. "
        "Use `binance-metrics up` for the all-in-one embedded pipeline."
    )

flow = build_flow(_settings, KafkaConnection.from_settings(_settings))
