"""Archives downloaded into a cache, resumed after an interruption, retried, verified.

A file is fetched to ``<cache>/<path>.part``; after an interruption (a cut connection, a
timeout, a 5xx) the next attempt asks for the rest with an HTTP ``Range`` request and appends
it, with capped exponential backoff between attempts (``ingest/backoff.py``'s). Once complete,
the ``.part`` file's SHA-256 must equal the archive's ``.CHECKSUM``: only then does it become
``<cache>/<path>``, next to its ``.CHECKSUM``. A mismatch deletes the ``.part`` file and raises
:class:`~binance_metrics.archive.checksum.ChecksumError`. A file in the cache is checked against
its ``.CHECKSUM`` again when used and not downloaded a second time.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, TypeVar

import httpx

from binance_metrics.archive.checksum import ChecksumError, parse_checksum, verify
from binance_metrics.archive.layout import ArchiveFile
from binance_metrics.errors import BinanceMetricsError
from binance_metrics.ingest.backoff import Backoff

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_RETRY_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE: Final = re.compile(r"^bytes (\d+)-\d+/(\d+|\*)$")
_UNSATISFIED_RANGE: Final = re.compile(r"^bytes \*/(\d+)$")


class DownloadError(BinanceMetricsError):
    """A file that could not be downloaded (after the retries); the message names the URL."""


class _Retryable(Exception):
    """An attempt that failed in a way worth another try."""


class Transfer(Protocol):
    """Progress of one file's download."""

    def size(self, total: int | None, done: int) -> None:
        """The file's size (None: unknown) and the bytes already in the ``.part`` file."""

    def advance(self, count: int) -> None:
        """``count`` more bytes received."""

    def finish(self) -> None:
        """The file is complete."""


@dataclass(frozen=True)
class Retry:
    """How often and how patiently a failed download is tried again."""

    attempts: int = 8
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0


@dataclass(frozen=True)
class Fetched:
    path: Path  # the verified archive in the cache
    downloaded_bytes: int  # received over the network now
    cached: bool  # it was in the cache already: nothing downloaded


class ArchiveCache:
    """The downloaded archives, ``<root>/<path in the archive's layout>`` (``root`` is
    ``DATA_DIR/archive``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def local(self, file: ArchiveFile) -> Path:
        return self.root / file.path

    def holds(self, file: ArchiveFile) -> bool:
        local = self.local(file)
        return local.is_file() and _checksum_file(local).is_file()


class Downloader:
    """Fetches archives from ``base_url`` into ``cache``."""

    def __init__(
        self,
        base_url: str,
        cache: ArchiveCache,
        client: httpx.Client,
        transfer: Callable[[ArchiveFile], Transfer],
        retry: Retry | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache = cache
        self.client = client
        self.transfer = transfer
        self.retry = retry or Retry()

    def url(self, file: ArchiveFile) -> str:
        return f"{self.base_url}/{file.path}"

    def fetch(self, file: ArchiveFile) -> Fetched | None:
        """The verified archive in the cache, downloaded if it is not there yet; None if the
        archive has no such file (404)."""
        local = self.cache.local(file)
        try:
            return self._fetch(file, local)
        except OSError as exc:  # the cache's disk: full, read-only, not a directory...
            raise DownloadError(
                f"cannot keep {file.name} in {self.cache.root}: {exc.strerror or exc}; DATA_DIR "
                "must be a writable directory with room for the archives"
            ) from None

    def _fetch(self, file: ArchiveFile, local: Path) -> Fetched | None:
        if self.cache.holds(file):
            expected = parse_checksum(_checksum_file(local).read_text(), file.name)
            try:
                verify(local, expected, file.name)
                return Fetched(local, 0, cached=True)
            except ChecksumError:
                log.warning("%s: the cached copy does not match its .CHECKSUM; downloading it "
                            "again", local)  # fmt: skip
                local.unlink()
        checksum_text = self._get_text(f"{self.url(file)}.CHECKSUM")
        if checksum_text is None:
            return None
        expected = parse_checksum(checksum_text, file.name)
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(local.name + ".part")
        received = self._download(file, part)
        if received is None:
            return None
        try:
            verify(part, expected, file.name)
        except ChecksumError:
            part.unlink()
            raise
        _write_atomically(_checksum_file(local), checksum_text)
        os.replace(part, local)
        return Fetched(local, received, cached=False)

    # HTTP ---------------------------------------------------------------------------------

    def _attempts(self, url: str, attempt: Callable[[], _T]) -> _T:
        backoff = Backoff(self.retry.first_delay_s, self.retry.max_delay_s)
        for number in range(1, self.retry.attempts + 1):
            try:
                return attempt()
            except (_Retryable, httpx.TransportError) as exc:
                if number == self.retry.attempts:
                    raise DownloadError(
                        f"{url}: failed {number} times, the last: {_describe(exc)}"
                    ) from None
                delay = backoff.next_delay()
                log.warning("%s: %s; trying again in %.1f s", url, _describe(exc), delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _get_text(self, url: str) -> str | None:
        def attempt() -> str | None:
            response = self.client.get(url)
            if response.status_code == 404:
                return None
            _raise_for(response, url)
            return response.text

        return self._attempts(url, attempt)

    def _download(self, file: ArchiveFile, part: Path) -> int | None:
        """Download ``file`` into ``part``, resuming what is there; the bytes received, or None
        for a 404."""
        url = self.url(file)
        received = 0
        transfer: Transfer | None = None

        def attempt() -> bool:
            nonlocal received, transfer
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            with self.client.stream("GET", url, headers=headers) as response:
                if response.status_code == 404:
                    return False
                if response.status_code == 416:  # nothing after ``have``: complete, or wrong
                    match = _UNSATISFIED_RANGE.match(response.headers.get("content-range", ""))
                    if match and int(match.group(1)) == have:
                        return True
                    part.unlink()
                    raise _Retryable(f"HTTP 416 for a resume at byte {have}; starting over")
                _raise_for(response, url)
                if response.status_code == 206:
                    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                    if match is None or int(match.group(1)) != have:
                        part.unlink()
                        raise _Retryable("the server resumed at another byte; starting over")
                else:
                    have = 0  # 200: the server sent the whole file
                length = response.headers.get("content-length")
                transfer = transfer or self.transfer(file)
                transfer.size(have + int(length) if length else None, have)
                with part.open("ab" if have else "wb") as out:
                    for chunk in response.iter_bytes():  # as received: a cut loses nothing
                        out.write(chunk)
                        received += len(chunk)
                        transfer.advance(len(chunk))
            return True

        found = self._attempts(url, attempt)
        if not found:
            return None
        if transfer is not None:
            transfer.finish()
        return received


def _raise_for(response: httpx.Response, url: str) -> None:
    if response.status_code in _RETRY_STATUS:
        raise _Retryable(f"HTTP {response.status_code}")
    if not response.is_success:
        raise DownloadError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _checksum_file(local: Path) -> Path:
    return local.with_name(local.name + ".CHECKSUM")


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
