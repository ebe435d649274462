"""The ``.CHECKSUM`` files of data.binance.vision: the SHA-256 of the archive beside them, in
``sha256sum``'s format, ``<64 hex digits>  <file name>``."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Final

from binance_metrics.errors import BinanceMetricsError

_LINE: Final = re.compile(r"^([0-9a-fA-F]{64}) [ *](\S+)\s*$")
_CHUNK: Final = 1 << 20


class ChecksumError(BinanceMetricsError):
    """An archive that does not match its ``.CHECKSUM``, or a ``.CHECKSUM`` that is not one;
    the message names the file."""


def parse_checksum(text: str, name: str) -> str:
    """The lower-case hex digest that the ``.CHECKSUM`` text gives for the file ``name``."""
    match = _LINE.match(text.strip())
    if match is None:
        shown = text.strip()[:80]
        raise ChecksumError(
            f"{name}.CHECKSUM: not a checksum file ({shown!r}); expected '<sha256 hex>  {name}'"
        )
    if match.group(2) != name:
        raise ChecksumError(
            f"{name}.CHECKSUM: it is the checksum of {match.group(2)}, not of {name}"
        )
    return match.group(1).lower()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str, name: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` (the download of ``name``) has the SHA-256
    ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumError(
            f"{name}: SHA-256 {actual} does not match its .CHECKSUM ({expected}): the download "
            "is corrupt or the archive changed; it was deleted, and nothing of it was stored"
        )
