"""``binance-metrics bars``: CSV with Binance's columns, plain decimals, JSON and table."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.cli import CSV_HEADER, main
from binance_metrics.kafka.broker import free_port
from binance_metrics.store.clickhouse import Store
from tests.cli.support import CLI, cli_env, error_line, run_cli

MINUTE = 60_000
T0 = 1_723_161_600_000


@pytest.fixture
def stored(empty_store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("CLICKHOUSE_URL", empty_store.dsn)
    tiny = Bar().add(price=1, qty=10**17, first_id=7, last_id=9, buyer_is_maker=False)
    big = Bar().add(price=6_183_763_000_000, qty=2_000_000, first_id=10, last_id=10,
                    buyer_is_maker=True)  # fmt: skip
    empty_store.insert_bars(
        [
            BarUpdate("SHIBUSDT", T0, tiny),
            BarUpdate("SHIBUSDT", T0 + MINUTE, Bar.filler(1)),
            BarUpdate("SHIBUSDT", T0 + 2 * MINUTE, big),
        ]
    )
    return empty_store


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["bars", "--symbol", "shibusdt", *args]) == 0
    return capsys.readouterr().out


def test_csv_has_binance_columns_and_plain_decimals(
    stored: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = list(csv.reader(io.StringIO(run(capsys))))
    assert tuple(rows[0]) == CSV_HEADER == (
        "open_time", "open", "high", "low", "close", "volume", "quote_volume", "trade_count",
        "taker_buy_volume", "taker_buy_quote_volume",
    )  # fmt: skip
    assert rows[1] == [str(T0), "0.00000001", "0.00000001", "0.00000001", "0.00000001",
                       "1000000000.00000000", "10.00000000", "3", "1000000000.00000000",
                       "10.00000000"]  # fmt: skip
    assert rows[2][1:8] == ["0.00000001"] * 4 + ["0.00000000", "0.00000000", "0"]
    assert rows[3][6] == "1236.75260000"
    assert not any("E" in cell for row in rows[1:] for cell in row)


def test_range_json_and_table(stored: Store, capsys: pytest.CaptureFixture[str]) -> None:
    bars = json.loads(run(capsys, "--format", "json", "--start", "2024-08-09T00:01:00Z"))
    assert [b["open_time"] for b in bars] == [T0 + MINUTE, T0 + 2 * MINUTE]
    table = run(capsys, "--format", "table", "--end", "2024-08-09T00:01")
    assert len(table.splitlines()) == 2 and "open_time" in table
    assert json.loads(run(capsys, "--format", "json", "--interval", "5m"))[0]["trade_count"] == 4


def test_a_store_open_in_another_process_gives_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    env.pop("CLICKHOUSE_URL", None)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from binance_metrics.store.clickhouse import "
         f"open_store; open_store('chdb://{tmp_path / 'clickhouse'}'); print('open', flush=True);"
         " time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        result = subprocess.run(
            [sys.executable, "-m", "binance_metrics.cli", "bars", "--symbol", "BTCUSDT"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    line = error_line(result, 1)  # alone: chDB's own "Cannot lock file" line is held back
    assert "is open in another process" in line


def test_start_and_end_take_epoch_milliseconds_as_printed(
    stored: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    by_iso = run(capsys, "--start", "2024-08-09T00:01:00Z", "--end", "2024-08-09T00:02")
    by_ms = run(capsys, "--start", str(T0 + MINUTE), "--end", str(T0 + 2 * MINUTE))
    assert by_ms == by_iso
    assert [row.split(",")[0] for row in by_ms.splitlines()] == ["open_time", str(T0 + MINUTE)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "-5"], "argument --limit: must be at least 1, not -5"),
        (["--limit", "0"], "argument --limit: must be at least 1, not 0"),
        (["--limit", "ten"], "argument --limit: not a whole number: 'ten'"),
        (["--start", "1723161660"], "argument --start: 1723161660 is too small for epoch "
         "milliseconds (before 1973); in seconds? then 1723161660000"),
        (["--end", "yesterday"], "argument --end: 'yesterday' is neither an ISO date/time"),
        (["--interval", "2m"], "argument --interval: invalid choice: '2m'"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_before_anything_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    line = error_line(run_cli(tmp_path, "bars", "--symbol", "BTCUSDT", *args), 2)
    assert line.startswith(f"binance-metrics bars: error: {message}")
    assert line.endswith("(see binance-metrics bars --help)")
    assert not (tmp_path / "data").exists()


def test_a_start_after_the_end_is_refused(tmp_path: Path) -> None:
    args = ["--start", "2024-08-09T00:02", "--end", str(T0 + MINUTE)]
    assert error_line(run_cli(tmp_path, "bars", "--symbol", "BTCUSDT", *args), 2) == (
        "binance-metrics: --start (2024-08-09T00:02:00+00:00) must be before --end "
        "(2024-08-09T00:01:00+00:00)"
    )
    assert not (tmp_path / "data").exists()


def test_an_unreachable_server_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = f"http://binance_reader:s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    line = error_line(run_cli(tmp_path, "bars", "--symbol", "BTCUSDT", CLICKHOUSE_URL=url), 1)
    assert line == (
        f"binance-metrics: error: cannot reach ClickHouse at {url.replace('s3cret', '***')}: "
        "connection refused (is the server running, on that port?); check CLICKHOUSE_URL"
    )


MANY_BARS = """
import sys
from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.store.clickhouse import open_store
store = open_store(sys.argv[1])
store.insert_bars([BarUpdate("BTCUSDT", {t0} + i * 60_000, Bar.filler(6_183_763_000_000))
                   for i in range(20_000)])
"""


def test_a_reader_that_stops_early_ends_bars_quietly(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'data' / 'clickhouse'}"
    env = cli_env(tmp_path / "data")
    code = MANY_BARS.format(t0=T0)
    subprocess.run([sys.executable, "-c", code, dsn], env=env, check=True, timeout=120)
    # 20,000 rows are about 2 MB: far more than a pipe holds, so bars is still writing when the
    # reader goes away, as with `bars | head -2`
    bars = subprocess.Popen(
        [*CLI, "bars", "--symbol", "BTCUSDT"], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert bars.stdout is not None and bars.stderr is not None
    assert bars.stdout.readline().startswith("open_time,")
    assert bars.stdout.readline().startswith(f"{T0},")
    bars.stdout.close()
    stderr = bars.stderr.read()
    assert bars.wait(120) == 0, stderr
    assert stderr == ""


def test_include_open_prints_the_forming_bar_last_with_a_closed_column(
    stored: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    from binance_metrics.forming import FormingUpdate
    from binance_metrics.store.forming import insert_forming

    stored.command("TRUNCATE TABLE binance.ohlcv_forming")
    forming = Bar().add(price=3, qty=10**8, first_id=11, last_id=12, buyer_is_maker=False)
    insert_forming(stored, [FormingUpdate("SHIBUSDT", T0 + 3 * MINUTE, forming)])
    rows = list(csv.reader(io.StringIO(run(capsys, "--include-open"))))
    assert tuple(rows[0]) == (*CSV_HEADER, "closed")
    assert [row[-1] for row in rows[1:]] == ["true", "true", "true", "false"]
    assert rows[-1][:2] == [str(T0 + 3 * MINUTE), "0.00000003"] and rows[-1][7] == "2"
    assert len(list(csv.reader(io.StringIO(run(capsys))))) == 4  # without it: closed bars only
    assert json.loads(run(capsys, "--format", "json", "--include-open"))[-1]["closed"] is False
