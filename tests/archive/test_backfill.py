"""``backfill`` from a local data.binance.vision through the real broker (Tansu), the dataflow
and the real store (chDB): bars equal Binance's klines, history and live bars merge exactly, and
a file that is corrupt or not trades stops it before anything is stored."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from binance_metrics.archive.backfill import BackfillError, BackfillSummary, Request, backfill
from binance_metrics.archive.checksum import ChecksumError
from binance_metrics.archive.download import Retry
from binance_metrics.archive.layout import DataKind
from binance_metrics.archive.progress import BackfillProgress
from binance_metrics.kafka.broker import EmbeddedBroker
from binance_metrics.markets import Market
from binance_metrics.recordings import RecordingError, read_recording
from binance_metrics.replay import replay
from binance_metrics.settings import Settings
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.queries import fetch_bars
from binance_metrics.testing.archive import LocalArchive
from binance_metrics.trades import TradeMessage
from tests.archive.support import (
    path_of,
    publish_xrpeth,
    trades_rows_from_capture,
    trades_rows_from_stream_csv,
    xrpeth_rows_by_day,
)
from tests.cli.test_replay import plain_stream_csv_trades
from tests.support.data import (
    BTCUSD_PERP_CM_AGG_TRADES,
    BTCUSDT_CAPTURE,
    BTCUSDT_KLINES,
    TRXUSDT_STREAM_CSV,
    XRPETH_AGG_TRADES,
    XRPETH_KLINES,
)
from tests.support.oracle import FIELDS, reference_klines
from tests.support.pipeline import pipeline_settings

OCTOBER = (date(2019, 10, 1), date(2019, 10, 31))
TWO_DAYS = (date(2019, 10, 11), date(2019, 10, 12))


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[LocalArchive]:
    with LocalArchive(tmp_path / "served") as running:
        yield running


def settings_for(
    broker: EmbeddedBroker, store: Store, prefix: str, archive: LocalArchive, data_dir: Path
) -> Settings:
    return pipeline_settings(
        broker, store, prefix, BINANCE_ARCHIVE_URL=archive.url, DATA_DIR=data_dir
    )


def run(
    settings: Settings, symbol: str, days: tuple[date, date], kind: DataKind = "aggTrades",
    *, interactive: bool = False, market: Market = "spot",
) -> BackfillSummary:  # fmt: skip
    request = Request((symbol,), days[0], days[1], market, kind)
    return backfill(
        request, settings, progress=BackfillProgress(interactive=interactive),
        retry=Retry(attempts=3, first_delay_s=0.05),
    )  # fmt: skip


def table(store: Store, symbol: str) -> dict[int, dict[str, Any]]:
    return {
        bar.open_time_ms: {name: getattr(bar, name) for name in FIELDS}
        for bar in fetch_bars(store, symbol)
    }


def assert_binance_klines(bars: dict[int, dict[str, Any]]) -> None:
    with XRPETH_KLINES.open() as f:
        klines = list(csv.DictReader(f))
    assert len(bars) == len(klines) == 2880
    for kline in klines:
        bar = bars[int(kline["open_time"])]
        for name in ("open", "high", "low", "close", "volume"):
            assert bar[name] == Decimal(kline[name]), (kline["open_time"], name)


XRPETH_TRADES = [r for r in read_recording(XRPETH_AGG_TRADES) if isinstance(r, TradeMessage)]


def test_two_days_equal_binances_klines_and_a_rerun_or_a_replay_changes_nothing(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive,
) -> None:  # fmt: skip
    publish_xrpeth(archive, monthly=False, daily=True)
    settings = settings_for(broker, empty_store, topic_prefix, archive, tmp_path / "data")
    summary = run(settings, "XRPETH", TWO_DAYS)
    assert (summary.downloaded, summary.cached, summary.missing) == (2, 0, ())
    assert (summary.replayed.trades, summary.replayed.bad_records) == (11_884, 0)
    bars = table(empty_store, "XRPETH")
    assert_binance_klines(bars)
    assert bars == {start: k for (_, start), k in reference_klines(XRPETH_TRADES).items()}

    archive.requests.clear()
    again = run(settings, "XRPETH", TWO_DAYS)
    assert (again.downloaded, again.cached, archive.requests) == (0, 2, [])
    assert table(empty_store, "XRPETH") == bars

    replay([XRPETH_AGG_TRADES], settings)  # the same days, from the recording itself
    assert table(empty_store, "XRPETH") == bars


def test_a_whole_month_is_the_monthly_file(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive,
) -> None:  # fmt: skip
    publish_xrpeth(archive, monthly=True, daily=True)
    summary = run(settings_for(broker, empty_store, topic_prefix, archive, tmp_path), "XRPETH",
                  OCTOBER)  # fmt: skip
    assert [r.path for r in archive.downloads()] == [path_of("XRPETH", "2019-10")]
    assert summary.downloaded == 1 and summary.replayed.trades == 11_884
    assert_binance_klines(table(empty_store, "XRPETH"))


def test_a_missing_monthly_file_is_replaced_by_its_days(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive,
) -> None:  # fmt: skip
    publish_xrpeth(archive, monthly=True, daily=True)
    month = path_of("XRPETH", "2019-10")
    archive.missing |= {month, f"{month}.CHECKSUM"}  # not published yet
    settings = settings_for(broker, empty_store, topic_prefix, archive, tmp_path)
    summary = run(settings, "XRPETH", OCTOBER)
    assert sorted(r.path for r in archive.downloads()) == [
        path_of("XRPETH", "2019-10-11"), path_of("XRPETH", "2019-10-12"),
    ]  # fmt: skip
    assert summary.downloaded == 2 and len(summary.missing) == 29  # days without a file
    assert summary.lines()[2] == (
        "missing      29 daily files (not published): XRPETH-aggTrades-2019-10-01.zip, "
        "XRPETH-aggTrades-2019-10-02.zip, XRPETH-aggTrades-2019-10-03.zip, ..."
    )
    assert_binance_klines(table(empty_store, "XRPETH"))

    archive.requests.clear()  # the monthly file is asked for again (it may be out by now)
    run(settings, "XRPETH", OCTOBER)
    assert archive.downloads() == [] and archive.downloads(".CHECKSUM") == []


def test_an_interrupted_download_resumes_and_the_bars_are_exact(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive,
) -> None:  # fmt: skip
    publish_xrpeth(archive, monthly=True, daily=False)
    month = path_of("XRPETH", "2019-10")
    archive.cut_once[month] = 60_000
    run(settings_for(broker, empty_store, topic_prefix, archive, tmp_path), "XRPETH", OCTOBER)
    assert [r.range for r in archive.downloads()] == [None, "bytes=60000-"]
    assert_binance_klines(table(empty_store, "XRPETH"))


def test_a_wrong_checksum_stops_the_backfill_and_nothing_is_stored(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive,
) -> None:  # fmt: skip
    publish_xrpeth(archive, monthly=False, daily=True)
    day = path_of("XRPETH", "2019-10-12")
    rows = xrpeth_rows_by_day()["2019-10-12"]
    archive.publish(day, "\n".join(rows) + "\n", checksum_of=b"what was published before")
    settings = settings_for(broker, empty_store, topic_prefix, archive, tmp_path)
    with pytest.raises(ChecksumError, match=r"^XRPETH-aggTrades-2019-10-12.zip: SHA-256 "):
        run(settings, "XRPETH", TWO_DAYS)
    assert table(empty_store, "XRPETH") == {}
    assert not (tmp_path / "archive" / day).exists()
    assert not (tmp_path / "archive" / (day + ".part")).exists()


def truncated_zip(archive: LocalArchive, path: str) -> None:
    """A zip cut short, published with the checksum of what was cut (a broken upload)."""
    archive.publish(path, "\n".join(xrpeth_rows_by_day()["2019-10-11"]) + "\n")
    served = archive.root / path
    cut = served.read_bytes()[: served.stat().st_size // 2]
    archive.publish(path, "", checksum_of=cut)
    served.write_bytes(cut)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("truncated", "not a zip archive, or a truncated one"),
        ("klines", "this is a klines file (12 columns), not trades or aggTrades"),
        ("garbage", "not UTF-8 text (a binary file, or another encoding)"),
        ("trades", "it holds a data.binance.vision trades CSV"),
    ],
)
def test_a_verified_file_that_is_not_the_trades_asked_for_stops_the_backfill(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive, content: str, problem: str,
) -> None:  # fmt: skip
    publish_xrpeth(archive, monthly=False, daily=True)
    day = path_of("XRPETH", "2019-10-11")
    if content == "truncated":
        truncated_zip(archive, day)
    elif content == "klines":
        archive.publish(day, BTCUSDT_KLINES.read_text())
    elif content == "garbage":
        archive.publish(day, bytes(range(256)).decode("latin-1") * 8)
    else:
        archive.publish(day, "\n".join(trades_rows_from_stream_csv(TRXUSDT_STREAM_CSV)[:5]))
    settings = settings_for(broker, empty_store, topic_prefix, archive, tmp_path)
    with pytest.raises(RecordingError) as raised:
        run(settings, "XRPETH", TWO_DAYS)
    assert str(raised.value).startswith(f"{tmp_path / 'archive' / day}: {problem}")
    assert str(raised.value).endswith(
        "; backfill --data aggTrades reads a data.binance.vision aggTrades CSV in each zip"
    )
    assert table(empty_store, "XRPETH") == {}


def test_a_symbol_without_any_archive_is_an_error(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive,
) -> None:  # fmt: skip
    settings = settings_for(broker, empty_store, topic_prefix, archive, tmp_path)
    with pytest.raises(BackfillError) as raised:
        run(settings, "XRPETHH", TWO_DAYS)
    assert str(raised.value).startswith(
        f"no archive of XRPETHH (spot aggTrades) from 2019-10-11 to 2019-10-12 at {archive.url}: "
        f"every file was missing (404), the first {archive.url}/"
        "data/spot/daily/aggTrades/XRPETHH/XRPETHH-aggTrades-2019-10-11.zip"
    )


def test_bad_rows_among_good_ones_are_dead_letters_and_the_summary_shows_the_first(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive,
) -> None:  # fmt: skip
    rows = xrpeth_rows_by_day()["2019-10-11"]
    bad = ["1,0.1,-1.0,5,5,1570752011620,True,True", "2,abc,1.0,6,6,1570752011620,True,True"]
    archive.publish(path_of("XRPETH", "2019-10-11"), "\n".join([*rows[:5], *bad, *rows[5:]]))
    settings = settings_for(broker, empty_store, topic_prefix, archive, tmp_path)
    summary = run(settings, "XRPETH", (TWO_DAYS[0], TWO_DAYS[0]))
    assert summary.replayed.bad_records == 2
    name = "XRPETH-aggTrades-2019-10-11.zip"
    assert (
        f"dead-letters 2 (first: {name}:6: not a decimal number: '-1.0'; {name}:7: not a decimal "
        "number: 'abc')"
    ) in summary.lines()
    day_trades = [t for t in XRPETH_TRADES if t.trade_time_ms < 1570838400000]
    assert table(empty_store, "XRPETH") == {
        start: k for (_, start), k in reference_klines(day_trades).items()
    }


def test_a_microsecond_archive_gives_the_same_bars_as_its_trades(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive,
) -> None:  # fmt: skip
    rows = trades_rows_from_stream_csv(TRXUSDT_STREAM_CSV)
    assert int(rows[0].split(",")[4]) > 10**15  # µs, as spot archives are since 2025
    archive.publish(path_of("TRXUSDT", "2025-03-04", "trades"), "\n".join(rows) + "\n")
    settings = settings_for(broker, empty_store, topic_prefix, archive, tmp_path)
    # With the progress bars (rich, here drawn to a file): the display changes nothing.
    summary = run(
        settings, "TRXUSDT", (date(2025, 3, 4), date(2025, 3, 4)), "trades", interactive=True
    )
    assert summary.replayed.trades == 10_000
    expected = reference_klines(plain_stream_csv_trades(TRXUSDT_STREAM_CSV))
    assert table(empty_store, "TRXUSDT") == {start: k for (_, start), k in expected.items()}
    assert len(expected) == 48


def test_a_coin_m_futures_archive_with_its_header(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive,
) -> None:  # fmt: skip
    path = path_of("BTCUSD_PERP", "2026-05-08", market="cm")
    assert path.startswith("data/futures/cm/daily/aggTrades/BTCUSD_PERP/")
    archive.publish(path, BTCUSD_PERP_CM_AGG_TRADES.read_text())
    settings = settings_for(broker, empty_store, topic_prefix, archive, tmp_path)
    summary = run(settings, "BTCUSD_PERP", (date(2026, 5, 8), date(2026, 5, 8)), market="cm")
    trades = [
        r for r in read_recording(BTCUSD_PERP_CM_AGG_TRADES, "BTCUSD_PERP")
        if isinstance(r, TradeMessage)
    ]  # fmt: skip
    assert summary.replayed.messages == len(trades) == 3000
    expected = {start: k for (_, start), k in reference_klines(trades).items()}
    assert table(empty_store, "BTCUSD_PERP") == expected and len(expected) == 53


@pytest.mark.parametrize("order", ["history first", "live first"])
def test_history_and_live_trades_over_its_boundary_minute_merge_exactly(
    tmp_path: Path, broker: EmbeddedBroker, empty_store: Store, topic_prefix: str,
    archive: LocalArchive, order: str,
) -> None:  # fmt: skip
    """The day 2024-08-08 from the archive, and a live capture that began during its last
    minute (23:59:30) and runs into 2024-08-09, in either order: every minute, 23:59 included,
    is the reference of all its trades, history and live together."""
    midnight = 1_723_161_600_000  # 2024-08-09 00:00 UTC
    rows = trades_rows_from_capture(BTCUSDT_CAPTURE)
    day = [row for time_ms, row in rows if time_ms < midnight]
    archive.publish(path_of("BTCUSDT", "2024-08-08", "trades"), "\n".join(day) + "\n")
    live_lines = BTCUSDT_CAPTURE.read_text().splitlines(keepends=True)
    first_live = next(i for i, (time_ms, _) in enumerate(rows) if time_ms >= midnight - 30_000)
    live = tmp_path / "BTCUSDT-live.jsonl"
    live.write_text("".join(live_lines[first_live:]))

    settings = settings_for(broker, empty_store, topic_prefix, archive, tmp_path)
    if order == "live first":
        replay([live], settings)
    run(settings, "BTCUSDT", (date(2024, 8, 8), date(2024, 8, 8)), "trades")
    if order == "history first":
        replay([live], settings)

    trades = [r for r in read_recording(BTCUSDT_CAPTURE) if isinstance(r, TradeMessage)]
    expected = {start: k for (_, start), k in reference_klines(trades).items()}
    stored = table(empty_store, "BTCUSDT")
    assert stored[midnight - 60_000] == expected[midnight - 60_000]  # the boundary minute
    assert stored == expected
