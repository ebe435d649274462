"""The ClickHouse client: a server over HTTP, or chDB in-process, through clickhouse-connect.

chDB opens a data directory from one process at a time, so every user of the embedded store in a
process shares one client (and one lock): the dataflow's sink workers, the web page and the CLI.
A :class:`Store` reads and writes one market's bars (``store.market``); :meth:`Store.in_market`
gives another market's view on the same client.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from binance_metrics.bars import QUOTE_SCALE_DIGITS, Bar, BarUpdate
from binance_metrics.errors import StoreError
from binance_metrics.markets import Market
from binance_metrics.redact import redact
from binance_metrics.trades import SCALE_DIGITS

log = logging.getLogger(__name__)

#: The schema, shipped inside the package (package data) so that any install finds it; compose
#: mounts the same file into the ClickHouse server's /docker-entrypoint-initdb.d/.
SCHEMA_PATH: Final[Traversable] = files("binance_metrics.store") / "schema" / "init.sql"
BARS_TABLE: Final = "binance.ohlcv"
#: The 1-second bars, written instead of the 1-minute ones when WINDOW_SECONDS=1.
BARS_1S_TABLE: Final = "binance.ohlcv_1s"
_CREATE: Final = re.compile(r"CREATE (DATABASE|TABLE|VIEW) IF NOT EXISTS ([\w.]+)")
#: A bar's values, as columns of the bars tables (after its market, symbol and window_start).
BAR_FIELDS: Final = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
    "base_volume",
    "taker_buy_base_volume",
    "first_trade_id",
    "last_trade_id",
    "trade_ids",
)
BAR_COLUMNS: Final = ("market", "symbol", "window_start", *BAR_FIELDS)
#: What a store made before markets holds: spot bars.
_LEGACY_MARKET: Final = "spot"


class Store:
    """A thread-safe handle on the bars store, for the bars of ``market``."""

    def __init__(self, dsn: str, market: Market = "spot") -> None:
        self.dsn = dsn
        self.market: Market = market
        self.embedded = dsn.startswith("chdb://")
        self._client: Client = _open_embedded(dsn) if self.embedded else _connect(dsn)
        self._lock = threading.Lock()

    def in_market(self, market: Market) -> Store:
        """This store for the bars of ``market``: the same client and lock."""
        if market == self.market:
            return self
        view = copy.copy(self)
        view.market = market
        return view

    def apply_schema(self) -> None:
        """Create what is missing of ``init.sql`` (its statements are ``CREATE ... IF NOT EXISTS``).

        Existence is checked first because ClickHouse checks the CREATE privilege before ``IF NOT
        EXISTS``: least-privilege users (Grafana's reader, the dataflow's writer) never reach a
        CREATE for objects that are there. Only the bars table is required; a view that this user
        may not create is reported and skipped.
        """
        for statement in split_sql(SCHEMA_PATH.read_text(encoding="utf-8")):
            match = _CREATE.match(statement)
            if match is None:
                raise ValueError(
                    f"{SCHEMA_PATH}: not a CREATE ... IF NOT EXISTS statement: {statement}"
                )
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
                        f"{SCHEMA_PATH} as a user with CREATE rights "
                        "(docs/operations.md, Schema changes)"
                    ) from exc
                log.warning("could not create %s (%s); an administrator can run %s", name,
                            exc, SCHEMA_PATH)  # fmt: skip

    def migrate(self, path: Traversable = SCHEMA_PATH) -> None:
        """Bring tables and views made by an older release to the layout of ``init.sql``.

        A table lacking a column (``market``, the base volumes, ``trade_ids``), ordered by
        another key or with another engine (before ``version``) is rebuilt: a new table is made
        and filled from the old one (its rows are spot's: stores before markets were spot only),
        then the two are swapped (``EXCHANGE TABLES``, atomic) and the old one dropped. A crash
        at any point loses nothing: before the swap the old table is untouched (the next start
        begins again), after it the new one is whole (the next start drops the leftover). A view
        without ``market`` is made again (it holds no data). A server is left to its
        administrator (docs/markets.md, Migrating a server); a warning says so.
        """
        for statement in split_sql(path.read_text("utf-8")):
            match = _CREATE.match(statement)
            if match is None or match.group(1) == "DATABASE":
                continue
            kind, name = match.groups()
            database, table = name.split(".")
            rows = self.query(
                "SELECT engine_full, sorting_key, create_table_query FROM system.tables "
                "WHERE database = {database:String} AND name = {table:String}",
                {"database": database, "table": table},
            )
            if not rows:
                continue  # this user could not create it: apply_schema said so
            engine, sorting_key, created = rows[0]
            staging = f"{name}_migrating"
            if kind == "VIEW":
                current = "market" in created
            else:
                columns, key, wanted_engine = _layout(statement)
                have = self._columns(name)
                current = (
                    set(columns) <= set(have)
                    and sorting_key.replace(" ", "") == key
                    and engine.startswith(wanted_engine)
                )
            if current:
                if self.embedded and kind == "TABLE":
                    self.command(f"DROP TABLE IF EXISTS {staging}")  # a swap's leftover
                continue
            if not self.embedded:
                log.warning(
                    "%s predates markets (or the base volumes): an administrator migrates it "
                    "(docs/markets.md, Migrating a server)",
                    name,
                )
                continue
            if kind == "VIEW":
                log.info("making %s again, keyed by market", name)
                self.command(f"DROP VIEW IF EXISTS {name}")
                self.command(statement)
                continue
            log.info("migrating %s to the current layout (its rows are kept, as spot's)", name)
            copied = [c for c in columns if c in have]
            values = list(copied)
            if "market" not in have:
                copied.append("market")
                values.append(f"'{_LEGACY_MARKET}'")
            self.command(f"DROP TABLE IF EXISTS {staging}")
            self.command(statement.replace(name, staging, 1))
            self.command(
                f"INSERT INTO {staging} ({', '.join(copied)}) "
                f"SELECT {', '.join(values)} FROM {name} FINAL"
            )
            self.command(f"EXCHANGE TABLES {name} AND {staging}")
            self.command(f"DROP TABLE {staging}")

    def _columns(self, table: str) -> list[str]:
        """The stored columns of ``table`` (not the computed ones)."""
        return [
            row[0]
            for row in self.query("DESCRIBE TABLE " + table)
            if row[2] not in ("MATERIALIZED", "ALIAS")
        ]

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

    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> None:
        """Insert ``rows`` (values in the order of ``columns``) into ``table``."""
        with self._lock:
            self._client.insert(table, rows, column_names=columns)

    def insert_bars(self, rows: Sequence[BarUpdate], table: str = BARS_TABLE) -> int:
        """Insert bars into ``table`` (:func:`bars_table`); return how many rows were written.

        Within one call the same rule as the table's holds (:attr:`Bar.version`: most trades,
        a doubled bar last, the later among equals), so a filler or a partial version in the
        same batch never wins over the real bar. A bar whose values do not fit the columns is
        left out and logged (it must not block every other symbol's bars). One insert touches
        at most ``MAX_MONTHS_PER_INSERT`` monthly partitions (ClickHouse refuses more than 100).
        """
        market = self.market
        best: dict[tuple[str, int], Bar] = {}
        for symbol, start_ms, bar in rows:
            held = best.get((symbol, start_ms))
            if held is None or bar.version >= held.version:
                best[(symbol, start_ms)] = bar
        data: dict[int, list[str]] = {}
        for (symbol, start_ms), bar in best.items():
            problem = out_of_range(bar)
            if problem is not None:
                log.error("%s %d: bar not stored, %s: %s", symbol, start_ms, problem, bar)
                continue
            data.setdefault(_month(start_ms), []).append(_row(market, symbol, start_ms, bar))
        months = sorted(data)
        for i in range(0, len(months), MAX_MONTHS_PER_INSERT):
            chunk = [row for month in months[i : i + MAX_MONTHS_PER_INSERT] for row in data[month]]
            block = "".join(chunk).encode()
            with self._lock:
                self._client.raw_insert(table, BAR_COLUMNS, block, fmt="TabSeparated")
        return sum(len(rows) for rows in data.values())


def bars_table(window_seconds: int) -> str:
    """The table of bars ``window_seconds`` long (``WINDOW_SECONDS``: 60 or 1)."""
    return BARS_1S_TABLE if window_seconds == 1 else BARS_TABLE


#: The largest scaled value a Decimal(38, 8) column (or, with its 10**16 scale, a quote volume's
#: Decimal(38, 16)) holds: 38 digits.
_MAX_SCALED: Final = 10**38 - 1
MAX_MONTHS_PER_INSERT: Final = 90
_AMOUNTS: Final = (
    "open", "high", "low", "close", "volume", "quote_volume",
    "taker_buy_volume", "taker_buy_quote_volume", "base_volume", "taker_buy_base_volume",
)  # fmt: skip


def out_of_range(bar: Bar) -> str | None:
    """Why ``bar`` cannot be stored as it is, or None."""
    for name in _AMOUNTS:
        if not 0 <= getattr(bar, name) <= _MAX_SCALED:
            return f"{name} does not fit its Decimal column"
    return None


def _month(start_ms: int) -> int:
    moment = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    return moment.year * 12 + moment.month


def _row(market: str, symbol: str, start_ms: int, bar: Bar) -> str:
    """One TabSeparated line of ``BAR_COLUMNS``: amounts as exact decimal text, written by
    ClickHouse's own parser (clickhouse-connect's Decimal encoding costs ~100 us a bar)."""
    quote = QUOTE_SCALE_DIGITS
    ids = ",".join(f"({first},{last})" for first, last in stored_ids(bar))
    return (
        f"{market}\t{_tsv(symbol)}\t{start_ms // 1000}.{start_ms % 1000:03d}\t"
        f"{_text(bar.open)}\t{_text(bar.high)}\t{_text(bar.low)}\t{_text(bar.close)}\t"
        f"{_text(bar.volume)}\t{_text(bar.quote_volume, quote)}\t{bar.trade_count}\t"
        f"{_text(bar.taker_buy_volume)}\t{_text(bar.taker_buy_quote_volume, quote)}\t"
        f"{_text(bar.base_volume)}\t{_text(bar.taker_buy_base_volume)}\t"
        f"{bar.first_trade_id}\t{bar.last_trade_id}\t[{ids}]\n"
    )


def _text(value: int, digits: int = SCALE_DIGITS) -> str:
    """A non-negative scaled integer as exact decimal text (out_of_range checked the sign)."""
    whole, fraction = divmod(value, 10**digits)
    return f"{whole}.{fraction:0{digits}d}"


def _tsv(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def stored_ids(bar: Bar) -> list[tuple[int, int]]:
    """The ``trade_ids`` column of ``bar``: its id runs; for a bar built without them, the one
    run a complete bar is, else nothing (unknown)."""
    if bar.ids is not None:
        return list(bar.ids.runs)
    if bar.trade_count and bar.trade_count == bar.last_trade_id - bar.first_trade_id + 1:
        return [(bar.first_trade_id, bar.last_trade_id)]
    return []


_COLUMN: Final = re.compile(r"^    (\w+)\s+\S", re.MULTILINE)
_ORDER_BY: Final = re.compile(r"^ORDER BY \(?([^)\n]*)\)?$", re.MULTILINE)
_ENGINE: Final = re.compile(r"^ENGINE = (\S+)", re.MULTILINE)


def _layout(create: str) -> tuple[list[str], str, str]:
    """Of a ``CREATE TABLE`` of ``init.sql``: its stored columns, its sorting key (no spaces),
    its engine."""
    columns = [
        match.group(1)
        for match in _COLUMN.finditer(create)
        if "MATERIALIZED" not in create[match.start() : create.index("\n", match.start())]
    ]
    order = _ORDER_BY.search(create)
    engine = _ENGINE.search(create)
    assert order is not None and engine is not None, create
    return columns, order.group(1).replace(" ", ""), engine.group(1)


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


def open_store(dsn: str, market: Market) -> Store:
    """The process-wide store for ``dsn`` (created, its schema applied and an older layout
    migrated, on first use), for the bars of ``market``."""
    with _stores_lock:
        store = _stores.get(dsn)
        if store is None:
            log.debug("opening ClickHouse store %s", redact(dsn))
            store = Store(dsn)
            store.apply_schema()
            store.migrate()
            _stores[dsn] = store
        return store.in_market(market)


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
