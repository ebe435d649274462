"""librdkafka's log lines go through Python logging, rate-limited, and never raw to stderr."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import KafkaError, Producer

from binance_metrics.kafka.broker import free_port
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.log import LIBRDKAFKA_LOG, RepeatFilter

REFUSED = (
    "FAIL [rdkafka#producer-{client}] [thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: "
    "Connect to ipv4#127.0.0.1:1 failed: Connection refused (after {ms}ms in state CONNECT)"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def passed(log_filter: RepeatFilter, message: str) -> logging.LogRecord | None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, message, None, None)
    return record if log_filter.filter(record) else None


def test_a_repeated_line_passes_once_per_interval_then_says_how_many_were_held_back() -> None:
    clock = Clock()
    log_filter = RepeatFilter(30.0, clock=clock)
    first = passed(log_filter, REFUSED.format(client=1, ms=0))
    assert first is not None and first.getMessage() == REFUSED.format(client=1, ms=0)
    for ms in (0, 1, 0, 2):  # the same line; only the duration differs
        clock.now += 5
        assert passed(log_filter, REFUSED.format(client=1, ms=ms)) is None
    # Another client's line, or another line, is not held back by the first one.
    assert passed(log_filter, REFUSED.format(client=2, ms=0)) is not None
    assert passed(log_filter, "FAIL [rdkafka#producer-1] 127.0.0.1:1/bootstrap: other") is not None

    clock.now += 10  # 30 s after the first copy passed
    again = passed(log_filter, REFUSED.format(client=1, ms=3))
    assert again is not None
    held_back = " (4 more like it in the last 30 s)"
    assert again.getMessage() == REFUSED.format(client=1, ms=3) + held_back
    clock.now += 1
    assert passed(log_filter, REFUSED.format(client=1, ms=0)) is None


def test_memory_stays_bounded_under_a_flood_of_distinct_lines() -> None:
    clock = Clock()
    log_filter = RepeatFilter(30.0, max_messages=10, clock=clock)
    for n in range(100):
        assert passed(log_filter, f"line {n}") is not None
    assert len(log_filter._seen) <= 10


def test_a_real_client_logs_through_python_once_per_interval(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    errors: list[KafkaError] = []
    kafka = KafkaConnection(f"127.0.0.1:{free_port()}")  # nothing listens there
    tuning = {"reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 50}
    producer = Producer(kafka.client_config(error_cb=errors.append, **tuning))
    with caplog.at_level(logging.INFO, logger=LIBRDKAFKA_LOG.name):
        deadline = time.monotonic() + 30
        # librdkafka fails to connect again and again, logging each failure (its error_cb
        # reports them at most once a second); the log lines come with poll().
        while sum(e.code() == KafkaError._TRANSPORT for e in errors) < 3:
            assert time.monotonic() < deadline, f"librdkafka did not retry: {errors}"
            producer.poll(0.05)
        producer.poll(0.1)
    refused = [r for r in caplog.records if "Connection refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in caplog.records]
    assert refused[0].name == "binance_metrics.kafka.librdkafka"
    assert refused[0].levelno == logging.ERROR  # librdkafka's level 3
    assert "%3|" not in capfd.readouterr().err
