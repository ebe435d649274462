"""Run SQL against the real schema in a fresh chDB store, in a process of its own.

chDB opens one data directory per process (a second path fails with "EmbeddedServer already
initialized"), and other tests of the same pytest run open their own; so the deploy tests run
their SQL here, in a subprocess. Input (stdin, JSON)::

    {"data_dir": "...", "schema": "<init.sql text>", "setup": ["INSERT ...", ...],
     "queries": {"name": "SELECT ...", ...}}

Output (stdout, JSON): ``{"name": {"columns": [...], "types": [...], "rows": [[...], ...]}}``, or
``{"name": {"error": "..."}}`` for a query that failed. Values are rendered with ``str``.
"""

from __future__ import annotations

import json
import sys

import clickhouse_connect


def main() -> int:
    job = json.load(sys.stdin)
    client = clickhouse_connect.get_client(dsn=f"chdb://{job['data_dir']}")
    for statement in job["schema"].split("\n;\n"):
        if statement.strip() and not all(
            line.strip().startswith("--") or not line.strip() for line in statement.splitlines()
        ):
            client.command(statement)
    for statement in job.get("setup", []):
        client.command(statement)
    results: dict[str, object] = {}
    for name, sql in job["queries"].items():
        try:
            result = client.query(sql)
        except Exception as exc:  # noqa: BLE001 - report every failure, the test decides
            results[name] = {"error": str(exc)}
            continue
        results[name] = {
            "columns": list(result.column_names),
            "types": [t.name for t in result.column_types],
            "rows": [[str(v) for v in row] for row in result.result_rows],
        }
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
