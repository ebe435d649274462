"""Bars keyed by market: a store made before markets is migrated at start and keeps every row
(also when the migration is cut short), and the same symbol in two markets never collides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.forming import FormingUpdate
from binance_metrics.ledger.accounted import AccountedTrades, record_accounted
from binance_metrics.ledger.holes import find_holes
from binance_metrics.store.checkpoint import record_start, start_points, stored_tails
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.forming import insert_forming
from binance_metrics.store.queries import fetch_bars, list_symbols

OLD_SCHEMA = Path(__file__).with_name("schema_before_markets.sql")
MINUTE = 60_000
T0 = 1_723_161_600_000  # 2024-08-09T00:00Z

# Builds a store of the release before markets, with rows in every table.
BUILD = """
import sys
from pathlib import Path
import clickhouse_connect
from binance_metrics.store.clickhouse import split_sql
dsn, schema = sys.argv[1], sys.argv[2]
client = clickhouse_connect.get_client(dsn=dsn)
for statement in split_sql(Path(schema).read_text("utf-8")):
    client.command(statement)
bar = ("open, high, low, close, volume, quote_volume, trade_count, taker_buy_volume, "
       "taker_buy_quote_volume, first_trade_id, last_trade_id")
for table in ("binance.ohlcv", "binance.ohlcv_1s"):
    client.command(
        f"INSERT INTO {table} (symbol, window_start, {bar}, trade_ids) "
        "SELECT if(number % 3 = 0, 'ETHUSDT', 'BTCUSDT'), "
        "  toDateTime64('2024-08-09 00:00:00', 3, 'UTC') + toIntervalMinute(number), "
        "  100 + number, 110 + number, 90 + number, 105 + number, number / 7, "
        "  toDecimal128(number, 16) / 3, 10 + number, number / 9, toDecimal128(number, 16) / 11, "
        "  1000 * number, 1000 * number + 9 + number, "
        "  [(1000 * number, 1000 * number + 9 + number)] "
        "FROM numbers(500)"
    )
# A partial version of one bar, which FINAL must leave out.
client.command(
    f"INSERT INTO binance.ohlcv (symbol, window_start, {bar}, trade_ids) VALUES "
    "('BTCUSDT', '2024-08-09 00:01:00', 1, 1, 1, 1, 1, 1, 1, 1, 1, 1000, 1000, [(1000, 1000)])"
)
client.command(
    f"INSERT INTO binance.ohlcv_forming (symbol, window_start, {bar}) VALUES "
    "('BTCUSDT', '2024-08-09 08:20:00', 5, 6, 4, 5, 2, 10, 3, 1, 5, 7, 9)"
)
client.command(
    "INSERT INTO binance.accounted_trades (symbol, first_trade_id, last_trade_id, trade_time, "
    "reason) VALUES ('BTCUSDT', 5, 5, '2024-08-09 00:00:01', 'X=ADL')"
)
client.command(
    "INSERT INTO binance.ingest_starts (symbol, first_trade_id) VALUES ('BTCUSDT', 42)"
)
client.close()
"""

# Dumps every table's rows (FINAL, ordered) as JSON, then checks the layout.
DUMP = """
import json, os, sys
from binance_metrics.store import clickhouse
dsn, crash_at = sys.argv[1], sys.argv[2]
command = clickhouse.Store.command
def crashing(self, sql, parameters=None):
    if crash_at and sql.startswith(crash_at):
        os._exit(9)  # the process dies here, as in a power cut
    return command(self, sql, parameters)
clickhouse.Store.command = crashing
store = clickhouse.open_store(dsn, "spot")
tables = {
    "binance.ohlcv": "symbol, window_start",
    "binance.ohlcv_1s": "symbol, window_start",
    "binance.ohlcv_forming": "symbol",
    "binance.accounted_trades": "symbol, first_trade_id",
    "binance.ingest_starts": "symbol, first_trade_id",
}
out = {}
for table, order in tables.items():
    columns = [row[0] for row in store.query("DESCRIBE TABLE " + table)
               if row[2] != "MATERIALIZED" and row[0] not in ("market", "written_at",
               "base_volume", "taker_buy_base_volume")]
    rows = store.query(f"SELECT {', '.join(columns)} FROM {table} FINAL ORDER BY {order}")
    markets = store.query(f"SELECT DISTINCT market FROM {table}")
    out[table] = {"rows": [[str(v) for v in row] for row in rows],
                  "markets": sorted(m[0] for m in markets)}
out["leftovers"] = store.query(
    "SELECT name FROM system.tables WHERE database = 'binance' AND name LIKE '%migrating'")
out["week"] = [str(row[0]) for row in store.query(
    "SELECT trade_count FROM binance.ohlcv_klines(market = 'spot', symbol = 'BTCUSDT', "
    "interval = '1w', tz_offset_ms = 0, from_ms = 0, to_ms = 1800000000000)")]
print(json.dumps(out))
"""


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CLICKHOUSE_URL"}
    return subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _old_rows(dsn: str) -> dict[str, list[list[str]]]:
    """The rows of the old store, read with the old layout (before any migration)."""
    read = """
import json, sys
import clickhouse_connect
client = clickhouse_connect.get_client(dsn=sys.argv[1])
tables = {"binance.ohlcv": "symbol, window_start", "binance.ohlcv_1s": "symbol, window_start",
          "binance.ohlcv_forming": "symbol", "binance.accounted_trades": "symbol, first_trade_id",
          "binance.ingest_starts": "symbol, first_trade_id"}
out = {}
for table, order in tables.items():
    columns = [r[0] for r in client.query("DESCRIBE TABLE " + table).result_rows
               if r[2] != "MATERIALIZED" and r[0] != "written_at"]
    rows = client.query(f"SELECT {', '.join(columns)} FROM {table} FINAL ORDER BY {order}")
    out[table] = [[str(v) for v in row] for row in rows.result_rows]
print(json.dumps(out))
"""
    done = _run(read, dsn)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "crash_at",
    [
        "",  # no crash
        "INSERT INTO binance.ohlcv_migrating",  # the new table is half made
        "EXCHANGE TABLES binance.ohlcv AND",  # made, not swapped
        "DROP TABLE binance.ohlcv_migrating",  # swapped, the old one not dropped
        "EXCHANGE TABLES binance.ingest_starts",  # the last table, the others done
    ],
)
def test_a_store_made_before_markets_is_migrated_and_keeps_every_row(
    tmp_path: Path, crash_at: str
) -> None:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    built = _run(BUILD, dsn, str(OLD_SCHEMA))
    assert built.returncode == 0, built.stderr[-3000:]
    before = _old_rows(dsn)
    assert len(before["binance.ohlcv"]) == len(before["binance.ohlcv_1s"]) == 500
    if crash_at:
        crashed = _run(DUMP, dsn, crash_at)
        assert crashed.returncode == 9, crashed.stderr[-3000:]  # it did die there
    done = _run(DUMP, dsn, "")
    assert done.returncode == 0, done.stderr[-3000:]
    after = json.loads(done.stdout)
    for table, rows in before.items():
        assert after[table]["rows"] == rows, table  # every row, every value, nothing doubled
        assert after[table]["markets"] == ["spot"], table
    assert after["leftovers"] == []
    # The views were made again, keyed by market: 333 BTCUSDT minutes, all in one week.
    assert after["week"] == [str(sum(10 + n for n in range(500) if n % 3))]


def _bar(price: int, first_id: int, trades: int = 1) -> Bar:
    bar = Bar()
    for i in range(trades):
        bar.add(price * 10**8, (i + 1) * 10**8, first_id + i, first_id + i, i % 2 == 0)
    return bar


def test_one_symbol_in_two_markets_never_collides(empty_store: Store) -> None:
    spot, um = empty_store.in_market("spot"), empty_store.in_market("um")
    spot.command("TRUNCATE TABLE binance.accounted_trades")
    spot.insert_bars([BarUpdate("BTCUSDT", T0, _bar(60_000, 100, 2))])
    um.insert_bars([BarUpdate("BTCUSDT", T0, _bar(59_990, 7_000, 3))])
    um.insert_bars([BarUpdate("BTCUSDT", T0 + MINUTE, _bar(59_995, 7_003, 1))])

    (spot_bar,) = fetch_bars(spot, "BTCUSDT")
    um_bars = fetch_bars(um, "BTCUSDT")
    assert (int(spot_bar.open), spot_bar.trade_count, spot_bar.first_trade_id) == (60_000, 2, 100)
    assert [(int(b.open), b.trade_count, b.first_trade_id) for b in um_bars] == [
        (59_990, 3, 7_000),
        (59_995, 1, 7_003),
    ]
    assert fetch_bars(empty_store.in_market("cm"), "BTCUSDT") == []
    assert list_symbols(spot) == list_symbols(um) == ["BTCUSDT"]
    assert list_symbols(empty_store.in_market("cm")) == []
    (week,) = fetch_bars(um, "BTCUSDT", interval="1w")
    assert week.trade_count == 4  # the view reads um's bars only

    # Forming bars: one row per market and symbol.
    insert_forming(spot, [FormingUpdate("BTCUSDT", T0 + 5 * MINUTE, _bar(61_000, 300))])
    insert_forming(um, [FormingUpdate("BTCUSDT", T0 + 5 * MINUTE, _bar(62_000, 7_100))])
    assert fetch_bars(spot, "BTCUSDT", include_open=True)[-1].open == 61_000
    assert fetch_bars(um, "BTCUSDT", include_open=True)[-1].open == 62_000

    # The ledger and the checkpoint: um's ids 7000..7003 are complete, spot's 100..101 too,
    # though together they would be a gap; an accounted id of um is not spot's.
    assert find_holes(spot) == [] and find_holes(um) == []
    record_accounted(um, [AccountedTrades("BTCUSDT", 7_005, 7_005, T0 + MINUTE, "X=ADL")])
    (gap,) = find_holes(um)
    assert (gap.first_missing_id, gap.last_missing_id) == (7_004, 7_004)
    assert find_holes(spot) == []
    tails = {m: stored_tails(s, ["BTCUSDT"])["BTCUSDT"] for m, s in (("spot", spot), ("um", um))}
    assert (tails["spot"].first_trade_id, tails["spot"].last_trade_id) == (100, 101)
    assert (tails["um"].first_trade_id, tails["um"].last_trade_id) == (7_003, 7_003)
    record_start(um, "MKTSIDEUSDT", 9)
    assert start_points(um, ["MKTSIDEUSDT"]) == {"MKTSIDEUSDT": 9}
    assert start_points(spot, ["MKTSIDEUSDT"]) == {}
