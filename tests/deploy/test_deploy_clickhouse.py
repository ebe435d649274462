"""ClickHouse server users of the compose stack (clickhouse/users.d/binance-users.xml)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from binance_metrics.ledger.holes import ACCOUNTED_TABLE
from binance_metrics.store.checkpoint import STARTS_TABLE
from binance_metrics.store.clickhouse import BARS_1S_TABLE, BARS_TABLE
from binance_metrics.store.forming import FORMING_TABLE
from tests.deploy.deploy_support import INIT_SQL, USERS_XML, run_chdb


@pytest.fixture(scope="module")
def users() -> ET.Element:
    return ET.parse(USERS_XML).getroot()


def _grants(users: ET.Element, user: str) -> list[str]:
    return [q.text or "" for q in users.findall(f"users/{user}/grants/query")]


def _schema_objects() -> set[str]:
    sql = INIT_SQL.read_text(encoding="utf-8")
    return set(re.findall(r"CREATE (?:TABLE|VIEW) IF NOT EXISTS (\w+\.\w+)", sql))


def test_writer_may_only_insert_into_and_read_the_bars_table(users: ET.Element) -> None:
    """INSERT and SELECT on the bars tables (and the ledger's accounted trade ids, the forming
    bars and the ingestor's starts), and nothing else: no DDL (the store checks that
    init.sql's objects exist before it would create them)."""
    assert {BARS_TABLE, BARS_1S_TABLE, ACCOUNTED_TABLE, FORMING_TABLE, STARTS_TABLE} <= (
        _schema_objects()
    )
    assert _grants(users, "binance_writer") == [
        f"GRANT INSERT, SELECT ON {BARS_TABLE}",
        f"GRANT INSERT, SELECT ON {ACCOUNTED_TABLE}",
        f"GRANT INSERT, SELECT ON {FORMING_TABLE}",
        f"GRANT INSERT, SELECT ON {STARTS_TABLE}",
        f"GRANT INSERT, SELECT ON {BARS_1S_TABLE}",
    ]
    profile = users.findtext("users/binance_writer/profile")
    assert users.find(f"profiles/{profile}") is not None
    assert users.findtext("users/binance_writer/access_management") == "0"


def test_reader_is_read_only_on_the_binance_database(users: ET.Element) -> None:
    assert _grants(users, "binance_reader") == ["GRANT SELECT ON binance.*"]
    assert all(name.startswith("binance.") for name in _schema_objects())
    profile = users.find(f"profiles/{users.findtext('users/binance_reader/profile')}")
    assert profile is not None
    assert profile.findtext("readonly") == "1"
    # The Grafana plugin (clickhouse-go) sets max_execution_time: allowed, within bounds.
    constraint = profile.find("constraints/max_execution_time")
    assert constraint is not None and constraint.find("changeable_in_readonly") is not None
    assert users.findtext("users/binance_reader/access_management") == "0"


def test_grant_statements_parse(users: ET.Element, tmp_path: Path) -> None:
    grants = [g for user in ("binance_writer", "binance_reader") for g in _grants(users, user)]
    queries = {g: f"EXPLAIN AST {g} TO someone" for g in grants}
    results = run_chdb(tmp_path / "store", [], queries)
    for grant, result in results.items():
        assert "error" not in result, (grant, result)
        assert result["rows"][0] == ["GrantQuery"]
