"""Real failures of the store, judged passing or permanent: each is made to happen on the real
engine (chDB) or a real refused connection, never built by hand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import clickhouse_connect
import pytest

from binance_metrics.kafka.broker import free_port
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.failures import error_code, is_detached, is_permanent

SCRATCH = "binance.failures_scratch"


@pytest.fixture
def scratch(store: Store) -> Iterator[Store]:
    """A table of its own (``SCRATCH``), so that the bars table of the session stays as it is."""
    store.command(f"DROP TABLE IF EXISTS {SCRATCH}")
    store.command(
        f"CREATE TABLE {SCRATCH} (id Int64, amounts Array(UInt8)) ENGINE = MergeTree ORDER BY id"
    )
    yield store
    store.command(f"ATTACH TABLE IF NOT EXISTS {SCRATCH}")
    store.command(f"DROP TABLE IF EXISTS {SCRATCH}")


def _failure(action: Callable[[], object]) -> Exception:
    with pytest.raises(Exception) as caught:  # any failure: that is the point
        action()
    assert isinstance(caught.value, Exception)
    return caught.value


def _insert(store: Store, rows: list[list[object]], columns: tuple[str, ...] = ("id",)) -> None:
    store.insert(SCRATCH, rows, columns)


def _broken_constraint(store: Store) -> None:
    store.command(f"ALTER TABLE {SCRATCH} ADD CONSTRAINT positive CHECK id > 0")
    _insert(store, [[-1]])


def _disk_full(store: Store) -> None:
    store.command(
        f"ALTER TABLE {SCRATCH} MODIFY SETTING min_free_disk_bytes_to_perform_insert = 1e18"
    )
    _insert(store, [[1]])


def _too_many_parts(store: Store) -> None:
    store.command(f"SYSTEM STOP MERGES {SCRATCH}")
    store.command(f"ALTER TABLE {SCRATCH} MODIFY SETTING parts_to_throw_insert = 1")
    _insert(store, [[1]])
    _insert(store, [[2]])


PERMANENT_FAILURES: dict[str, Callable[[Store], object]] = {
    "unknown table": lambda s: s.insert("binance.no_such_table", [[1]], ("id",)),
    "unknown column": lambda s: _insert(s, [[1]], ("no_such_column",)),
    "type mismatch": lambda s: _insert(s, [[1, Decimal("1.5")]], ("id", "amounts")),
    "syntax": lambda s: s.command(f"INSERT INTO {SCRATCH} VALUE (1)"),
    "read-only user": lambda s: s.command(
        f"INSERT INTO {SCRATCH} (id) SETTINGS readonly = 1 VALUES (1)"
    ),
    "broken constraint": _broken_constraint,
}

PASSING_FAILURES: dict[str, Callable[[Store], object]] = {
    "disk full": _disk_full,
    "too many parts": _too_many_parts,
    "memory limit": lambda s: s.query(
        "SELECT count() FROM numbers(1000000) GROUP BY number SETTINGS max_memory_usage = 100000"
    ),
    "timeout": lambda s: s.query(
        "SELECT sleep(1) SETTINGS max_execution_time = 0.2, "
        "timeout_before_checking_execution_speed = 0"
    ),
}


@pytest.mark.parametrize("name", PERMANENT_FAILURES)
def test_a_failure_no_retry_mends_is_permanent(scratch: Store, name: str) -> None:
    failure = _failure(lambda: PERMANENT_FAILURES[name](scratch))
    assert is_permanent(failure), repr(failure)


@pytest.mark.parametrize("name", PASSING_FAILURES)
def test_a_busy_or_full_server_is_passing(scratch: Store, name: str) -> None:
    failure = _failure(lambda: PASSING_FAILURES[name](scratch))
    assert error_code(failure) is not None, repr(failure)
    assert not is_permanent(failure), repr(failure)


def test_a_refused_connection_is_passing() -> None:
    failure = _failure(
        lambda: clickhouse_connect.get_client(host="127.0.0.1", port=free_port(), connect_timeout=5)
    )
    assert error_code(failure) is None
    assert not is_permanent(failure), repr(failure)


def test_a_bug_of_ours_is_permanent() -> None:
    nothing: dict[str, int] = {}
    assert is_permanent(_failure(lambda: nothing["missing"]))


def test_a_detached_table_is_told_from_a_missing_one(scratch: Store) -> None:
    assert not is_detached(scratch, SCRATCH)
    scratch.command(f"DETACH TABLE {SCRATCH}")
    failure = _failure(lambda: _insert(scratch, [[1]]))
    assert error_code(failure) == 60  # UNKNOWN_TABLE, as for a table that does not exist
    assert is_detached(scratch, SCRATCH)
    assert not is_detached(scratch, "binance.no_such_table")
