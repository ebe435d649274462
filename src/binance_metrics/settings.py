"""Environment-driven settings, validated once at start.

Every variable has a default that runs the embedded pipeline on a laptop. An invalid value stops
the program before it does anything, with a message that names the variable (see
:func:`load_settings`). ``.env.example`` and ``docs/configuration.md`` list them all.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from binance_metrics.errors import ConfigError
from binance_metrics.ingest.tuning import IngestTuning
from binance_metrics.markets import MARKET_DEFAULTS, Market, MarketDefaults
from binance_metrics.redact import redact

_SYMBOL = re.compile(r"^[A-Z0-9_]{2,30}$")
#: ``ALL`` or an fnmatch pattern over symbols (``*USDT``), resolved from exchangeInfo.
_SYMBOL_PATTERN = re.compile(r"^(ALL|[A-Z0-9_*?\[\]!]*[*?\[][A-Z0-9_*?\[\]!]*)$")


class Settings(BaseSettings):
    """All configuration of binance-metrics; field names are the environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        env_nested_delimiter="__",  # INGEST__SILENCE_TIMEOUT_S sets INGEST.silence_timeout_s
    )

    # Kafka. Unset bootstrap servers means: start the embedded Tansu broker.
    KAFKA_BOOTSTRAP_SERVERS: str | None = None
    # Unset: the market's topics (spot binance-trades, um binance-um-trades, ...).
    KAFKA_TOPIC: str = Field(default="binance-trades", min_length=1)
    KAFKA_DLQ_TOPIC: str = Field(default="binance-trades-dlq", min_length=1)
    KAFKA_PARTITIONS: int = Field(default=3, ge=1, le=1000)
    # How much of the trades topic is kept: by age and by size (docs/configuration.md).
    KAFKA_RETENTION_MS: int = Field(default=86_400_000, ge=60_000)
    KAFKA_RETENTION_BYTES: int = Field(default=1 << 30, ge=32 << 20)
    # How every Kafka client authenticates (a real Kafka only; the embedded broker has none).
    KAFKA_SECURITY_PROTOCOL: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    KAFKA_SASL_MECHANISM: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    KAFKA_SASL_USERNAME: str | None = None
    KAFKA_SASL_PASSWORD: SecretStr | None = None
    KAFKA_SSL_CA_LOCATION: Path | None = None

    # Binance. MARKET: spot, um (USDⓈ-M futures) or cm (COIN-M futures); the URLs, topics and
    # connection limits not set explicitly are the market's (markets.py: MARKET_DEFAULTS).
    MARKET: Market = "spot"
    SYMBOLS: Annotated[tuple[str, ...], NoDecode] = ("BTCUSDT",)
    BINANCE_WS_URL: str = "wss://data-stream.binance.vision/stream"
    BINANCE_REST_URL: str = "https://data-api.binance.vision"
    # The public trade archives that `backfill` downloads (data.binance.vision's layout).
    BINANCE_ARCHIVE_URL: str = "https://data.binance.vision"
    RECONNECT_DELAY_S: float = Field(default=5.0, gt=0)
    MAX_RECONNECT_DELAY_S: float = Field(default=60.0, gt=0)
    # The ingestor's tuning, one variable per field: INGEST__<FIELD>.
    INGEST: IngestTuning = IngestTuning()

    # HTTP (ingestor and web page).
    HEALTH_HOST: str = "127.0.0.1"
    HEALTH_PORT: int = Field(default=8080, ge=1, le=65535)
    # Serve the OpenAPI schema at /openapi.json (never the docs pages: they load a CDN).
    API_DOCS: bool = False

    # ClickHouse. Unset URL means: embedded chDB under DATA_DIR. A secret: it holds the password.
    CLICKHOUSE_URL: SecretStr | None = None
    DATA_DIR: Path = Path("data")
    # `replay` fails once writes have failed this long (`up` waits for the store instead).
    STORE_GIVE_UP_S: float = Field(default=60.0, gt=0)

    # Dataflow.
    WINDOW_SECONDS: int = Field(default=60, ge=1, le=86_400)
    WATERMARK_WAIT_S: float = Field(default=2.0, ge=0, le=3600)
    BAR_HISTORY_MINUTES: int = Field(default=1440, ge=1)
    #: A trade time later than now plus this is refused (dead-lettered) as corrupt.
    MAX_TRADE_TIME_AHEAD_S: float = Field(default=300.0, ge=0, le=86_400)
    STOP_AT_END: bool = False
    #: The forming bar is written at most this often per symbol (ms); 0: no forming bar.
    FORMING_EVERY_MS: int = Field(default=250, ge=0, le=60_000)
    KAFKA_BATCH_SIZE: int = Field(default=5000, ge=1)

    # Continuous reconciliation with Binance's REST klines (up, ingest); 0 turns it off.
    RECONCILE_EVERY_S: float = Field(default=300.0, ge=0)
    # It waits while the IP's REST weight used in the minute leaves less than this.
    RECONCILE_WEIGHT_BUDGET: int = Field(default=1000, ge=5, le=6000)

    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _market_defaults(cls, data: object) -> object:
        """Every variable the user did not set (or left blank) takes ``MARKET``'s default."""
        if not isinstance(data, dict):
            return data
        market = data.get("MARKET", "spot")
        defaults = MARKET_DEFAULTS.get(market)
        if defaults is None:
            return data  # MARKET's own validation names the bad value
        data = dict(data)
        for name, value in defaults.variables().items():
            if not str(data.get(name) or "").strip():  # unset or blank: the market's
                data[name] = value
        tuning = data.get("INGEST", {})
        limits = {
            "streams_per_connection": defaults.max_streams_per_connection,
            "subscribe_messages_per_s": defaults.subscribe_messages_per_s,
            "connection_attempts": defaults.connection_attempts,
            "connection_attempt_window_s": defaults.connection_attempt_window_s,
        }
        if isinstance(tuning, IngestTuning):
            unset = {k: v for k, v in limits.items() if k not in tuning.model_fields_set}
            data["INGEST"] = tuning.model_copy(update=unset)
        elif isinstance(tuning, dict):
            data["INGEST"] = {**limits, **tuning}
        return data

    @field_validator("SYMBOLS", mode="before")
    @classmethod
    def _split_symbols(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in re.split(r"[,\s]+", value) if part]
        if isinstance(value, list | tuple):
            symbols = tuple(str(s).strip().upper() for s in value)
            if not symbols:
                raise ValueError("at least one symbol is required")
            bad = [s for s in symbols if not (_SYMBOL.match(s) or _SYMBOL_PATTERN.match(s))]
            if bad:
                raise ValueError(f"not a Binance symbol, ALL or a pattern: {', '.join(bad)}")
            return tuple(dict.fromkeys(symbols))
        return value

    @field_validator("WINDOW_SECONDS")
    @classmethod
    def _bar_length(cls, value: int) -> int:
        # Binance's two base klines: 1m (binance.ohlcv) and 1s (binance.ohlcv_1s).
        if value not in (1, 60):
            raise ValueError("must be 60 (1-minute bars) or 1 (1-second bars)")
        return value

    @field_validator("BINANCE_WS_URL")
    @classmethod
    def _ws_scheme(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value.rstrip("/")

    @field_validator("BINANCE_REST_URL", "BINANCE_ARCHIVE_URL")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("CLICKHOUSE_URL", "KAFKA_BOOTSTRAP_SERVERS", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("CLICKHOUSE_URL")
    @classmethod
    def _clickhouse_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("http://", "https://", "chdb://")
        ):
            raise ValueError("must start with http://, https:// or chdb://")
        return value

    @model_validator(mode="after")
    def _delays_ordered(self) -> Settings:
        if self.MAX_RECONNECT_DELAY_S < self.RECONNECT_DELAY_S:
            raise ValueError(
                "MAX_RECONNECT_DELAY_S must be at least RECONNECT_DELAY_S "
                f"({self.MAX_RECONNECT_DELAY_S} < {self.RECONNECT_DELAY_S})"
            )
        return self

    @model_validator(mode="after")
    def _within_market_limits(self) -> Settings:
        market, tuning = self.market_defaults, self.INGEST
        for name, value, limit in (
            ("STREAMS_PER_CONNECTION", tuning.streams_per_connection,
             market.max_streams_per_connection),
            ("SUBSCRIBE_MESSAGES_PER_S", tuning.subscribe_messages_per_s,
             market.subscribe_messages_per_s),
        ):  # fmt: skip
            if value > limit:
                raise ValueError(
                    f"INGEST__{name}={value} is above the {limit} Binance allows on "
                    f"MARKET={self.MARKET}"
                )
        return self

    @model_validator(mode="after")
    def _not_another_markets_defaults(self) -> Settings:
        # A .env made for one market (compose's spot values) must not feed another's bars.
        for other in MARKET_DEFAULTS.values():
            if other.market == self.MARKET:
                continue
            for name, theirs in other.variables().items():
                if getattr(self, name) == theirs:
                    raise ValueError(
                        f"{name}={theirs} is the default of MARKET={other.market}, not of "
                        f"MARKET={self.MARKET}: unset it (the market's default) or set it to "
                        "this market's"
                    )
        return self

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        if self.KAFKA_SECURITY_PROTOCOL.startswith("SASL_"):
            missing = [
                name
                for name in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={self.KAFKA_SECURITY_PROTOCOL} needs "
                    + ", ".join(missing)
                )
        return self

    @property
    def market_defaults(self) -> MarketDefaults:
        return MARKET_DEFAULTS[self.MARKET]

    @property
    def embedded_kafka(self) -> bool:
        return self.KAFKA_BOOTSTRAP_SERVERS is None

    @property
    def clickhouse_dsn(self) -> str:
        """``http(s)://`` for a server, otherwise ``chdb://`` on the local data directory."""
        if self.CLICKHOUSE_URL is not None:
            return self.CLICKHOUSE_URL.get_secret_value()
        return f"chdb://{(self.DATA_DIR / 'clickhouse').resolve()}"


#: Secret settings whose value is a URL: shown with the password masked. Other secrets never show.
_SECRET_URLS: Final = frozenset({"CLICKHOUSE_URL"})


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and ``.env``), turning errors into one clear message.

    Keyword overrides (from command-line flags) take precedence over the environment. An invalid
    value raises :class:`ConfigError` with one line naming each bad variable, its value (URL
    passwords masked; other secrets, such as ``KAFKA_SASL_PASSWORD``, never shown) and why.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [
            _problem(error["loc"], error.get("input"), error["msg"]) for error in exc.errors()
        ]
        raise ConfigError(
            f"invalid configuration: {'; '.join(problems)} (see docs/configuration.md)"
        ) from None


def _problem(loc: tuple[int | str, ...], value: Any, message: str) -> str:
    message = message.removeprefix("Value error, ")
    if not loc:
        # A check across variables: its message names them, and its input is every value.
        return message
    # As the variable is spelt: ("INGEST", "silence_timeout_s") is INGEST__SILENCE_TIMEOUT_S.
    name = "__".join(str(part) for part in loc).upper()
    if _is_secret(str(loc[0])) and str(loc[0]) not in _SECRET_URLS:
        return f"{name} (value hidden): {message}"
    return f"{name}={redact(repr(value))}: {message}"


def _is_secret(name: str) -> bool:
    field = Settings.model_fields.get(name)
    return field is not None and (
        field.annotation is SecretStr or SecretStr in get_args(field.annotation)
    )
