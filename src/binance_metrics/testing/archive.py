"""A local data.binance.vision: archives served from a directory on 127.0.0.1, with faults.

It serves ``GET /<path>`` for every file under ``root`` (in the archive's layout, e.g.
``data/spot/daily/aggTrades/XRPETH/XRPETH-aggTrades-2019-10-11.zip`` and its ``.CHECKSUM``),
with single ``Range: bytes=N-`` requests answered 206 (416 past the end), as the real one does.
Faults, by path: ``missing`` paths answer 404 even if the file exists, ``status`` paths that
status (503, 403, ...) every time; a path in ``cut_once``
sends its full ``Content-Length`` but closes the connection after that many bytes, once.
Every request is in :attr:`LocalArchive.requests`. :meth:`LocalArchive.publish` writes an
archive as Binance publishes it: a zip of one CSV, and a ``.CHECKSUM`` (or a wrong one).
Use it as a context manager; it runs in a background thread.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Final

_RANGE: Final = re.compile(r"^bytes=(\d+)-$")
_ZIP_TIME: Final = (2020, 1, 1, 0, 0, 0)  # fixed, so the same CSV gives the same zip


@dataclass(frozen=True)
class Served:
    """One request: its path (without the leading ``/``), its ``Range`` header, the status."""

    path: str
    range: str | None
    status: int


@dataclass
class LocalArchive:
    root: Path
    missing: set[str] = field(default_factory=set)
    status: dict[str, int] = field(default_factory=dict)
    cut_once: dict[str, int] = field(default_factory=dict)
    requests: list[Served] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None, "not started: use LocalArchive as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def publish(self, path: str, csv_text: str, *, checksum_of: bytes | None = None) -> Path:
        """Write ``path`` (a ``.zip`` in the layout) holding one CSV, named as Binance names
        it, and its ``.CHECKSUM``; ``checksum_of``: the checksum of those bytes instead (a
        wrong one)."""
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        member = zipfile.ZipInfo(Path(path).with_suffix(".csv").name, date_time=_ZIP_TIME)
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            member.compress_type = zipfile.ZIP_DEFLATED  # a ZipInfo does not take the archive's
            archive.writestr(member, csv_text)
        digest = hashlib.sha256(
            target.read_bytes() if checksum_of is None else checksum_of
        ).hexdigest()
        target.with_name(target.name + ".CHECKSUM").write_text(f"{digest}  {target.name}\n")
        return target

    def downloads(self, suffix: str = ".zip") -> list[Served]:
        """The requests for files ending in ``suffix`` that sent a body (200 or 206)."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith(suffix) and r.status in (200, 206)]

    def __enter__(self) -> LocalArchive:
        archive = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                archive._serve(self)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the tests read ``requests``

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0].lstrip("/")
        asked = handler.headers.get("Range")
        file = (self.root / path).resolve()
        inside = file.is_relative_to(self.root.resolve())
        if path in self.missing or not inside or not file.is_file():
            self._answer(handler, path, asked, 404, b"Not Found")
            return
        if path in self.status:
            self._answer(handler, path, asked, self.status[path], b"fault")
            return
        body = file.read_bytes()
        start = 0
        if asked is not None:
            match = _RANGE.match(asked)
            if match is None:
                self._answer(handler, path, asked, 400, b"only bytes=N- ranges")
                return
            start = int(match.group(1))
            if start >= len(body):
                self._answer(
                    handler, path, asked, 416, b"", {"Content-Range": f"bytes */{len(body)}"}
                )
                return
        with self._lock:
            cut = self.cut_once.pop(path, None)
        status = 206 if asked is not None else 200
        headers = {"Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        self._answer(handler, path, asked, status, body[start:], headers, cut)

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        path: str,
        asked: str | None,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        cut: int | None = None,
    ) -> None:
        with self._lock:
            self.requests.append(Served(path, asked, status))
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if cut is None:
            handler.wfile.write(body)
            return
        handler.wfile.write(body[:cut])
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)
