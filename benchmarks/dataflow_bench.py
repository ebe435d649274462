"""Dataflow throughput: the production flow against the naive flow, in one invocation.

N synthetic Binance-format trades of several symbols go into the embedded broker once; then

* **naive** — Kafka -> ``json.loads`` -> one ``fold_window`` step per trade -> ClickHouse, and
* **binance-metrics** — the production dataflow (batch pre-aggregation, msgspec decoding) ->
  ClickHouse,

each read the whole topic to its end, into the same embedded store. The script checks the
production flow's bars against bars folded in plain Python from the same trades (it fails if they
differ), says how many of the naive flow's bars differ (its event clock drops trades it judges
late, more of them on a busy machine: that is the naive flow's fault, not the benchmark's), and
prints trades/s of each and the ratio. Run::

    python benchmarks/dataflow_bench.py [--trades 1000000] [--symbols 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from bytewax.testing import run_main
from confluent_kafka import Producer

from binance_metrics.bars import Bar, BarUpdate, merge
from binance_metrics.dataflow import EPOCH, FlowStats, build_flow
from binance_metrics.kafka.broker import EmbeddedBroker, ensure_topics
from binance_metrics.settings import load_settings
from binance_metrics.store.clickhouse import open_store
from binance_metrics.store.sink import ClickHouseBarSink, output_bars
from binance_metrics.trades import TradeMessage, encode_trade, parse_scaled

START_MS = 1_723_161_600_000


def synthetic_trades(count: int, symbols: int, seed: int = 7) -> list[TradeMessage]:
    """Trades at ~200/s per symbol, prices on a random walk, like a busy spot market."""
    rnd = random.Random(seed)
    names = [f"SYM{i}USDT" for i in range(symbols)]
    prices = {name: 60_000 * 10**8 for name in names}
    ids = dict.fromkeys(names, 1_000_000)
    trades = []
    time_ms = START_MS
    for _ in range(count):
        name = rnd.choice(names)
        time_ms += rnd.choice((0, 0, 1, 2, 5))
        prices[name] += rnd.randint(-5_000_000, 5_000_000)
        ids[name] += 1
        price = f"{prices[name] // 10**8}.{prices[name] % 10**8:08d}"
        trades.append(
            TradeMessage(
                event_type="trade",
                event_time_ms=time_ms + 1,
                symbol=name,
                trade_id=ids[name],
                price=price,
                quantity=f"0.{rnd.randint(1, 99_999_999):08d}",
                trade_time_ms=time_ms,
                buyer_is_maker=rnd.random() < 0.5,
                ingestion_time_ms=time_ms + 20,
                latency_ms=19,
            )
        )
    return trades


#: A bar as compared: symbol, open time (ms), then open, high, low, close, volume (scaled by
#: 10**8) and the trade count.
Row = tuple[str, int, int, int, int, int, int, int]


def reference_rows(trades: list[TradeMessage]) -> list[Row]:
    """The 1-minute bars of ``trades``, folded in plain Python (no Bytewax, no Kafka)."""
    bars: dict[tuple[str, int], Bar] = {}
    for t in trades:
        key = (t.symbol, t.trade_time_ms - t.trade_time_ms % 60_000)
        bar = bars.setdefault(key, Bar.empty())
        bar.add(parse_scaled(t.price), parse_scaled(t.quantity), t.trade_id, t.trade_id,
                t.buyer_is_maker)  # fmt: skip
    return [(symbol, start, b.open, b.high, b.low, b.close, b.volume, b.trade_count)
            for (symbol, start), b in sorted(bars.items())]  # fmt: skip


STORED_ROWS = (
    "SELECT symbol, toInt64(toUnixTimestamp64Milli(toDateTime64(window_start, 3))), "
    + ", ".join(f"toInt64({c} * 100000000)" for c in ("open", "high", "low", "close", "volume"))
    + ", toInt64(trade_count) FROM binance.ohlcv FINAL WHERE trade_count > 0 "
    "ORDER BY symbol, window_start"
)


def naive_flow(bootstrap: str, topic: str, dsn: str, wait: timedelta) -> Dataflow:
    """What a first attempt looks like: json per message, the window fold per trade."""
    flow = Dataflow("naive")
    source = KafkaSource([bootstrap], [topic], tail=False, batch_size=5000)
    messages = op.input("in", flow, source)

    def decoded(msg: object) -> dict[str, Any]:
        # KafkaSource raises on a Kafka error (raise_on_errors), so every item is a message.
        assert isinstance(msg, KafkaSourceMessage) and msg.value is not None
        trade: dict[str, Any] = json.loads(msg.value)
        return trade

    trades = op.map("json", messages, decoded)
    keyed = op.key_on("key", trades, lambda trade: trade["s"])

    def ts(trade: dict[str, Any]) -> datetime:
        return EPOCH + timedelta(milliseconds=trade["T"])

    def folder(bar: Bar, trade: dict[str, Any]) -> Bar:
        return bar.add(parse_scaled(trade["p"]), parse_scaled(trade["q"]), trade["t"], trade["t"],
                       trade["m"])  # fmt: skip

    clock = EventClock(ts, wait_for_system_duration=wait)
    windows = fold_window("w", keyed, clock, TumblingWindower(timedelta(minutes=1), EPOCH),
                          Bar.empty, folder, merge)  # fmt: skip
    rows = op.map("row", windows.down, lambda kv: BarUpdate(kv[0], kv[1][0] * 60_000, kv[1][1]))
    output_bars("out", rows, ClickHouseBarSink(dsn))
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=5)
    args = parser.parse_args()

    trades = synthetic_trades(args.trades, args.symbols)
    store_dir = tempfile.mkdtemp(prefix="bench-chdb-")
    dsn = f"chdb://{store_dir}"
    store = open_store(dsn)
    with EmbeddedBroker() as broker:
        settings = load_settings(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, CLICKHOUSE_URL=dsn, STOP_AT_END=True
        )
        ensure_topics(broker.connection, [settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC], 3)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20})
        for trade in trades:
            producer.produce(
                settings.KAFKA_TOPIC, key=trade.symbol.encode(), value=encode_trade(trade)
            )
            producer.poll(0)
        producer.flush(60)
        print(f"{args.trades:,} trades of {args.symbols} symbols in the broker")

        results = {}
        tables = {}
        for name in ("naive", "binance-metrics"):
            store.command("TRUNCATE TABLE binance.ohlcv")
            if name == "naive":
                flow = naive_flow(broker.bootstrap_servers, settings.KAFKA_TOPIC, dsn,
                                  timedelta(seconds=settings.WATERMARK_WAIT_S))  # fmt: skip
            else:
                flow = build_flow(settings, broker.connection, stats=FlowStats())
            started = time.perf_counter()
            run_main(flow)
            elapsed = time.perf_counter() - started
            results[name] = args.trades / elapsed
            tables[name] = store.query(STORED_ROWS)
            print(f"{name:16s} {elapsed:7.2f} s  {results[name]:>10,.0f} trades/s")

    expected = reference_rows(trades)
    assert tables["binance-metrics"] == expected, "binance-metrics' bars differ from the reference"
    wrong = len(set(expected) - set(tables["naive"]))
    print(f"bars             binance-metrics: all {len(expected):,} equal the reference; "
          f"naive: {wrong:,} differ (trades its event clock dropped as late)")  # fmt: skip
    print(f"ratio            {results['binance-metrics'] / results['naive']:.1f}x the naive flow")
    print(f"machine          {platform.machine()}, {platform.python_implementation()} "
          f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}")  # fmt: skip


if __name__ == "__main__":
    main()
