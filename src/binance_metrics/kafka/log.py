"""librdkafka's own log lines, through Python logging and rate-limited.

Without a ``logger`` in its configuration, librdkafka writes ``%3|1723...|FAIL|rdkafka#producer-1|
...`` lines straight to stderr from its own threads: hundreds a minute while a broker is down.
:meth:`~binance_metrics.kafka.config.KafkaConnection.client_config` gives every client
:data:`LIBRDKAFKA_LOG` instead. confluent-kafka then queues the lines and hands them to it from
the client's ``poll`` / ``consume`` / ``flush`` calls (a client that is never polled logs
nothing), as ``log(level, "%s [%s] %s", facility, client name, text)`` with librdkafka's syslog
levels already mapped to Python's (3 ERR -> ERROR, 4 WARNING -> WARNING, 5 and 6 -> INFO,
7 DEBUG -> DEBUG).

:class:`RepeatFilter` on that logger lets the same line of the same client through at most once
per :data:`REPEAT_INTERVAL_S`; the next one that passes says how many were held back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

#: Seconds between two copies of the same librdkafka line (per client).
REPEAT_INTERVAL_S: Final = 30.0

# Parts of a line that change between repeats of the same event: "(after 0ms in state
# CONNECT)", "(after 7017ms in state UP, 3 identical error(s) suppressed)".
_VARYING = re.compile(r"\d+ms\b|\d+ identical error\(s\) suppressed")


@dataclass
class _Seen:
    passed_at: float
    held_back: int = 0


class RepeatFilter(logging.Filter):
    """Passes a message at most once per ``interval_s``; the next copy that passes carries
    ``(N more like it in the last S s)``.

    Two messages are the same when their text is, durations in milliseconds aside. librdkafka's
    lines name their client (``[rdkafka#consumer-3]``), so each client is limited on its own.
    """

    def __init__(
        self,
        interval_s: float = REPEAT_INTERVAL_S,
        *,
        max_messages: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_messages`` bounds the memory: past it, messages not seen for an interval are
        forgotten. ``clock`` is injectable so that the filter can be tested without waiting."""
        super().__init__()
        self._interval_s = interval_s
        self._max_messages = max_messages
        self._clock = clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()  # clients are polled from several threads

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        key = _VARYING.sub("#", text)
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.passed_at < self._interval_s:
                seen.held_back += 1
                return False
            held_back = seen.held_back if seen is not None else 0
            since = now - seen.passed_at if seen is not None else 0.0
            self._seen[key] = _Seen(now)
            if len(self._seen) > self._max_messages:
                self._forget(now)
        if held_back:
            record.msg = f"{text} ({held_back} more like it in the last {since:.0f} s)"
            record.args = None
        return True

    def _forget(self, now: float) -> None:
        old = [key for key, seen in self._seen.items() if now - seen.passed_at >= self._interval_s]
        for key in old:
            del self._seen[key]
        if len(self._seen) > self._max_messages:
            self._seen.clear()  # a flood of distinct messages: start over rather than grow


#: The logger every Kafka client of binance-metrics writes librdkafka's lines to.
LIBRDKAFKA_LOG: Final = logging.getLogger("binance_metrics.kafka.librdkafka")
LIBRDKAFKA_LOG.addFilter(RepeatFilter())
