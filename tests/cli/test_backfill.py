"""``binance-metrics backfill`` as a user runs it, against a local data.binance.vision: the
summary, one-line errors (exit 1 for a corrupt download, 2 for a usage error), and a download
cut half-way that the command resumes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from binance_metrics.testing.archive import LocalArchive
from tests.archive.support import path_of, publish_xrpeth, xrpeth_rows_by_day
from tests.cli.support import error_line, run_cli


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[LocalArchive]:
    with LocalArchive(tmp_path / "served") as running:
        publish_xrpeth(running, monthly=False, daily=True)
        yield running


def backfill(tmp_path: Path, archive: LocalArchive, *args: str) -> tuple[int, str, str]:
    result = run_cli(tmp_path, "backfill", *args, BINANCE_ARCHIVE_URL=archive.url)
    return result.returncode, result.stdout, result.stderr


def test_a_cut_download_resumes_and_the_summary_counts_files_and_trades(
    tmp_path: Path, archive: LocalArchive
) -> None:
    day = path_of("XRPETH", "2019-10-11")
    archive.cut_once[day] = 40_000
    code, out, err = backfill(
        tmp_path, archive, "--symbols", "xrpeth", "--start", "2019-10-11", "--end", "2019-10-12"
    )
    assert code == 0, err[-3000:]
    summary = dict(line.split(maxsplit=1) for line in out.splitlines())
    assert summary["downloaded"].startswith("2 files, ")
    assert summary["trades"] == "11884" and summary["dead-letters"] == "0"
    assert [r.range for r in archive.downloads() if r.path == day] == [None, "bytes=40000-"]
    assert "XRPETH-aggTrades-2019-10-11.zip: resuming at byte 40,000" in err  # no TTY: logs
    served = archive.root / day
    assert (tmp_path / "data" / "archive" / day).read_bytes() == served.read_bytes()

    bars = run_cli(tmp_path, "bars", "--symbol", "XRPETH", "--format", "json")
    assert len(json.loads(bars.stdout)) == 2880

    archive.requests.clear()
    code, out, err = backfill(
        tmp_path, archive, "--symbols", "XRPETH", "--start", "2019-10-11", "--end", "2019-10-12"
    )
    assert code == 0, err[-3000:]
    assert "downloaded   0 files, 0.0 MB" in out.splitlines() and archive.requests == []


def test_a_wrong_checksum_is_one_line_naming_the_file_and_nothing_is_stored(
    tmp_path: Path, archive: LocalArchive
) -> None:
    day = path_of("XRPETH", "2019-10-12")
    archive.publish(day, "\n".join(xrpeth_rows_by_day()["2019-10-12"]), checksum_of=b"other")
    code, _, err = backfill(
        tmp_path, archive, "--symbols", "XRPETH", "--start", "2019-10-11", "--end", "2019-10-12"
    )
    line = error_line_of(code, err, 1)
    assert line.startswith("binance-metrics: error: XRPETH-aggTrades-2019-10-12.zip: SHA-256 ")
    assert "does not match its .CHECKSUM" in line and "nothing of it was stored" in line
    assert not (tmp_path / "data" / "clickhouse").exists(), "the store must not be opened"


def error_line_of(code: int, err: str, expected: int) -> str:
    """The last line of stderr (the progress lines come before it), after the exit code."""
    assert code == expected, err[-3000:]
    assert "Traceback" not in err, err
    return err.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2019-10-12", "--end", "2019-10-11"],
         "binance-metrics: --start (2019-10-12) must not be after --end (2019-10-11)"),
        (["--start", "2019-13-01", "--end", "2019-10-11"],
         "binance-metrics backfill: error: argument --start: '2019-13-01' is not a day as "
         "YYYY-MM-DD (2024-08-09) (see binance-metrics backfill --help)"),
        (["--start", "2019-10-11", "--end", "2019-10-11", "--market", "margin"],
         "binance-metrics backfill: error: argument --market: invalid choice: 'margin' (choose "
         "from 'spot', 'um', 'cm') (see binance-metrics backfill --help)"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, archive: LocalArchive, args: list[str], message: str
) -> None:
    result = run_cli(tmp_path, "backfill", "--symbols", "XRPETH", *args)
    assert error_line(result, 2) == message
