"""The estimate of an archive's trades behind the replay's time remaining."""

from __future__ import annotations

import zipfile
from pathlib import Path

from binance_metrics.archive.estimate import estimated_trades
from tests.archive.support import trades_rows_from_stream_csv
from tests.support.data import TRXUSDT_STREAM_CSV, XRPETH_AGG_TRADES


def zipped(path: Path, text: str) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("f.csv", text)
    return path


def test_a_file_within_the_sample_is_counted_exactly(tmp_path: Path) -> None:
    rows = XRPETH_AGG_TRADES.read_text().splitlines()[:1000]
    raw = sum(int(row.split(",")[4]) - int(row.split(",")[3]) + 1 for row in rows)
    header = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    path = zipped(tmp_path / "a.zip", "\n".join([header, *rows]) + "\n")
    assert estimated_trades(path, "aggTrades") == raw > 1000
    rows = trades_rows_from_stream_csv(TRXUSDT_STREAM_CSV)[:1000]
    assert estimated_trades(zipped(tmp_path / "t.zip", "\n".join(rows)), "trades") == 1000


def test_a_larger_file_is_estimated_from_its_first_rows(tmp_path: Path) -> None:
    path = zipped(tmp_path / "a.zip", XRPETH_AGG_TRADES.read_text())
    assert abs(estimated_trades(path, "aggTrades") - 11_884) < 11_884 * 0.1


def test_a_file_that_is_no_zip_is_no_estimate(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_text("no zip")
    assert estimated_trades(path, "trades") == 0
