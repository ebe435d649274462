"""Downloads from a local data.binance.vision (real HTTP on 127.0.0.1): resumed with ``Range``
after a cut, verified against ``.CHECKSUM``, cached, and a 404 told apart from a failure."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from binance_metrics.archive.checksum import ChecksumError, parse_checksum
from binance_metrics.archive.download import (
    ArchiveCache,
    Downloader,
    DownloadError,
    Retry,
)
from binance_metrics.archive.layout import plan
from binance_metrics.archive.progress import BackfillProgress
from binance_metrics.testing.archive import LocalArchive
from tests.archive.support import publish_xrpeth

FAST = Retry(attempts=3, first_delay_s=0.05, max_delay_s=0.2)
(DAY,) = plan("XRPETH", "spot", "aggTrades", date(2019, 10, 11), date(2019, 10, 11))


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[LocalArchive]:
    with LocalArchive(tmp_path / "served") as running:
        publish_xrpeth(running, monthly=False, daily=True)
        yield running


def downloader(archive: LocalArchive, cache: Path, retry: Retry = FAST) -> Downloader:
    transfer = BackfillProgress(interactive=False).transfer
    return Downloader(archive.url, ArchiveCache(cache), httpx.Client(timeout=10), transfer, retry)


def test_a_download_is_verified_and_cached_and_a_rerun_downloads_nothing(
    archive: LocalArchive, tmp_path: Path
) -> None:
    fetched = downloader(archive, tmp_path / "cache").fetch(DAY)
    assert fetched is not None and not fetched.cached
    served = archive.root / DAY.path
    assert fetched.path == tmp_path / "cache" / DAY.path
    assert fetched.path.read_bytes() == served.read_bytes()
    assert fetched.downloaded_bytes == served.stat().st_size
    assert (tmp_path / "cache" / DAY.checksum_path).read_text() == (
        archive.root / DAY.checksum_path
    ).read_text()

    archive.requests.clear()
    again = downloader(archive, tmp_path / "cache").fetch(DAY)
    assert again is not None and again.cached and again.downloaded_bytes == 0
    assert archive.requests == []


def test_an_interrupted_download_resumes_where_it_was_cut(
    archive: LocalArchive, tmp_path: Path
) -> None:
    size = (archive.root / DAY.path).stat().st_size
    archive.cut_once[DAY.path] = size // 3
    fetched = downloader(archive, tmp_path / "cache").fetch(DAY)
    assert fetched is not None
    assert fetched.path.read_bytes() == (archive.root / DAY.path).read_bytes()
    assert [(r.range, r.status) for r in archive.downloads()] == [
        (None, 200),
        (f"bytes={size // 3}-", 206),
    ]
    assert fetched.downloaded_bytes == size  # a third, then the other two thirds
    assert not fetched.path.with_name(fetched.path.name + ".part").exists()


def test_a_part_left_by_an_earlier_run_is_resumed(archive: LocalArchive, tmp_path: Path) -> None:
    body = (archive.root / DAY.path).read_bytes()
    part = tmp_path / "cache" / (DAY.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:1000])
    fetched = downloader(archive, tmp_path / "cache").fetch(DAY)
    assert fetched is not None and fetched.path.read_bytes() == body
    assert [r.range for r in archive.downloads()] == ["bytes=1000-"]
    assert fetched.downloaded_bytes == len(body) - 1000


def test_a_wrong_checksum_names_the_file_and_keeps_nothing(
    archive: LocalArchive, tmp_path: Path
) -> None:
    archive.publish(DAY.path, "1,0.1,1.0,5,5,1570752011620,True,True\n", checksum_of=b"other")
    with pytest.raises(ChecksumError) as raised:
        downloader(archive, tmp_path / "cache").fetch(DAY)
    assert str(raised.value).startswith(
        "XRPETH-aggTrades-2019-10-11.zip: SHA-256 "
    ) and "does not match its .CHECKSUM" in str(raised.value)
    assert [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_a_missing_file_is_none_and_a_failing_server_an_error_naming_the_url(
    archive: LocalArchive, tmp_path: Path
) -> None:
    (month,) = plan("XRPETH", "spot", "aggTrades", date(2019, 10, 1), date(2019, 10, 31))
    assert downloader(archive, tmp_path / "cache").fetch(month) is None
    archive.missing.add(DAY.path)  # the .CHECKSUM is there, the zip is not
    assert downloader(archive, tmp_path / "cache").fetch(DAY) is None

    archive.missing.clear()
    archive.status[DAY.path] = 503
    with pytest.raises(DownloadError) as raised:
        downloader(archive, tmp_path / "cache").fetch(DAY)
    assert str(raised.value) == f"{archive.url}/{DAY.path}: failed 3 times, the last: HTTP 503"
    assert [r.status for r in archive.requests if r.path == DAY.path][-3:] == [503] * 3

    archive.status[DAY.path] = 403
    with pytest.raises(
        DownloadError, match=r"XRPETH-aggTrades-2019-10-11.zip: HTTP 403 Forbidden$"
    ):
        downloader(archive, tmp_path / "cache").fetch(DAY)


def test_a_corrupted_cached_copy_is_downloaded_again(archive: LocalArchive, tmp_path: Path) -> None:
    fetched = downloader(archive, tmp_path / "cache").fetch(DAY)
    assert fetched is not None
    fetched.path.write_bytes(b"PK\x03\x04 damaged on disk")
    again = downloader(archive, tmp_path / "cache").fetch(DAY)
    assert again is not None and again.path.read_bytes() == (archive.root / DAY.path).read_bytes()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not a checksum\n", "not a checksum file ('not a checksum')"),
        (f"{'a' * 64}  other.zip\n", "it is the checksum of other.zip, not of f.zip"),
    ],
)
def test_a_checksum_file_that_is_not_one_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ChecksumError) as raised:
        parse_checksum(text, "f.zip")
    assert str(raised.value).startswith(f"f.zip.CHECKSUM: {problem}")


def test_binances_own_checksum_lines_parse() -> None:
    # binance_datatool's copy of data.binance.vision's BTCUSDT-1m-2020-01-01.zip.CHECKSUM
    digest = "dd579c62368ded93d3f01a1904575b932279e32936e181c062763e605793c1c2"
    line = f"{digest}  BTCUSDT-1m-2020-01-01.zip\n"
    assert parse_checksum(line, "BTCUSDT-1m-2020-01-01.zip") == digest


def test_a_cache_that_cannot_be_written_is_one_error_naming_it(
    archive: LocalArchive, tmp_path: Path
) -> None:
    (tmp_path / "cache").write_text("a file, not a directory")
    with pytest.raises(DownloadError) as raised:
        downloader(archive, tmp_path / "cache").fetch(DAY)
    assert str(raised.value).startswith(
        f"cannot keep {DAY.name} in {tmp_path / 'cache'}: Not a directory; DATA_DIR must be"
    )
