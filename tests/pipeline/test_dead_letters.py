"""Records that are not trades go to the dead-letter topic, end to end, and the good ones still
make their bars: corrupt records in the trades topic, and bad rows of a replayed file."""

from __future__ import annotations

from pathlib import Path

from bytewax.testing import run_main
from confluent_kafka import Producer

from binance_metrics.dataflow import FlowStats, build_flow
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics
from binance_metrics.recordings import read_recording
from binance_metrics.replay import replay
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars
from binance_metrics.trades import Rejected, TradeMessage, decode_dead_letter, encode_trade
from tests.support.data import BTCUSDT_CAPTURE, XRPETH_AGG_TRADES
from tests.support.oracle import reference_klines
from tests.support.pipeline import pipeline_settings, read_to_end


def test_corrupt_records_in_the_topic_go_to_the_dlq_and_good_ones_make_bars(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str
) -> None:
    settings = pipeline_settings(broker, empty_store, topic_prefix, STOP_AT_END=True)
    ensure_topics(broker.connection, [settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC], 3)
    good = [r for r in read_recording(BTCUSDT_CAPTURE) if isinstance(r, TradeMessage)][:500]
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

    letters = [decode_dead_letter(v) for v in read_to_end(broker, settings.KAFKA_DLQ_TOPIC)]
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
    lines = XRPETH_AGG_TRADES.read_text().splitlines()[:50]
    lines[10] = "13519817,abc,1.0,15373528,15373528,1570752011620,True,True"
    path = tmp_path / "XRPETH-aggTrades-2019-10-11.csv"
    path.write_text("\n".join(lines) + "\n")
    assert isinstance(list(read_recording(path))[10], Rejected)

    settings = pipeline_settings(broker, empty_store, topic_prefix)
    summary = replay([path], settings)
    assert (summary.messages, summary.bad_records) == (49, 1)
    (letter,) = [decode_dead_letter(v) for v in read_to_end(broker, settings.KAFKA_DLQ_TOPIC)]
    assert letter.raw_payload == lines[10]
    assert "abc" in letter.error
