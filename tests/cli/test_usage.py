"""Usage errors are one line with exit status 2; ``--help`` shows the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.support import error_line, run_cli


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        ([], ["-v, --verbose"]),
        (["up"], ["(default: binance)", "(default: 1.0)", "(default: the SYMBOLS setting)",
                  "(default: the HEALTH_PORT setting)"]),
        (["ingest"], ["HEALTH_HOST:HEALTH_PORT"]),
        (["replay"], ["(default: from the file name)", "trade-stream CSV"]),
        (["backfill"], ["(default: MARKET, spot unless set)", "(default: aggTrades)",
                        "BINANCE_ARCHIVE_URL"]),
        (["bars"], ["(default: 1m)", "(default: csv)", "(default: the first bar)",
                    "or epoch ms", "(default: all, up to 100000)"]),
        (["audit"], ["(default: table)", "(default: all)", "(default: the first bar)",
                     "Exit status 0 when complete, 1 when not"]),
    ],
)  # fmt: skip
def test_help_of_every_command_shows_its_defaults(
    tmp_path: Path, args: list[str], shown: list[str]
) -> None:
    result = run_cli(tmp_path, *args, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines at the terminal's width
    for words in shown:
        assert words in text
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], "binance-metrics: error: argument COMMAND: invalid choice: 'bogus'"),
        (["bars"], "binance-metrics bars: error: the following arguments are required: --symbol"),
        (["up", "--speed", "0"], "binance-metrics up: error: argument --speed: must be a number "
         "above 0, not 0"),
        (["up", "--port", "70000"], "binance-metrics up: error: argument --port: must be a port "
         "from 1 to 65535, not 70000"),
        (["up", "--exchange", "kraken"], "binance-metrics: --exchange must be 'binance' or "
         "'replay:PATH[,PATH...]', not 'kraken'"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    assert error_line(run_cli(tmp_path, *args), 2).startswith(message)
    assert not (tmp_path / "data").exists()
