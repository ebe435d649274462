"""The ClickHouse client: a server over HTTP, or chDB in-process, through clickhouse-connect.

chDB opens a data directory from one process at a time, so every user of the embedded store in a
process shares one client (and one lock): the dataflow's sink workers, the web page and the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.errors import StoreError
from binance_metrics.redact import redact

log = logging.getLogger(__name__)

SCHEMA_PATH: Final = Path(__file__).resolve().parents[3] / "clickhouse" / "init.sql"
BARS_TABLE: Final = "binance.ohlcv"
_CREATE: Final = re.compile(r"CREATE (DATABASE|TABLE|VIEW) IF NOT EXISTS ([\w.]+)")
BAR_COLUMNS: Final = (
    "symbol",
    "window_start",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "first_trade_id",
    "last_trade_id",
)


class Store:
    """A thread-safe handle on the bars store."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.embedded = dsn.startswith("chdb://")
        self._client: Client = _open_embedded(dsn) if self.embedded else _connect(dsn)
        self._lock = threading.Lock()

    def apply_schema(self, path: Path = SCHEMA_PATH) -> None:
        """Create what is missing of ``init.sql`` (its statements are ``CREATE ... IF NOT EXISTS``).

        Existence is checked first because ClickHouse checks the CREATE privilege before ``IF NOT
        EXISTS``: least-privilege users (Grafana's reader, the dataflow's writer) never reach a
        CREATE for objects that are there. Only the bars table is required; a view that this user
        may not create is reported and skipped.
        """
        for statement in split_sql(path.read_text(encoding="utf-8")):
            match = _CREATE.match(statement)
            if match is None:
                raise ValueError(f"{path}: not a CREATE ... IF NOT EXISTS statement: {statement}")
            kind, name = match.groups()
            exists = f"EXISTS {'DATABASE' if kind == 'DATABASE' else 'TABLE'} {name}"
            if self.command(exists) == 1:
                continue
            try:
                self.command(statement)
            except Exception as exc:
                if name == BARS_TABLE or kind == "DATABASE":
                    raise StoreError(
                        f"cannot create {name} in the store {redact(self.dsn)} ({exc}); run "
                        f"{path} as a user with CREATE rights (docs/operations.md, Schema changes)"
                    ) from exc
                log.warning("could not create %s (%s); an administrator can run %s", name,
                            exc, path)  # fmt: skip

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run one statement; a failure is a :class:`StoreError` with ClickHouse's reason."""
        with self._lock, self._failures_as_store_errors():
            return self._client.command(sql, parameters=parameters)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """The rows of one query; a failure is a :class:`StoreError` with ClickHouse's reason."""
        with self._lock, self._failures_as_store_errors():
            result = self._client.query(sql, parameters=parameters)
        return [tuple(row) for row in result.result_rows]

    @contextlib.contextmanager
    def _failures_as_store_errors(self) -> Iterator[None]:
        try:
            yield
        except ClickHouseError as exc:
            raise StoreError(f"the store {redact(self.dsn)} failed: {_first_line(exc)}") from exc

    def insert_bars(self, rows: Sequence[BarUpdate]) -> int:
        """Insert bars; within one call the last row for a (symbol, window) wins."""
        latest: dict[tuple[str, int], Bar] = {}
        for symbol, start_ms, bar in rows:
            latest[(symbol, start_ms)] = bar
        data = [_row(symbol, start_ms, bar) for (symbol, start_ms), bar in latest.items()]
        if data:
            with self._lock:
                self._client.insert(BARS_TABLE, data, column_names=BAR_COLUMNS)
        return len(data)


def _row(symbol: str, start_ms: int, bar: Bar) -> list[Any]:
    values = bar.decimals()
    return [
        symbol,
        datetime.fromtimestamp(start_ms / 1000, tz=UTC),
        *(values[column] for column in BAR_COLUMNS[2:]),
    ]


def split_sql(script: str) -> list[str]:
    """Split ``init.sql`` on its separator lines (a line holding only ``;``)."""
    statements = []
    for chunk in script.split("\n;"):
        lines = [line for line in chunk.splitlines() if not line.lstrip().startswith("--")]
        statement = "\n".join(lines).strip()
        if statement:
            statements.append(statement)
    return statements


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def open_store(dsn: str, *, apply_schema: bool = True) -> Store:
    """The process-wide store for ``dsn`` (created, and its schema applied, on first use)."""
    with _stores_lock:
        store = _stores.get(dsn)
        if store is None:
            log.debug("opening ClickHouse store %s", redact(dsn))
            store = Store(dsn)
            if apply_schema:
                store.apply_schema()
            _stores[dsn] = store
        return store


def _open_embedded(dsn: str) -> Client:
    path = dsn.removeprefix("chdb://")
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create the embedded store {path}: {exc.strerror}; "
            "set DATA_DIR to a writable directory"
        ) from None
    # chDB prints its own failure to the process's stderr, next to the exception it raises.
    with _stderr_kept_back() as held:
        try:
            return clickhouse_connect.get_client(dsn=dsn)
        except Exception as exc:
            if "already initialized" in str(exc):
                raise StoreError(
                    f"cannot open the embedded store {path}: this process has another one open "
                    "(chDB serves one directory per process)"
                ) from exc
            if "Another server instance" in held() or "EmbeddedServer" in str(exc):
                raise StoreError(
                    f"the embedded store {path} is open in another process (chDB serves a "
                    "directory to one process): stop it, e.g. `binance-metrics up` (whose page "
                    "serves the bars at /api/bars), or use another DATA_DIR"
                ) from exc
            raise StoreError(f"cannot open the embedded store {path}: {_first_line(exc)}") from exc


def _connect(dsn: str) -> Client:
    try:
        return clickhouse_connect.get_client(dsn=dsn)
    except Exception as exc:
        raise StoreError(
            f"cannot reach ClickHouse at {redact(dsn)}: {_reason(exc)}; check CLICKHOUSE_URL"
        ) from exc


#: What a failed connection most often means, by the words of the underlying error.
_REASONS: Final = (
    ("Connection refused", "connection refused (is the server running, on that port?)"),
    ("Name or service not known", "unknown host name"),
    ("Temporary failure in name resolution", "unknown host name"),
    ("timed out", "connection timed out"),
    ("Authentication failed", "authentication failed (wrong user or password)"),
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for words, reason in _REASONS:
        if words in text:
            return reason
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    """ClickHouse's messages run over lines (and a stack trace); the first says what failed."""
    lines = [line.strip() for line in redact(str(exc)).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def _stderr_kept_back() -> Iterator[Callable[[], str]]:
    """Hold back what is written to file descriptor 2 meanwhile (chDB writes there directly).

    Yields a function that returns the text so far. On success the text is written out after
    all; on failure it is only logged at debug level, as the exception says the same.
    """
    with tempfile.TemporaryFile() as held:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to hold back
            yield lambda: ""
            return
        os.dup2(held.fileno(), 2)

        def text() -> str:
            held.seek(0)
            return held.read().decode("utf-8", errors="replace")

        try:
            yield text
        except BaseException:
            os.dup2(saved, 2)
            log.debug("the store wrote: %s", text().strip())
            raise
        else:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
        finally:
            os.close(saved)
