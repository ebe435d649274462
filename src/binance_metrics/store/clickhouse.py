"""The ClickHouse client: a server over HTTP, or chDB in-process, through clickhouse-connect.

chDB opens a data directory from one process at a time, so every user of the embedded store in a
process shares one client (and one lock): the dataflow's sink workers, the web page and the CLI.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.errors import StoreError

log = logging.getLogger(__name__)

#: The schema, shipped inside the package (package data) so that any install finds it; compose
#: mounts the same file into the ClickHouse server's /docker-entrypoint-initdb.d/.
SCHEMA_PATH: Final[Traversable] = files("binance_metrics.store") / "schema" / "init.sql"
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
        if self.embedded:
            Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
        try:
            self._client: Client = clickhouse_connect.get_client(dsn=dsn)
        except Exception as exc:
            if self.embedded and "Error initializing EmbeddedServer" in str(exc):
                raise StoreError(
                    f"the embedded store {dsn.removeprefix('chdb://')} is open in another "
                    "process (chDB serves a directory to one process): stop it, e.g. "
                    "`binance-metrics up` (whose page serves the bars at /api/bars), or use "
                    "another DATA_DIR"
                ) from exc
            raise StoreError(f"cannot open the store {_redact(dsn)}: {exc}") from exc
        self._lock = threading.Lock()

    def apply_schema(self, path: Traversable = SCHEMA_PATH) -> None:
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
                    raise
                log.warning("could not create %s (%s); an administrator can run %s", name,
                            exc, path)  # fmt: skip

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._lock:
            return self._client.command(sql, parameters=parameters)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            result = self._client.query(sql, parameters=parameters)
        return [tuple(row) for row in result.result_rows]

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
            log.info("opening ClickHouse store %s", _redact(dsn))
            store = Store(dsn)
            if apply_schema:
                store.apply_schema()
            _stores[dsn] = store
        return store


def _redact(dsn: str) -> str:
    scheme, sep, rest = dsn.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
