"""Which failures of the store are worth retrying, and which only a person can mend.

A refused connection, a timeout, a busy or full server (too many parts, memory limit, disk
full, too many queries) passes: the sink waits it out. A wrong schema, a wrong type, a missing
right or a bad statement does not pass by waiting: the sink stops the dataflow and says why
(docs/ledger.md, "Sink errors"). The judgement goes by ClickHouse's error code, which the
server and chDB both put in the message (``Code: 60. ... (UNKNOWN_TABLE)``) and
clickhouse-connect in the exception's ``code`` and ``name``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from clickhouse_connect.driver.exceptions import (
    DataError,
    Error,
    InterfaceError,
    NotSupportedError,
    ProgrammingError,
)

from binance_metrics.store.clickhouse import Store

#: ClickHouse errors that no retry mends (name: code, as in ClickHouse's ErrorCodes.cpp).
PERMANENT: Final = {
    # the schema: a table, database or column missing or different
    "UNKNOWN_TABLE": 60, "UNKNOWN_DATABASE": 81, "NO_SUCH_COLUMN_IN_TABLE": 16,
    "THERE_IS_NO_COLUMN": 8, "NOT_FOUND_COLUMN_IN_BLOCK": 10, "UNKNOWN_IDENTIFIER": 47,
    "NUMBER_OF_COLUMNS_DOESNT_MATCH": 20,
    # types and values
    "TYPE_MISMATCH": 53, "ILLEGAL_TYPE_OF_ARGUMENT": 43, "ILLEGAL_COLUMN": 44,
    "CANNOT_CONVERT_TYPE": 70, "NO_COMMON_TYPE": 386, "DECIMAL_OVERFLOW": 407,
    "CANNOT_PARSE_TEXT": 6, "CANNOT_PARSE_NUMBER": 72, "CANNOT_PARSE_DATETIME": 41,
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED": 27, "INCORRECT_DATA": 117,
    "ARGUMENT_OUT_OF_BOUND": 69, "VIOLATED_CONSTRAINT": 469,
    # rights and users
    "ACCESS_DENIED": 497, "READONLY": 164, "AUTHENTICATION_FAILED": 516, "UNKNOWN_USER": 192,
    "WRONG_PASSWORD": 193, "REQUIRED_PASSWORD": 194, "IP_ADDRESS_NOT_ALLOWED": 195,
    "SETTING_CONSTRAINT_VIOLATION": 452,
    # the statement itself
    "SYNTAX_ERROR": 62, "UNKNOWN_FUNCTION": 46, "UNKNOWN_SETTING": 115, "BAD_ARGUMENTS": 36,
    "NOT_IMPLEMENTED": 48, "UNSUPPORTED_METHOD": 1, "LOGICAL_ERROR": 49,
}  # fmt: skip
_PERMANENT_CODES: Final = frozenset(PERMANENT.values())
_CODE: Final = re.compile(r"\bCode:\s*(\d+)")
#: clickhouse-connect's own checks before it sends anything (an unknown column, a value its
#: column type cannot take): the same mistake every time.
_CLIENT_MISTAKES: Final = (ProgrammingError, DataError, NotSupportedError, InterfaceError)


def error_code(exc: BaseException) -> int | None:
    """ClickHouse's error code in ``exc`` or its causes, or None (e.g. no connection at all)."""
    for error in _chain(exc):
        if isinstance(error, Error) and error.code is not None:
            return error.code
        match = _CODE.search(str(error))
        if match:
            return int(match.group(1))
    return None


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying cannot mend ``exc`` (see the module doc).

    A ClickHouse error is judged by its code: permanent when :data:`PERMANENT` lists it, else
    passing (busy, full, too many parts, out of memory, timeouts: the server's own state). A
    failure without a code is passing when it is about the connection (refused, reset, timed
    out: clickhouse-connect's ``OperationalError``, Python's ``OSError``), permanent when
    clickhouse-connect refused the insert itself, and permanent when it is any other error:
    a bug in our code, which a retry only repeats.
    """
    code = error_code(exc)
    if code is not None:
        return code in _PERMANENT_CODES
    if any(isinstance(error, _CLIENT_MISTAKES) for error in _chain(exc)):
        return True
    return not any(isinstance(error, (OSError, Error)) for error in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_detached(store: Store, table: str) -> bool:
    """Whether ``table`` (``database.name``) is detached: taken out for maintenance, so that
    its UNKNOWN_TABLE passes once it is attached again. False when that cannot be told."""
    database, name = table.split(".", 1)
    try:
        rows = store.query(
            "SELECT count() FROM system.detached_tables "
            "WHERE database = {database:String} AND table = {name:String}",
            {"database": database, "name": name},
        )
    except Exception:  # noqa: BLE001 - then the error is judged as it is
        return False
    return bool(rows and rows[0][0])
