"""A headless Chromium driven over the DevTools protocol (a websocket), without extra packages.

Just enough for the page tests: navigate, evaluate JavaScript, wait for a condition, take a
screenshot, and collect the console errors, exceptions and CSP violations of the page.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm; Chromium crashes on it
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # Chromium picks a port and writes it to DevToolsActivePort
)


def chromium_binary() -> str:
    """The Chromium to use; skips the test when there is none, except in CI (CI=true) where a
    missing browser is a failure: the page must never go untested there by accident."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    reason = "Chromium is not installed (Debian: apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so this fails instead of skipping")
    pytest.skip(reason)


class Browser:
    """One headless Chromium process and a websocket to its first page."""

    def __init__(self, binary: str, profile: Path, *, width: int = 1280, height: int = 800):
        self.profile = profile
        self.log_path = profile.parent / "chromium.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._ws: ClientConnection | None = None
        self._next_id = 0
        self.problems: list[str] = []  # console errors, exceptions, CSP violations

    def __enter__(self) -> Browser:
        try:
            self._ws = connect(self._page_url(), max_size=None, open_timeout=10)
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def _page_url(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        port_file = self.profile / "DevToolsActivePort"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Chromium exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if port_file.is_file() and (lines := port_file.read_text().split()):
                try:
                    url = f"http://127.0.0.1:{int(lines[0])}/json/list"
                    targets = httpx.get(url, timeout=5).json()
                except (ValueError, httpx.HTTPError):
                    targets = []  # the file is half written or the port not yet open: retry
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.05)
        raise TimeoutError(f"no DevTools page from Chromium within {timeout} s:\n{self.log_tail()}")

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 15.0) -> Any:
        assert self._ws is not None, "use the browser as a context manager"
        self._next_id += 1
        mine = self._next_id
        self._ws.send(json.dumps({"id": mine, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout} s")
            message = json.loads(self._ws.recv(timeout=left))
            if message.get("id") == mine:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.problems.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            self.problems.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            # Failed loads and Content-Security-Policy violations arrive here.
            entry = params["entry"]
            self.problems.append(
                f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
            )

    def navigate(self, url: str) -> None:
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {result['errorText']}")

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 20.0) -> Any:
        """Evaluate ``expression`` until it is truthy; fail with ``what`` and the last value."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what}; last value {value!r}; "
            f"page problems: {self.problems}"
        )

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path
