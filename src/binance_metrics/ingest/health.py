"""Read-only views of a running ingestor's state: the ``/health`` body and the Prometheus state.

``GET /health`` answers 200 when every connection is open and Kafka acknowledges, 503 otherwise::

    {"status": "ok", "problems": [], "produced": 19904, "dlq": 3, "wsConnected": true,
     "reconnects": 2, "connections": [...], "kafka": {"queued": 0, ...},
     "symbols": {"BTCUSDT": {"lastTradeAgeS": 0.41, "produced": 19904, "gaps": 1,
                             "backfilled": 250, "unfilled": 0, "duplicates": 12, ...}}}

Other parts of the process add checks of their own (``up``: ``"store"``): a check answers None
when fine, else what is wrong, which makes the answer 503 and is shown as
``"store": {"ok": false, "problem": "writes failing for 12 s: ..."}``.

Values the ingestor keeps anyway (connection state, last-trade age, gaps, backfilled and duplicate
trades, queue depth) are read here at scrape time rather than counted twice on the hot path.
Both views only read, so they may run off the event loop (a scrape, ``up``'s progress line).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from binance_metrics.ingest.metrics import reconcile_mismatches

if TYPE_CHECKING:
    from binance_metrics.ingest.service import Ingestor


#: A check of another part of the process: None when it is fine, else what is wrong.
Check: TypeAlias = Callable[[], str | None]


def health(
    ingestor: Ingestor, checks: Mapping[str, Check] | None = None
) -> tuple[bool, dict[str, Any]]:
    """``(healthy, body of GET /health)``, with a part ``{"ok", "problem"}`` per check."""
    now = time.monotonic()
    problems: list[str] = []
    connections = []
    for shard in ingestor.shards:
        conn = shard.current
        connections.append(
            {
                "id": shard.index,
                "connected": shard.connected,
                "streams": len(shard.symbols),
                "ageS": round(now - conn.opened_at, 3) if conn is not None else None,
                "reconnects": shard.reconnects,
                "connectFailures": shard.connect_failures,
            }
        )
        if not shard.connected:
            why = f": {shard.last_error}" if shard.last_error else ""
            problems.append(f"connection {shard.index} is not connected{why}")
    producer = ingestor.producer
    kafka_problem = producer.problem if producer is not None else "not started"
    if kafka_problem:
        problems.append(f"kafka: {kafka_problem}")
    symbols = {}
    for symbol, seq in ingestor.sequences.items():
        last = ingestor.last_trade_at.get(symbol)
        symbols[symbol] = {
            "lastTradeAgeS": None if last is None else round(now - last, 3),
            "produced": ingestor.produced[symbol],
            "gaps": seq.gaps,
            "backfilled": seq.backfilled,
            "unfilled": seq.unfilled,
            "notMarketPassed": seq.passed,  # futures: ids of a gap no aggregate covers
            "duplicates": seq.duplicates,
            "heldBehindGap": len(seq.pending),
            "resumedAfter": ingestor.resume.after.get(symbol),
        }
    checked = {}
    for name, check in (checks or {}).items():
        problem = check()
        checked[name] = {"ok": problem is None, "problem": problem}
        if problem is not None:
            problems.append(f"{name}: {problem}")
    shards = ingestor.shards
    body: dict[str, Any] = {
        "status": "degraded" if problems else "ok",
        "problems": problems,
        "produced": sum(ingestor.produced.values()),
        "dlq": ingestor.dlq,
        "wsConnected": bool(shards) and all(s.connected for s in shards),
        "reconnects": sum(s.reconnects for s in shards),
        "connections": connections,
        "kafka": {
            "queued": producer.queued if producer else 0,
            "acked": producer.acked if producer else 0,
            "deliveryErrors": producer.delivery_errors if producer else 0,
            "lost": producer.lost if producer else 0,
            "clientError": producer.client_error if producer else None,
        },
        "symbols": symbols,
        "feeds": feeds(ingestor),
        **checked,
    }
    if ingestor.healer is not None:
        body["ledger"] = ingestor.healer.health_body()
    if ingestor.reconciler is not None:
        body["reconcile"] = ingestor.reconciler.status()
    return not problems, body


#: Failed attempts in a row after which a feed that was connected counts as unreachable.
UNREACHABLE_AFTER = 3


def feeds(ingestor: Ingestor) -> dict[str, dict[str, str | None]]:
    """Each symbol's feed: ``{"state", "reason"}``, the state one of ``connected``,
    ``backfilling`` (trades held behind a gap while REST fetches the missing ones),
    ``reconnecting`` and ``unreachable`` (never connected, or ``UNREACHABLE_AFTER`` failed
    attempts in a row), the reason naming the host and the error."""
    states: dict[str, dict[str, str | None]] = {}
    for shard in ingestor.shards:
        for symbol in shard.symbols:
            held = len(ingestor.sequences[symbol].pending)
            if shard.connected and held:
                state, reason = "backfilling", f"{held} trades wait for missed ones from REST"
            elif shard.connected:
                state, reason = "connected", None
            elif shard.failures_in_row and (
                shard.never_connected or shard.failures_in_row >= UNREACHABLE_AFTER
            ):
                state, reason = "unreachable", shard.last_error
            elif shard.never_connected:
                state, reason = "reconnecting", "the first connection is being opened"
            else:
                state, reason = "reconnecting", shard.last_error
            states[symbol] = {"state": state, "reason": reason}
    for symbol in ingestor.symbols:
        states.setdefault(symbol, {"state": "reconnecting", "reason": "not started yet"})
    return states


def collect_state(ingestor: Ingestor) -> Iterable[Metric]:
    """The gauges and counters read from the ingestor's state at scrape time."""
    now = time.monotonic()
    connected = GaugeMetricFamily(
        "binance_ws_connected", "1 while the connection is open", labels=["connection"]
    )
    for shard in ingestor.shards:
        connected.add_metric([str(shard.index)], 1.0 if shard.connected else 0.0)
    age = GaugeMetricFamily(
        "binance_last_trade_age_seconds",
        "Seconds since the last live trade",
        labels=["symbol"],
    )
    for symbol, last in list(ingestor.last_trade_at.items()):  # a copy: scrapes may be off-loop
        age.add_metric([symbol], now - last)
    held = GaugeMetricFamily(
        "binance_trades_held_behind_gap", "Trades waiting for a backfill", labels=["symbol"]
    )
    for symbol, seq in ingestor.sequences.items():
        held.add_metric([symbol], len(seq.pending))
    per_symbol = {
        name: CounterMetricFamily(f"binance_{name}", doc, labels=["symbol"])
        for name, doc in (
            ("trade_gaps", "Gaps in trade ids seen on the live stream"),
            ("backfilled_trades", "Missed trades fetched over REST"),
            ("unfilled_trades", "Missed trades REST could not deliver (lost)"),
            ("duplicate_trades", "Trades received twice and dropped"),
        )
    }
    for symbol, seq in ingestor.sequences.items():
        per_symbol["trade_gaps"].add_metric([symbol], seq.gaps)
        per_symbol["backfilled_trades"].add_metric([symbol], seq.backfilled)
        per_symbol["unfilled_trades"].add_metric([symbol], seq.unfilled)
        per_symbol["duplicate_trades"].add_metric([symbol], seq.duplicates)
    queued = GaugeMetricFamily("kafka_producer_queued_messages", "Produced, not yet acknowledged")
    queued.add_metric([], ingestor.producer.queued if ingestor.producer else 0)
    state: list[Metric] = [connected, age, held, queued, *per_symbol.values()]
    if ingestor.reconciler is not None:
        state.append(reconcile_mismatches(ingestor.reconciler.mismatch_counts()))
    return state
