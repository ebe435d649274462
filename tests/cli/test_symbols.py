"""``SYMBOLS`` patterns as a user meets them: a pattern that matches no trading symbol stops
``binance-metrics ingest`` with exit 2 and a line naming ``SYMBOLS``."""

from __future__ import annotations

from pathlib import Path

from binance_metrics.kafka.broker import EmbeddedBroker, free_port
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.market import synthetic_market

from .support import error_line, run_cli


def test_a_pattern_matching_nothing_stops_ingest_naming_symbols(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    with LocalExchange(synthetic_market(("BTCUSDT", "ETHUSDT"), 1)) as exchange:
        done = run_cli(
            tmp_path,
            "ingest",
            SYMBOLS="*EUR",
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            BINANCE_WS_URL=exchange.ws_url,
            BINANCE_REST_URL=exchange.rest_url,
            HEALTH_PORT=str(free_port()),
        )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1] == (
        "binance-metrics: SYMBOLS: *EUR matches none of the 2 TRADING symbols of exchangeInfo"
    )
    assert exchange.log.sessions == [], "no connection is opened"


def test_backfill_takes_names_only(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "backfill", "--symbols", "XRPETH,*USDT", "--start", "2019-10-11", "--end",
        "2019-10-11",
    )  # fmt: skip
    assert error_line(result, 2) == (
        "binance-metrics: SYMBOLS: backfill takes symbol names, not *USDT"
    )
