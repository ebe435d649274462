"""``binance-metrics replay`` as a user runs it: the shipped recordings, and files it must refuse
with one line before anything starts."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from binance_metrics.export import plain as _plain
from binance_metrics.trades import TradeMessage
from tests.cli.support import CLI, cli_env, error_line, run_cli
from tests.pipeline.support import wait_for
from tests.support.data import BTCUSDT_KLINES, DATA, TRXUSDT_STREAM_CSV, XRPETH_AGG_TRADES
from tests.support.oracle import FIELDS, reference_klines

READS = "replay reads data.binance.vision trades or aggTrades CSV"


def plain_stream_csv_trades(path: Path) -> list[TradeMessage]:
    """The trade-stream CSV read by its header, plainly: TransactionTime in microseconds."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        TradeMessage(
            event_type="trade",
            event_time_ms=int(row["EventTime"]) // 1000,
            symbol=row["Symbol"],
            trade_id=int(row["TradeId"]),
            price=row["Price"],
            quantity=row["Quantity"],
            trade_time_ms=int(row["TransactionTime"]) // 1000,
            buyer_is_maker=row["IsBuyerMarketMaker"] == "1",
        )
        for row in rows
    ]


def test_the_shipped_trade_stream_csv_replays_into_exact_bars(tmp_path: Path) -> None:
    replayed = run_cli(tmp_path, "replay", str(TRXUSDT_STREAM_CSV))
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    summary = dict(line.rsplit(maxsplit=1) for line in replayed.stdout.splitlines())
    assert (summary["messages"], summary["trades"], summary["dead-letters"]) == ("10000",) * 2 + (
        "0",
    )

    bars = run_cli(tmp_path, "bars", "--symbol", "TRXUSDT", "--format", "json")
    assert bars.returncode == 0, bars.stderr[-3000:]
    stored = json.loads(bars.stdout)
    expected = sorted(reference_klines(plain_stream_csv_trades(TRXUSDT_STREAM_CSV)).items())
    assert len(stored) == len(expected) == 48
    for bar, ((_, start), fields) in zip(stored, expected, strict=True):
        assert bar["open_time"] == start
        assert {name: bar[name] for name in FIELDS} == {
            name: value if name == "trade_count" else _plain(value)
            for name, value in fields.items()
        }


def write_not_trades(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    if name == "garbage.csv":
        path.write_bytes(bytes(range(256)) * 8)
    elif name == "junk.zip":
        path.write_text("no zip archive\n")
    elif name == "XRPETH-aggTrades-2019-10-11.zip":  # a download cut half-way
        whole = zip_of(tmp_path / "whole.zip", XRPETH_AGG_TRADES).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif name == "XRPETH-aggTrades-2019-10.zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.write(XRPETH_AGG_TRADES, "XRPETH-aggTrades-2019-10-11.csv")
            zf.write(XRPETH_AGG_TRADES, "XRPETH-aggTrades-2019-10-12.csv")
    else:
        path.write_bytes((DATA / name).read_bytes())
    return path


def zip_of(path: Path, member: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(member, member.name)
    return path


def test_a_zip_damaged_inside_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / XRPETH_AGG_TRADES.with_suffix(".zip").name
    damaged = bytearray(zip_of(path, XRPETH_AGG_TRADES).read_bytes())
    for at in range(len(damaged) // 2, len(damaged) // 2 + 64):  # the central directory intact
        damaged[at] ^= 0x55
    path.write_bytes(bytes(damaged))
    # Found only when the reading reaches the damage: what was read before may be stored.
    line = error_line(run_cli(tmp_path, "replay", path.name), 1, alone=False)
    assert line.startswith(f"binance-metrics: error: {path.name}: cannot be read to its end (")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        (BTCUSDT_KLINES.name, "this is a klines file (12 columns), not trades or aggTrades"),
        ("XRPETH-1m-2019-10-11_2019-10-12.ohlcv.csv", "this is a klines file (open_time,open,"),
        ("garbage.csv", "not UTF-8 text (a binary file, or another encoding)"),
        ("junk.zip", "not a zip archive, or a truncated one (File is not a zip file)"),
        ("XRPETH-aggTrades-2019-10-11.zip", "not a zip archive, or a truncated one"),
        ("XRPETH-aggTrades-2019-10.zip", "a zip of 2 files"),
    ],
)
def test_a_file_that_is_not_trades_is_one_line_and_nothing_starts(
    tmp_path: Path, name: str, problem: str
) -> None:
    good = tmp_path / XRPETH_AGG_TRADES.name
    good.write_bytes(XRPETH_AGG_TRADES.read_bytes())
    path = write_not_trades(tmp_path, name)
    line = error_line(run_cli(tmp_path, "replay", good.name, path.name), 1)
    assert line.startswith(f"binance-metrics: error: {path.name}: {problem}")
    assert READS in line
    assert not (tmp_path / "data").exists(), "neither the store nor the broker may start"


def test_a_directory_or_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "downloads").mkdir()
    line = error_line(run_cli(tmp_path, "replay", "downloads"), 2)
    assert line == (
        "binance-metrics: a directory, not a file: downloads; pass the files in it "
        "(e.g. downloads/*.zip)"
    )
    assert error_line(run_cli(tmp_path, "replay", "nope.csv"), 2) == (
        "binance-metrics: no such file: nope.csv"
    )


def test_a_file_without_a_symbol_asks_for_one(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_bytes(XRPETH_AGG_TRADES.read_bytes())
    line = error_line(run_cli(tmp_path, "replay", path.name), 2)
    assert line.startswith("binance-metrics: trades.csv: its rows carry no symbol")
    assert "pass --symbol" in line


BAD_ROWS = (
    "1,0.1,-1.0,5,5,1570752011620,True,True\n"
    "2,abc,1.0,6,6,1570752011620,True,True\n"
    "3,0.1\n"
    "4,0.1,1.0,7,7,1570752011620,maybe,True\n"
)


def test_a_replay_whose_every_row_is_rejected_fails_with_the_first_reasons(
    tmp_path: Path,
) -> None:
    name = "XRPETH-aggTrades-2019-10-11.csv"
    (tmp_path / name).write_text(BAD_ROWS)
    line = error_line(run_cli(tmp_path, "replay", name), 1, alone=False)
    assert line == (
        f"binance-metrics: error: no trade to replay: all 4 rows of {name} were rejected (they "
        f"are in the dead-letter topic binance-trades-dlq); first: {name}:1: not a decimal "
        f"number: '-1.0'; {name}:2: not a decimal number: 'abc'; {name}:3: 2 columns, "
        "expected 7 or 8"
    )


def test_bad_rows_among_good_ones_are_counted_and_the_first_shown(tmp_path: Path) -> None:
    name = "XRPETH-aggTrades-2019-10-11.csv"
    rows = XRPETH_AGG_TRADES.read_text().splitlines(keepends=True)[:30]
    (tmp_path / name).write_text("".join(rows[:10]) + BAD_ROWS + "".join(rows[10:]))
    result = run_cli(tmp_path, "replay", name)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.stdout.splitlines()
    assert "messages     30" in summary
    assert (
        f"dead-letters 4 (first: {name}:11: not a decimal number: '-1.0'; {name}:12: not a "
        f"decimal number: 'abc'; {name}:13: 2 columns, expected 7 or 8)"
    ) in summary


def test_a_store_held_by_another_process_stops_the_replay_before_it_starts(
    tmp_path: Path,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from binance_metrics.store.clickhouse import "
         f"open_store; open_store('chdb://{tmp_path / 'data' / 'clickhouse'}', 'spot'); "
         "print('open', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env=cli_env(tmp_path / "data"),
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        result = run_cli(tmp_path, "replay", str(XRPETH_AGG_TRADES))
    finally:
        holder.kill()
        holder.wait()
    line = error_line(result, 1)  # alone: before the broker, the dataflow or any progress line
    assert line.startswith(
        f"binance-metrics: error: the embedded store {tmp_path / 'data' / 'clickhouse'} is open "
        "in another process"
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_replay_ends_at_once_on_ctrl_c_or_sigterm(tmp_path: Path, signum: signal.Signals) -> None:
    log = tmp_path / "replay.log"
    # The file many times over: from the second copy on, every minute is a duplicate, half of
    # them older than the history and checked against the store: a replay of minutes.
    with log.open("w") as out:
        process = subprocess.Popen(
            [*CLI, "replay", *[str(XRPETH_AGG_TRADES)] * 50],
            env=cli_env(tmp_path / "data"), cwd=tmp_path, stdout=out, stderr=out, text=True,
        )  # fmt: skip
        try:
            wait_for(lambda: "trade messages so far" in log.read_text(), 120, "the first file")
            process.send_signal(signum)
            code = process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert code == 128 + signum, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
