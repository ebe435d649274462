"""Prometheus metrics of one ingestor instance, in its own registry (tests run several at once).

Counters are bound to their label values once per symbol, so the hot path does no label lookup.
Values the ingestor already keeps (gaps, backfilled and duplicate trades per symbol, connection
state, last-trade age, queue depth) are read from its state at scrape time by a collector, so
there is one source of truth and nothing extra on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

#: Exchange-to-ingestor latency: Binance event time to our receive time, in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)
#: produce() to broker acknowledgement, in seconds.
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)


class IngestMetrics:
    def __init__(self, symbols: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.trades_produced = Counter(
            "binance_trades_produced", "Trades acknowledged by Kafka", ["symbol"], registry=r
        )
        self.dlq_messages = Counter(
            "binance_dlq_messages", "Frames sent to the dead-letter topic", ["reason"], registry=r
        )
        self.control_messages = Counter(
            "binance_ws_control_messages",
            "Non-trade messages from the server",
            ["kind"],
            registry=r,
        )
        self.reconnects = Counter(
            "binance_ws_reconnects",
            "New WebSocket connections after the first",
            ["reason"],
            registry=r,
        )
        self.connect_failures = Counter(
            "binance_ws_connect_failures", "Connection attempts that failed", registry=r
        )
        self.delivery_errors = Counter(
            "kafka_delivery_errors",
            "Failed Kafka deliveries (each is retried)",
            ["topic"],
            registry=r,
        )
        self.trade_latency = Histogram(
            "binance_trade_latency_seconds",
            "Ingestion time minus Binance event time (latencyMs)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ack_latency = Histogram(
            "kafka_produce_ack_seconds",
            "Time from produce() to Kafka acknowledgement",
            buckets=ACK_BUCKETS,
            registry=r,
        )
        self.by_symbol: dict[str, _SymbolCounters] = {}
        self.add_symbols(symbols)

    def add_symbols(self, symbols: Iterable[str]) -> None:
        """Counters for symbols listed while running (``SYMBOLS=ALL``); known ones stay."""
        for symbol in symbols:
            if symbol not in self.by_symbol:
                self.by_symbol[symbol] = _SymbolCounters(self, symbol)

    def add_state_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self.registry.register(_CallbackCollector(collect))


def reconcile_mismatches(counts: Mapping[tuple[str, str], int]) -> CounterMetricFamily:
    """``binance_metrics_reconcile_mismatches_total{symbol,field}``, from the continuous
    reconciliation's counts (``field``: a kline field, or ``missing_here``/``missing_there``)."""
    family = CounterMetricFamily(
        "binance_metrics_reconcile_mismatches",
        "Stored bars that differ from Binance's REST klines, per field",
        labels=["symbol", "field"],
    )
    for (symbol, field), count in sorted(counts.items()):
        family.add_metric([symbol, field], count)
    return family


class _SymbolCounters:
    """The label children of one symbol, bound once."""

    __slots__ = ("produced",)

    def __init__(self, metrics: IngestMetrics, symbol: str) -> None:
        self.produced = metrics.trades_produced.labels(symbol)


class _CallbackCollector(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()
