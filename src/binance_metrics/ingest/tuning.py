"""The ingestor's tuning: Binance's limits and every knob of the ingestor, each default once.

:class:`IngestTuning` is the ``INGEST`` group of :class:`~binance_metrics.settings.Settings`, so
each field is an environment variable, ``INGEST__`` plus its name in upper case::

    INGEST__SILENCE_TIMEOUT_S=30 INGEST__MAX_RESUME_GAP=50000 binance-metrics ingest

The defaults suit production Binance; the bounds keep a value from breaking Binance's limits
(connection attempts, streams per connection, request weight) or the ingestor's own contracts.
The components (:class:`~binance_metrics.ingest.stream.Shard`,
:class:`~binance_metrics.ingest.backfill.RestBackfill`, the Kafka producer, ...) take their
values from here and have no defaults of their own. ``docs/configuration.md`` lists the group.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Binance's limit of streams on one connection.
MAX_STREAMS_PER_CONNECTION: Final = 1024
#: Binance: 300 connection attempts per 5 minutes per IP; more bans the IP.
BINANCE_MAX_ATTEMPTS: Final = 300
BINANCE_ATTEMPT_WINDOW_S: Final = 300.0
#: Binance's request weight per IP and minute (REST), and what one historicalTrades call costs.
BINANCE_WEIGHT_PER_MINUTE: Final = 6000
HISTORICAL_TRADES_WEIGHT: Final = 25
EXCHANGE_INFO_WEIGHT: Final = 20
#: ``GET /api/v3/ticker/24hr``: weight 2 for 1 to 20 symbols (``symbols=[...]``), 80 for all
#: symbols at once (no parameter); 21 to 100 symbols cost 40, never cheaper than 20 at a time.
TICKER_SYMBOLS_PER_CALL: Final = 20
TICKER_WEIGHT: Final = 2
TICKER_ALL_WEIGHT: Final = 80
#: Futures (``/fapi/v1``, ``/dapi/v1``): ``aggTrades`` weighs 20; ``ticker/24hr`` 1 for one
#: symbol, 40 for all; ``exchangeInfo`` 1.
AGG_TRADES_WEIGHT: Final = 20
FUTURES_TICKER_WEIGHT: Final = 1
FUTURES_TICKER_ALL_WEIGHT: Final = 40
FUTURES_EXCHANGE_INFO_WEIGHT: Final = 1
#: librdkafka's upper bound of ``queue.buffering.max.messages``.
_LIBRDKAFKA_MAX_QUEUE: Final = 2_147_483_647


class IngestTuning(BaseModel):
    """Tuning of the ingestor (``INGEST__*``); validated, frozen, unknown names refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    # -- connections ------------------------------------------------------------------------
    streams_per_connection: int = Field(
        default=MAX_STREAMS_PER_CONNECTION, ge=1, le=MAX_STREAMS_PER_CONNECTION
    )
    """Streams (symbols) per WebSocket connection; more symbols open more connections."""
    silence_timeout_s: float = Field(default=60.0, gt=0)
    """Watchdog: a connection that delivered no frame for this long is replaced."""
    max_connection_age_s: float = Field(default=23.5 * 3600, gt=0, le=24 * 3600)
    """Planned make-before-break switch, before Binance cuts every connection at 24 h."""
    switch_timeout_s: float = Field(default=10.0, gt=0)
    """Longest overlap of a switch: the old connection closes when the new one delivers."""
    healthy_after_s: float = Field(default=60.0, ge=0)
    """A connection up this long resets the reconnect backoff."""
    ping_interval_s: float = Field(default=20.0, ge=0)
    """Our own keepalive ping (detects a dead TCP path); 0 sends none."""
    ping_timeout_s: float = Field(default=20.0, gt=0)
    """A keepalive ping unanswered for this long closes the connection."""
    open_timeout_s: float = Field(default=10.0, gt=0)
    """Longest WebSocket opening handshake."""
    close_timeout_s: float = Field(default=2.0, gt=0)
    """Longest wait for the server's close frame when we close."""
    connection_attempts: int = Field(default=BINANCE_MAX_ATTEMPTS, ge=1, le=BINANCE_MAX_ATTEMPTS)
    """Connection attempts of the whole process per window (Binance: 300 per 5 minutes)."""
    connection_attempt_window_s: float = Field(default=BINANCE_ATTEMPT_WINDOW_S, ge=300.0)
    """The window of ``connection_attempts``; never shorter than Binance's 5 minutes."""

    subscribe_messages_per_s: int = Field(default=3, ge=1, le=8)
    """``SUBSCRIBE``/``UNSUBSCRIBE`` messages per second and connection. Binance counts 5
    incoming messages per second on spot (10 on futures: default 8 there), pings and pongs
    included, and disconnects above; 3 leaves room for a pong and a keepalive ping in the same
    second."""
    streams_per_subscribe: int = Field(default=200, ge=1, le=MAX_STREAMS_PER_CONNECTION)
    """Streams named in one ``SUBSCRIBE`` message (1024 streams take 6 messages, 2 s)."""
    subscribe_timeout_s: float = Field(default=10.0, gt=0)
    """Longest wait for the reply to a ``SUBSCRIBE``; then the connection is replaced."""
    symbols_refresh_s: float = Field(default=300.0, gt=0)
    """With ``SYMBOLS=ALL`` or patterns: how often ``exchangeInfo`` is read again, to subscribe
    new listings and unsubscribe delisted symbols (weight 20 per read)."""

    # -- frames -----------------------------------------------------------------------------
    max_frame_bytes: int = Field(default=64 * 1024, ge=1024)
    """Larger frames are dead letters (a trade frame is about 200 bytes)."""
    max_trade_time_skew_s: float = Field(default=600.0, ge=0)
    """A live trade whose time is further than this from now (either way) is a dead letter:
    a corrupt time must not open a window far away. 0 turns the check off (the tests replay
    2024 captures with their recorded times)."""
    max_message_bytes: int = Field(default=1 << 20, ge=2048)
    """websockets' limit: a larger message closes the connection (1009) before it is read.
    Above ``max_frame_bytes``, so that oversized frames reach the dead-letter topic."""

    # -- gaps -------------------------------------------------------------------------------
    backfill_grace_s: float = Field(default=1.0, ge=0)
    """Wait before calling REST: an overlapping connection may still deliver the missing ids."""
    backfill_retry_base_s: float = Field(default=1.0, gt=0)
    """First delay between REST retries (and between asks for an id REST does not have yet)."""
    backfill_retry_cap_s: float = Field(default=30.0, gt=0)
    """Longest delay between REST retries (exponential backoff with jitter)."""
    backfill_max_attempts: int = Field(default=8, ge=1)
    """REST calls for one range before its gap is given up."""
    backfill_timeout_s: float = Field(default=10.0, gt=0)
    """Timeout of one REST call."""
    rest_weight_budget: int = Field(
        default=5000, ge=HISTORICAL_TRADES_WEIGHT, le=BINANCE_WEIGHT_PER_MINUTE
    )
    """Request weight per minute the backfill may use; over it, it waits for the next minute."""
    tail_check_s: float = Field(default=10.0, ge=0)
    """How often symbols without a live trade for ``quiet_after_s`` (and, once, the symbols of a
    connection just (re)opened) have their latest trade id asked over REST (ticker), so that
    trades missed at the tail are backfilled without waiting for the next trade; 0: never (nor
    the quiet checks after each window boundary, :mod:`~binance_metrics.ingest.quiet`)."""
    quiet_after_s: float = Field(default=20.0, gt=0)
    """A symbol without a live trade for this long is checked every ``tail_check_s``."""
    heal_every_s: float = Field(default=60.0, ge=0)
    """How often the ledger of the stored bars is checked and its gaps fetched over REST and
    produced again (only with a store: ``up``, or ``ingest`` with ``CLICKHOUSE_URL``); 0: never."""
    heal_settle_s: float = Field(default=30.0, ge=0)
    """A gap is healed once its last minute closed this long ago (the dataflow may still be
    writing newer minutes)."""
    max_pending_per_symbol: int = Field(default=200_000, ge=1)
    """Trades held behind one symbol's gap before the gap is given up (memory bound)."""

    # -- Kafka ------------------------------------------------------------------------------
    max_buffered_messages: int = Field(default=100_000, ge=1, le=_LIBRDKAFKA_MAX_QUEUE)
    """librdkafka's queue of unacknowledged messages; beyond it, the producer's overflow."""
    overflow_soft_limit: int = Field(default=10_000, ge=1)
    """Overflow size at which the connections stop reading until Kafka catches up."""
    kafka_stall_s: float = Field(default=10.0, gt=0)
    """No acknowledgement for this long, with messages in flight, makes /health degraded."""
    kafka_max_redeliveries: int = Field(default=3, ge=0)
    """A delivery that failed for good is produced again this many times, then logged lost."""

    # -- resume -----------------------------------------------------------------------------
    resume_from_kafka: bool = True
    """At start, continue each symbol after the last trade id in Kafka (backfilling the gap)."""
    resume_tail_records: int = Field(default=10_000, ge=1)
    """Records read from the end of each partition to find the last trade ids."""
    resume_timeout_s: float = Field(default=30.0, gt=0)
    """Longest wait for that read; then nothing is resumed (logged as an error)."""
    max_resume_gap: int = Field(default=1_000_000, ge=0)
    """A resume gap larger than this many trades is given up (counted unfilled), not fetched."""

    @model_validator(mode="after")
    def _consistent(self) -> IngestTuning:
        if self.max_message_bytes <= self.max_frame_bytes:
            raise ValueError(
                f"max_message_bytes ({self.max_message_bytes}) must exceed max_frame_bytes "
                f"({self.max_frame_bytes}), or oversized frames close the connection"
            )
        if self.backfill_retry_cap_s < self.backfill_retry_base_s:
            raise ValueError(
                f"backfill_retry_cap_s ({self.backfill_retry_cap_s}) must be at least "
                f"backfill_retry_base_s ({self.backfill_retry_base_s})"
            )
        return self
