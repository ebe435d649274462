"""A write that no retry mends stops the dataflow with one line naming the table and the cause,
in the stand-alone dataflow, in ``replay`` and in ``up``; a passing one is retried (the outage
tests: tests/store/test_sink.py, tests/pipeline/test_store_failure.py). The failures are the
engine's own: a column renamed or dropped under the running dataflow, a constraint the bars
break."""

from __future__ import annotations

import re
import threading
from pathlib import Path

from bytewax.testing import run_main

from binance_metrics.dataflow import FlowStats, build_flow
from binance_metrics.errors import deliberate_cause
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics, free_port
from binance_metrics.recordings import read_recording
from binance_metrics.store.clickhouse import Store
from binance_metrics.trades import TradeMessage
from tests.cli.support import error_line, on_the_store, run_cli
from tests.pipeline.support import Up, produce, wait_for
from tests.support.data import BTCUSDT_CAPTURE, XRPETH_AGG_TRADES
from tests.support.pipeline import pipeline_settings

#: ClickHouse's own words for the insert (bars go as text, the server checks the columns);
#: the table's id in the middle varies.
UNRECOGNIZED = re.compile(
    r" bar updates not written: binance\.ohlcv cannot be written \(DatabaseError: Code: 16\. "
    r"DB::Exception: No such column trade_ids in table binance\.ohlcv \([0-9a-f-]+\)\. "
    r"\(NO_SUCH_COLUMN_IN_TABLE\)\); retrying cannot mend it$"
)


def _trades(path: Path) -> list[TradeMessage]:
    return [r for r in read_recording(path) if isinstance(r, TradeMessage)]


def test_a_column_renamed_under_the_running_dataflow_stops_it(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    settings = pipeline_settings(broker, empty_store, topic_prefix)  # tails the topic
    ensure_topics(broker.connection, [settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC], 3)
    trades = _trades(BTCUSDT_CAPTURE)[:6000]
    produce(broker.connection, settings.KAFKA_TOPIC, trades[:3000])
    stats = FlowStats()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            run_main(build_flow(settings, broker.connection, stats=stats))
        except BaseException as exc:  # noqa: BLE001 - what the test looks at
            failures.append(exc)

    flow = threading.Thread(target=run, daemon=True)
    flow.start()
    wait_for(lambda: stats.bars_written > 0, 120, "the first bars written")
    empty_store.command("ALTER TABLE binance.ohlcv RENAME COLUMN trade_ids TO trade_id_runs")
    try:
        produce(broker.connection, settings.KAFKA_TOPIC, trades[3000:])
        flow.join(120)
        assert not flow.is_alive(), "the dataflow kept retrying a write that cannot succeed"
    finally:
        empty_store.command("ALTER TABLE binance.ohlcv RENAME COLUMN trade_id_runs TO trade_ids")
    (failure,) = failures
    error = deliberate_cause(failure)
    assert error is not None, repr(failure)
    message = str(error)
    assert message.startswith("giving up with "), message
    assert UNRECOGNIZED.search(message), message


def test_replay_into_a_table_whose_constraint_the_bars_break_fails_with_one_line(
    tmp_path: Path,
) -> None:
    # XRPETH's busiest minute has 246 trades. The constraint is kept in the table's metadata.
    on_the_store(
        tmp_path, "ALTER TABLE binance.ohlcv ADD CONSTRAINT small CHECK trade_count <= 200"
    )
    result = run_cli(tmp_path, "replay", str(XRPETH_AGG_TRADES))

    line = error_line(result, 1, alone=False)
    assert line.startswith("binance-metrics: error: giving up with "), line
    assert " bar updates not written: binance.ohlcv cannot be written (DatabaseError: " in line
    assert "(VIOLATED_CONSTRAINT)); retrying cannot mend it" in line, line
    assert "retrying in" not in result.stderr, "a permanent failure was retried"


def test_up_stops_with_one_line_when_a_column_is_dropped_under_it(tmp_path: Path) -> None:
    up = Up(tmp_path, BTCUSDT_CAPTURE, speed=30, port=free_port(), SYMBOLS="BTCUSDT")
    try:
        wait_for(lambda: up.health().status_code == 200, 60, "a healthy ingestor")
        wait_for(lambda: up.produced() >= 2000, 60, "trades flowing")
        up.store("ALTER TABLE binance.ohlcv DROP COLUMN trade_ids")
        code = up.process.wait(120)  # it stops by itself
    finally:
        up.kill()

    log = up.log()
    assert code == 1, log[-3000:]
    assert "Traceback" not in log and "panicked" not in log, log[-3000:]
    line = log.splitlines()[-1]
    assert line.startswith("binance-metrics: error: giving up with "), line
    assert UNRECOGNIZED.search(line), line
