"""``binance-metrics bars``: CSV with Binance's columns, plain decimals, JSON and table."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.cli import CSV_HEADER, main
from binance_metrics.kafka.broker import EmbeddedBroker, free_port
from binance_metrics.replay import replay
from binance_metrics.store.clickhouse import Store
from tests.cli.support import CLI, cli_env, error_line, run_cli
from tests.support.data import BTCUSDT_KLINES, XRPETH_AGG_TRADES, XRPETH_KLINES
from tests.support.pipeline import pipeline_settings

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
        "symbol", "open_time", "open", "high", "low", "close", "volume", "close_time",
        "quote_volume", "trade_count", "taker_buy_volume", "taker_buy_quote_volume",
    )  # fmt: skip
    assert rows[1] == ["SHIBUSDT", "2024-08-09T00:00:00.000Z", "0.00000001", "0.00000001",
                       "0.00000001", "0.00000001", "1000000000.00000000",
                       "2024-08-09T00:00:59.999Z", "10.00000000", "3", "1000000000.00000000",
                       "10.00000000"]  # fmt: skip
    assert rows[2][2:10] == ["0.00000001"] * 4 + [
        "0.00000000", "2024-08-09T00:01:59.999Z", "0.00000000", "0"
    ]  # fmt: skip
    assert rows[3][8] == "1236.75260000"
    assert not any("E" in cell for row in rows[1:] for cell in row[2:])


def test_range_json_and_table(stored: Store, capsys: pytest.CaptureFixture[str]) -> None:
    bars = json.loads(run(capsys, "--format", "json", "--start", "2024-08-09T00:01:00Z"))
    assert [b["open_time"] for b in bars] == [T0 + MINUTE, T0 + 2 * MINUTE]
    assert [b["close_time"] for b in bars] == [T0 + 2 * MINUTE - 1, T0 + 3 * MINUTE - 1]
    assert bars[0]["symbol"] == "SHIBUSDT"
    table = run(capsys, "--format", "table", "--end", "2024-08-09T00:01")
    assert len(table.splitlines()) == 2 and "open_time" in table
    assert json.loads(run(capsys, "--format", "json", "--interval", "5m"))[0]["trade_count"] == 4


def test_a_store_open_in_another_process_gives_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    env.pop("CLICKHOUSE_URL", None)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from binance_metrics.store.clickhouse import "
         f"open_store; open_store('chdb://{tmp_path / 'clickhouse'}', 'spot'); "
         "print('open', flush=True); time.sleep(60)"],
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
    assert [row.split(",")[1] for row in by_ms.splitlines()] == [
        "open_time", "2024-08-09T00:01:00.000Z"
    ]  # fmt: skip
    # What csv prints as open_time is what --start takes, and so is binance's epoch ms.
    printed = by_iso.splitlines()[1].split(",")[1]
    assert run(capsys, "--start", printed, "--end", "2024-08-09T00:02") == by_iso
    first = run(capsys, "--format", "binance", "--limit", "1").split(",")[0]
    assert run(capsys, "--format", "binance", "--start", first, "--limit", "1").startswith(first)


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
        (["--timezone", "+14:30"], "argument --timezone: '+14:30' is outside Binance's range"),
        (["--timezone", "Asia/Tokyo"], "argument --timezone: 'Asia/Tokyo' is not a UTC offset"),
        (["--format", "xlsx"], "argument --format: invalid choice: 'xlsx'"),
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
store = open_store(sys.argv[1], 'spot')
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
    assert bars.stdout.readline().startswith("symbol,open_time,")
    assert bars.stdout.readline().startswith("BTCUSDT,2024-08-09T00:00:00.000Z,")
    bars.stdout.close()
    stderr = bars.stderr.read()
    assert bars.wait(120) == 0, stderr
    assert stderr == ""


def test_an_unknown_symbol_is_a_usage_error(
    stored: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bars", "--symbol", "nosuchusdt"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (
        "binance-metrics: --symbol NOSUCHUSDT: no spot bars stored for it (stored: SHIBUSDT)\n"
    )


def test_a_known_symbol_with_nothing_in_the_range_is_empty_not_an_error(
    stored: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bars", "--symbol", "SHIBUSDT", "--start", "2030-01-01"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [",".join(CSV_HEADER)]
    assert out.err == "no bars stored for SHIBUSDT in that range\n"


def test_1s_without_1s_bars_is_a_usage_error(tmp_path: Path) -> None:
    line = error_line(run_cli(tmp_path, "bars", "--symbol", "BTCUSDT", "--interval", "1s"), 2)
    assert line.startswith("binance-metrics: --interval 1s needs 1-second bars")
    assert not (tmp_path / "data").exists()


def test_parquet_needs_a_file(tmp_path: Path) -> None:
    line = error_line(run_cli(tmp_path, "bars", "--symbol", "BTCUSDT", "--format", "parquet"), 2)
    assert line == "binance-metrics: --format parquet writes a file: give it with --output FILE"


def _kline_bar(row: list[str]) -> Bar:
    """A stored bar holding exactly the values of one row of Binance's 12-column kline file."""

    def scaled(text: str, digits: int = 8) -> int:
        return int(Decimal(text).scaleb(digits))

    o, h, low, c, volume = (scaled(v) for v in row[1:6])
    return Bar(
        open=o, high=h, low=low, close=c, volume=volume, quote_volume=scaled(row[7], 16),
        trade_count=int(row[8]), taker_buy_volume=scaled(row[9]),
        taker_buy_quote_volume=scaled(row[10], 16), first_trade_id=1, last_trade_id=int(row[8]),
    )  # fmt: skip


def test_binance_format_is_byte_identical_to_binances_kline_file(
    empty_store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLICKHOUSE_URL", empty_store.dsn)
    original = BTCUSDT_KLINES.read_bytes()
    rows = list(csv.reader(io.StringIO(original.decode())))
    empty_store.insert_bars([BarUpdate("BTCUSDT", int(r[0]), _kline_bar(r)) for r in rows])
    assert main(["bars", "--symbol", "BTCUSDT", "--format", "binance"]) == 0
    written = capsys.readouterr().out.encode()
    assert len(rows) == 1440 and written == original
    # The day as one 1d kline: the sums of Binance's minutes, closing at 23:59:59.999.
    assert main(["bars", "--symbol", "BTCUSDT", "--format", "binance", "--interval", "1d"]) == 0
    (day,) = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert day[0] == rows[0][0] and day[6] == rows[-1][6] == "1577923199999"
    assert Decimal(day[5]) == sum(Decimal(r[5]) for r in rows)
    assert int(day[8]) == sum(int(r[8]) for r in rows)


def test_parquet_has_decimal128_columns_equal_to_the_csv(
    stored: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bars.parquet"
    assert main(["bars", "--symbol", "shibusdt", "--format", "parquet", "--output", str(path)]) == 0
    table = pq.read_table(path)
    assert table.column_names == list(CSV_HEADER)
    assert table.schema.field("open").type == pa.decimal128(38, 8)
    assert table.schema.field("quote_volume").type == pa.decimal128(38, 16)
    assert table.schema.field("open_time").type == pa.timestamp("ms", tz="UTC")
    as_json = json.loads(run(capsys, "--format", "json"))
    for record, expected in zip(table.to_pylist(), as_json, strict=True):
        assert int(record["open_time"].timestamp() * 1000) == expected["open_time"]
        assert int(record["close_time"].timestamp() * 1000) == expected["close_time"]
        for name in ("open", "volume", "quote_volume", "taker_buy_quote_volume"):
            assert record[name] == Decimal(expected[name]), name
        assert record["trade_count"] == expected["trade_count"]


def test_timezone_anchors_the_day_and_shows_local_times(
    stored: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    (day,) = json.loads(run(capsys, "--format", "json", "--interval", "1d", "--timezone", "+08:00"))
    # 2024-08-09T00:00Z is 08:00 in +08:00: that local day opened at 2024-08-08T16:00Z.
    assert day["open_time"] == T0 - 8 * 3_600_000
    assert day["close_time"] == T0 + 16 * 3_600_000 - 1
    rows = list(csv.reader(io.StringIO(run(capsys, "--interval", "1d", "--timezone", "+08:00"))))
    assert rows[1][1] == "2024-08-09T00:00:00.000+08:00"
    assert rows[1][7] == "2024-08-09T23:59:59.999+08:00"
    # A negative offset is a value, not an option (argparse alone would refuse it).
    (west,) = json.loads(
        run(capsys, "--format", "json", "--interval", "1d", "--timezone", "-03:30")
    )
    assert west["open_time"] == T0 - 86_400_000 + 210 * 60_000  # 2024-08-08T00:00-03:30


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bars", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 1m)", "(default: +00:00)", "(default: csv)"):
        assert default in text


def test_binance_format_of_the_replayed_xrpeth_trades_is_binances_klines(
    broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    replay([XRPETH_AGG_TRADES], pipeline_settings(broker, empty_store, topic_prefix))
    monkeypatch.setenv("CLICKHOUSE_URL", empty_store.dsn)
    assert main(["bars", "--symbol", "XRPETH", "--format", "binance"]) == 0
    ours = capsys.readouterr().out.splitlines()
    theirs = XRPETH_KLINES.read_text().splitlines()[1:]  # open_time,open,high,low,close,volume
    assert len(ours) == len(theirs) == 2880
    # Binance's file of these minutes has its first 6 columns only: those are byte-identical.
    assert [",".join(line.split(",")[:6]) for line in ours] == theirs
    assert all(line.endswith(",0") and len(line.split(",")) == 12 for line in ours)


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
    assert rows[-1][:3] == ["SHIBUSDT", "2024-08-09T00:03:00.000Z", "0.00000003"]
    assert rows[-1][9] == "2"  # trade_count
    assert len(list(csv.reader(io.StringIO(run(capsys))))) == 4  # without it: closed bars only
    assert json.loads(run(capsys, "--format", "json", "--include-open"))[-1]["closed"] is False
