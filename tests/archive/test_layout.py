"""Which archive files cover a range of days, at the paths data.binance.vision uses."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.archive.layout import daily_files, plan


def test_whole_months_are_monthly_files_and_the_rest_daily_files() -> None:
    files = plan("BTCUSDT", "spot", "aggTrades", date(2024, 1, 30), date(2024, 3, 2))
    assert [f.path for f in files] == [
        "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-30.zip",
        "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-01-31.zip",
        "data/spot/monthly/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-02.zip",
        "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-03-01.zip",
        "data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-03-02.zip",
    ]
    assert files[2].checksum_path == f"{files[2].path}.CHECKSUM"


def test_futures_live_under_data_futures() -> None:
    (um,) = plan("BTCUSDT", "um", "trades", date(2024, 8, 9), date(2024, 8, 9))
    (cm,) = plan("BTCUSD_PERP", "cm", "aggTrades", date(2024, 2, 1), date(2024, 2, 29))
    assert um.path == "data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-09.zip"
    assert cm.path == (
        "data/futures/cm/monthly/aggTrades/BTCUSD_PERP/BTCUSD_PERP-aggTrades-2024-02.zip"
    )


def test_a_missing_monthly_file_is_its_days() -> None:
    (month,) = plan("XRPETH", "spot", "aggTrades", date(2019, 10, 1), date(2019, 10, 31))
    days = daily_files(month)
    assert [d.first_day for d in days] == [date(2019, 10, d) for d in range(1, 32)]
    assert days[10].name == "XRPETH-aggTrades-2019-10-11.zip"


days = st.dates(min_value=date(2017, 1, 1), max_value=date(2030, 12, 31))


@given(days, st.integers(min_value=0, max_value=800))
def test_the_files_cover_every_day_of_the_range_once(start: date, length: int) -> None:
    end = start + timedelta(days=length)
    covered: list[date] = []
    for file in plan("BTCUSDT", "spot", "trades", start, end):
        if file.monthly:  # only whole months inside the range
            assert start <= file.first_day and file.last_day <= end
            covered.extend(day.first_day for day in daily_files(file))
        else:
            covered.append(file.first_day)
    assert covered == [start + timedelta(days=n) for n in range(length + 1)]
