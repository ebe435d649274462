"""The demo (``up --exchange replay:FILES``) kept apart from live data, and labelled as replayed.

A replay writes recorded trades moved to today's times: real prices, but not today's market. So
the demo

* writes to a store of its own, ``DATA_DIR/demo`` (embedded chDB), never the live ``DATA_DIR``;
  on a ClickHouse server (``CLICKHOUSE_URL``) it is refused, because the table ``binance.ohlcv``
  would mix them; on a Kafka server its topics get a ``-demo`` suffix;
* says what it is wherever bars show: a warning in the log, ``"exchange"`` in ``/health``, a
  banner on the candle page;
* ends cleanly: when the recording is over the connection stays open and quiet (the silence
  watchdog, which is for a real exchange, is off), each feed's state is ``ended``, and the page
  keeps its bars; no reconnects, no 503. It does not loop, and its bars end with the recording
  (the local exchange's clock stops at its last trade).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from binance_metrics.errors import ConfigError
from binance_metrics.settings import Settings

log = logging.getLogger(__name__)

DEMO_DIR: Final = "demo"
#: The silence watchdog's timeout in a demo: never (a local exchange does not stall).
NO_WATCHDOG_S: Final = 10.0**9


def demo_data_dir(data_dir: Path) -> Path:
    """Where the demo keeps its store: ``DATA_DIR/demo``."""
    return data_dir / DEMO_DIR


def demo_settings(settings: Settings, ws_url: str, rest_url: str) -> Settings:
    """``settings`` for a demo on the local exchange at ``ws_url``/``rest_url``."""
    if settings.CLICKHOUSE_URL is not None:
        raise ConfigError(
            "--exchange replay: writes time-shifted demo bars, which must not mix with live ones "
            "in binance.ohlcv: unset CLICKHOUSE_URL (the demo uses its own embedded store under "
            "DATA_DIR/demo)"
        )
    # Trades are shifted to now, and a sped-up recording runs ahead of the clock: their trade
    # times are not "now" by design, so the skew check is off.
    tuning = settings.INGEST.model_copy(
        update={"max_trade_time_skew_s": 0, "silence_timeout_s": NO_WATCHDOG_S}
    )
    update: dict[str, Any] = {
        "BINANCE_WS_URL": ws_url,
        "BINANCE_REST_URL": rest_url,
        "INGEST": tuning,
        "DATA_DIR": demo_data_dir(settings.DATA_DIR),
    }
    if not settings.embedded_kafka:
        update["KAFKA_TOPIC"] = f"{settings.KAFKA_TOPIC}-{DEMO_DIR}"
        update["KAFKA_DLQ_TOPIC"] = f"{settings.KAFKA_DLQ_TOPIC}-{DEMO_DIR}"
    return settings.model_copy(update=update)


class DemoLabel:
    """What the demo is, for ``/health`` and the page; ``ended`` once the recording is over."""

    def __init__(self, paths: Sequence[Path], speed: float, data_dir: Path) -> None:
        self.files = [path.name for path in paths]
        self.speed = speed
        self.data_dir = data_dir
        self.ended_at: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "replay",
            "replayed": True,
            "files": self.files,
            "speed": self.speed,
            "store": str(self.data_dir),
            "ended": self.ended_at is not None,
            "note": (
                "demo: recorded trades replayed with their times moved to today; "
                "not live Binance data"
            ),
        }

    def feeds(self, live: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
        """The feeds' states, ``ended`` for a connected one once the recording is over."""
        if self.ended_at is None:
            return dict(live)
        ended = {
            "state": "ended",
            "reason": f"the recording ended at {self.ended_at} UTC; its bars stay; Ctrl-C stops",
        }
        return {s: ended if f.get("state") == "connected" else f for s, f in live.items()}

    def watch(self, done: threading.Event, stop: threading.Event) -> threading.Thread:
        """Log the demo's nature now and the end of its recording when it comes."""
        log.warning(
            "DEMO: replaying %s at speed %g; the bars are recorded trades moved to today's "
            "times, not live Binance data; stored apart in %s",
            ", ".join(self.files), self.speed, self.data_dir,
        )  # fmt: skip

        def wait() -> None:
            while not stop.is_set():
                if done.wait(0.5):
                    self.ended_at = time.strftime("%H:%M:%S", time.gmtime())
                    log.info(
                        "DEMO: the recording has ended; its bars stay in %s and on the page; "
                        "Ctrl-C stops",
                        self.data_dir,
                    )
                    return

        thread = threading.Thread(target=wait, name="demo-end", daemon=True)
        thread.start()
        return thread
