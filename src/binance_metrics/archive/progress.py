"""What ``backfill`` shows while it works: progress bars on a terminal, log lines otherwise.

On a terminal (stderr a TTY), each download is a bar with its bytes, speed and time remaining,
and the replay a line with the trades folded into bars so far and the rate; log lines go above
the bars. Elsewhere (a pipe, a file, CI) there are no bars: a log line when a download starts and
one when it ends, and the replay's own progress lines.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from binance_metrics.archive.download import Transfer
from binance_metrics.archive.layout import ArchiveFile

log = logging.getLogger(__name__)

REFRESH_S = 0.5  # how often the replay's line is updated


class _TradesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        total = f" of ~{task.total:,.0f}" if task.total else ""
        rate = f"{speed:,.0f}/s" if speed else "-/s"
        return Text(f"{task.completed:,.0f}{total} trades, {rate}")


class BackfillProgress:
    """The display of one backfill: the downloads, then the replay. Use it as a context
    manager."""

    def __init__(self, interactive: bool | None = None) -> None:
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self._bars: Progress | None = None
        self._streams: list[tuple[logging.StreamHandler[Any], IO[str]]] = []

    def __enter__(self) -> BackfillProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def transfer(self, file: ArchiveFile) -> Transfer:
        if not self.interactive:
            return _LoggedTransfer(file.name)
        bars = self._bars or self._start(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeRemainingColumn(),
        )  # fmt: skip
        return _BarTransfer(bars, bars.add_task(file.name, total=None))

    @contextlib.contextmanager
    def replaying(
        self, trades: Callable[[], int], files: int, expected: int | None = None
    ) -> Iterator[None]:
        """Shows ``trades()`` (the trades folded so far), its rate and, with ``expected`` (an
        estimate of all the trades), the time remaining, while the block runs."""
        log.info("replaying %d file%s into bars", files, "" if files == 1 else "s")
        self._stop()
        if not self.interactive:
            yield
            return
        bars = self._start(
            TextColumn("{task.description}"), BarColumn(), _TradesPerSecond(),
            TimeElapsedColumn(), TimeRemainingColumn(),
        )  # fmt: skip
        task = bars.add_task("replay", total=expected or None)
        done = threading.Event()

        def refresh() -> None:
            while not done.wait(REFRESH_S):
                bars.update(task, completed=trades())

        updater = threading.Thread(target=refresh, daemon=True)
        updater.start()
        try:
            yield
        finally:
            done.set()
            updater.join()
            bars.update(task, completed=trades())
            bars.stop_task(task)
            self._stop()

    def _start(self, *columns: ProgressColumn) -> Progress:
        self._bars = Progress(*columns, console=Console(stderr=True))
        self._bars.start()
        # While the bars are drawn, sys.stderr is rich's proxy, which prints above them; the
        # logging handlers still hold the real stderr.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
                previous = handler.setStream(sys.stderr)
                if previous is not None:
                    self._streams.append((handler, previous))
        return self._bars

    def _stop(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        for handler, stream in self._streams:
            handler.setStream(stream)
        self._streams.clear()


class _BarTransfer:
    def __init__(self, bars: Progress, task: TaskID) -> None:
        self._bars, self._task = bars, task

    def size(self, total: int | None, done: int) -> None:
        self._bars.update(self._task, total=total, completed=done)

    def advance(self, count: int) -> None:
        self._bars.advance(self._task, count)

    def finish(self) -> None:
        self._bars.stop_task(self._task)


class _LoggedTransfer:
    def __init__(self, name: str) -> None:
        self._name = name
        self._started = time.monotonic()
        self._received = 0
        self._announced = False

    def size(self, total: int | None, done: int) -> None:
        if not self._announced:
            self._announced = True
            size = f"{total / 1e6:,.1f} MB" if total is not None else "size unknown"
            resumed = f", resuming at byte {done:,}" if done else ""
            log.info("downloading %s (%s%s)", self._name, size, resumed)
        elif done:
            log.info("%s: resuming at byte %s", self._name, f"{done:,}")

    def advance(self, count: int) -> None:
        self._received += count

    def finish(self) -> None:
        seconds = max(time.monotonic() - self._started, 1e-6)
        log.info(
            "%s: %s MB downloaded in %.1f s (%s MB/s)", self._name,
            f"{self._received / 1e6:,.1f}", seconds, f"{self._received / 1e6 / seconds:,.1f}",
        )  # fmt: skip
