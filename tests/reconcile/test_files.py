"""Kline files: data.binance.vision's 12 columns with or without header, zipped or not, in ms or
µs; read the same as the same rows served over REST."""

from __future__ import annotations

import asyncio
import zipfile
from decimal import Decimal
from pathlib import Path

import pytest

from binance_metrics.reconcile.compare import FIELDS
from binance_metrics.reconcile.files import KlinesFileError, read_klines, symbol_and_interval
from binance_metrics.reconcile.rest import KlinesError, RestKlines
from binance_metrics.settings import Settings
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.klines import read_kline_rows
from tests.support.data import BTCUSDT_KLINES

HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
          "taker_buy_volume,taker_buy_quote_volume,ignore")  # fmt: skip


def test_the_official_file_is_read_with_every_field() -> None:
    klines = read_klines([BTCUSDT_KLINES])
    assert len(klines) == 1440
    first = klines[0]
    assert first.open_time_ms == 1577836800000
    assert dict(first.values) == {
        "open": Decimal("7195.24"), "high": Decimal("7196.25"), "low": Decimal("7183.14"),
        "close": Decimal("7186.68"), "volume": Decimal("51.642812"),
        "quote_volume": Decimal("371233.51835535"), "trade_count": 493,
        "taker_buy_volume": Decimal("19.59823"),
        "taker_buy_quote_volume": Decimal("140888.41428273"),
    }  # fmt: skip
    assert symbol_and_interval(BTCUSDT_KLINES) == ("BTCUSDT", "1m")


def test_header_zip_and_microseconds_read_the_same(tmp_path: Path) -> None:
    rows = BTCUSDT_KLINES.read_text().splitlines()
    micro = [",".join([f"{c}000" if i in (0, 6) else c for i, c in enumerate(row.split(","))])
             for row in rows]  # fmt: skip
    csv_path = tmp_path / "BTCUSDT-1m-2020-01-01.csv"
    csv_path.write_text("\n".join([HEADER, *micro]) + "\n")
    zip_path = tmp_path / "BTCUSDT-1m-2020-01-01.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.write(csv_path, csv_path.name)
    expected = read_klines([BTCUSDT_KLINES])
    assert read_klines([csv_path]) == read_klines([zip_path]) == expected


def test_rest_serves_what_the_file_holds() -> None:
    """The same rows, once served by the local exchange as Binance serves them (page by page)
    and once read from the file, are the same klines."""
    settings = Settings(INGEST={"backfill_retry_base_s": 0.01})
    rows = read_kline_rows(BTCUSDT_KLINES)
    with LocalExchange([], klines={"BTCUSDT": rows}) as exchange:
        client = RestKlines.from_settings(settings, base_url=exchange.rest_url)

        async def fetch() -> list[object]:
            try:
                got = await client.klines("btcusdt", "1m", 1577836800000 + 60_000, 1577923200000)
                with pytest.raises(KlinesError, match="HTTP 400 -1121 Invalid symbol"):
                    await client.klines("NOSUCH", "1m", 1577836800000, 1577923200000)
                return list(got)
            finally:
                await client.aclose()

        got = asyncio.run(fetch())
    assert got == read_klines([BTCUSDT_KLINES])[1:]
    assert [call.status for call in exchange.log.klines_calls] == [200, 200, 400]
    assert set(next(iter(read_klines([BTCUSDT_KLINES]))).values) == set(FIELDS)


def test_an_export_with_named_columns(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("open_time,open,high,low,close,volume,trade_count\n"
                    "2024-08-09T00:00:00Z,1.5,2,1,1.50000000,3,7\n")  # fmt: skip
    (kline,) = read_klines([path])
    assert kline.open_time_ms == 1723161600000
    assert dict(kline.values) == {
        "open": Decimal("1.5"), "high": 2, "low": 1, "close": Decimal("1.5"), "volume": 3,
        "trade_count": 7,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "no klines in it"),
        ("time,price\n1,2\n", "no open_time column"),
        ("1577836800000,1,2\n", "rows of 3 columns"),
        ("1577836800000,1,x,1,1,1\n", ":1: high is not a number: 'x'"),
        ("1577836800000,1,NaN,1,1,1\n", ":1: high is not a number: 'NaN'"),
    ],
)
def test_bad_files_are_named_in_one_line(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "k.csv"
    path.write_text(content)
    with pytest.raises(KlinesFileError, match=words) as error:
        read_klines([path])
    assert str(path) in str(error.value) and "\n" not in str(error.value)
