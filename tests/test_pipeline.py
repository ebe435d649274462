"""End to end through the real broker (Tansu) and the real ClickHouse engine (chDB)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from bytewax.testing import run_main
from confluent_kafka import Consumer, Producer, TopicPartition

from binance_metrics.dataflow import FlowStats, build_flow
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics
from binance_metrics.recordings import read_recording
from binance_metrics.replay import replay
from binance_metrics.settings import Settings, load_settings
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import INTERVALS, fetch_bars
from binance_metrics.trades import Rejected, TradeMessage, decode_dead_letter, encode_trade
from tests.conftest import DATA
from tests.oracle import FIELDS, reference_klines

XRPETH_TRADES = DATA / "XRPETH-aggTrades-2019-10-11_2019-10-12.csv"
XRPETH_KLINES = DATA / "XRPETH-1m-2019-10-11_2019-10-12.ohlcv.csv"
CAPTURES = [
    DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl",
    DATA / "ETHUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl",
]


def pipeline_settings(broker: EmbeddedBroker, store: Store, prefix: str) -> Settings:
    return load_settings(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        KAFKA_TOPIC=f"{prefix}-trades",
        KAFKA_DLQ_TOPIC=f"{prefix}-dlq",
        CLICKHOUSE_URL=store.dsn,
    )


def table(store: Store, symbol: str) -> list[tuple[object, ...]]:
    return [tuple(vars_of(bar)) for bar in fetch_bars(store, symbol)]


def vars_of(bar: object) -> list[object]:
    return [getattr(bar, name) for name in ("open_time_ms", *FIELDS)]


def read_dlq(broker: EmbeddedBroker, topic: str, partitions: int = 3) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "dlq-check",
                         "enable.partition.eof": True})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values, ended = [], set()
    while len(ended) < partitions:
        msg = consumer.poll(10)
        assert msg is not None, "the DLQ topic did not reach its end in 10 s"
        if msg.error():
            ended.add(msg.partition())
        else:
            values.append(msg.value())
    consumer.close()
    return values


def test_replay_equals_binance_klines_for_all_2880_minutes(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    summary = replay([XRPETH_TRADES], pipeline_settings(broker, empty_store, topic_prefix))
    assert (summary.messages, summary.trades, summary.bad_records) == (10_063, 11_884, 0)

    stored = {bar.open_time_ms: bar for bar in fetch_bars(empty_store, "XRPETH")}
    with XRPETH_KLINES.open() as f:
        klines = list(csv.DictReader(f))
    assert len(klines) == len(stored) == 2880
    zero_minutes = 0
    for kline in klines:
        bar = stored[int(kline["open_time"])]
        for name in ("open", "high", "low", "close", "volume"):
            assert getattr(bar, name) == Decimal(kline[name]), (kline["open_time"], name)
        zero_minutes += bar.trade_count == 0
    assert zero_minutes == 885
    # Binance's worked example (design data README): the busiest minute, 230 aggTrades.
    busiest = stored[1570770900000]
    assert (busiest.trade_count, busiest.quote_volume, busiest.taker_buy_volume) == (
        246, Decimal("99.11133373"), Decimal("67665"),
    )  # fmt: skip


def test_replay_of_live_capture_matches_reference_on_every_field_and_is_idempotent(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    settings = pipeline_settings(broker, empty_store, topic_prefix)
    first = replay(CAPTURES, settings)
    assert first.trades == 19_904 + 14_515
    after_one = {s: table(empty_store, s) for s in ("BTCUSDT", "ETHUSDT")}

    trades = [r for path in CAPTURES for r in read_recording(path)]
    assert all(isinstance(t, TradeMessage) for t in trades)
    expected = reference_klines(t for t in trades if isinstance(t, TradeMessage))
    for (symbol, start), fields in expected.items():
        (bar,) = fetch_bars(empty_store, symbol, start=_utc(start), end=_utc(start + 60_000))
        assert {name: getattr(bar, name) for name in FIELDS} == fields, (symbol, start)
    assert sum(len(rows) for rows in after_one.values()) == len(expected)

    replay(CAPTURES, settings)
    assert {s: table(empty_store, s) for s in ("BTCUSDT", "ETHUSDT")} == after_one


def test_corrupt_records_in_the_topic_go_to_the_dlq_and_good_ones_make_bars(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    settings = pipeline_settings(broker, empty_store, topic_prefix).model_copy(
        update={"STOP_AT_END": True}
    )
    ensure_topics(broker.connection, [settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC], 3)
    good = [r for r in read_recording(CAPTURES[0]) if isinstance(r, TradeMessage)][:500]
    corrupt = [b"\x00\xff binary", b"{}", b'{"e":"trade","s":"BTCUSDT"}', b"[1,2,3]",
               encode_trade(good[0]).replace(b'"p":"', b'"p":"-')]  # fmt: skip
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i, trade in enumerate(good):
        producer.produce(settings.KAFKA_TOPIC, key=b"BTCUSDT", value=encode_trade(trade))
        if i % 100 == 0:
            producer.produce(settings.KAFKA_TOPIC, key=b"BTCUSDT", value=corrupt[i // 100])
    assert producer.flush(10) == 0

    stats = FlowStats()
    run_main(build_flow(settings, broker.connection, stats=stats))

    letters = [decode_dead_letter(v) for v in read_dlq(broker, settings.KAFKA_DLQ_TOPIC)]
    assert sorted(letter.raw_payload for letter in letters) == sorted(
        c.decode("utf-8", errors="backslashreplace") for c in corrupt
    )
    assert all(letter.error and letter.ingestion_time_ms > 0 for letter in letters)
    assert (stats.rejected, stats.trades) == (5, 500)
    expected = reference_klines(good)
    assert len(fetch_bars(empty_store, "BTCUSDT")) == len(expected)


def test_bad_rows_of_a_file_go_to_the_dlq(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str, tmp_path: Path
) -> None:
    lines = XRPETH_TRADES.read_text().splitlines()[:50]
    lines[10] = "13519817,abc,1.0,15373528,15373528,1570752011620,True,True"
    path = tmp_path / "XRPETH-aggTrades-2019-10-11.csv"
    path.write_text("\n".join(lines) + "\n")
    assert isinstance(list(read_recording(path))[10], Rejected)

    settings = pipeline_settings(broker, empty_store, topic_prefix)
    summary = replay([path], settings)
    assert (summary.messages, summary.bad_records) == (49, 1)
    (letter,) = [decode_dead_letter(v) for v in read_dlq(broker, settings.KAFKA_DLQ_TOPIC)]
    assert letter.raw_payload == lines[10]
    assert "abc" in letter.error


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@pytest.fixture(autouse=True)
def _no_env_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL", "KAFKA_TOPIC"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("interval", ["5m", "15m", "1h", "4h", "1d"])
def test_rollups_equal_bars_computed_directly_from_the_trades(
    broker: EmbeddedBroker, store: Store, topic_prefix: str, interval: str
) -> None:
    if len(fetch_bars(store, "XRPETH")) != 2880:  # one replay serves all the parameters
        store.command("TRUNCATE TABLE binance.ohlcv")
        replay([XRPETH_TRADES], pipeline_settings(broker, store, topic_prefix))
    trades = [r for r in read_recording(XRPETH_TRADES) if isinstance(r, TradeMessage)]
    expected = reference_klines(trades, window_ms=INTERVALS[interval] * 1000)
    stored = fetch_bars(store, "XRPETH", interval=interval)
    assert [bar.open_time_ms for bar in stored] == sorted(start for _, start in expected)
    for bar in stored:
        fields = expected[("XRPETH", bar.open_time_ms)]
        assert {name: getattr(bar, name) for name in FIELDS} == fields, (interval, bar.open_time)
