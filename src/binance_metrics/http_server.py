"""Run a FastAPI app under uvicorn until Ctrl-C or SIGTERM, then return normally."""

from __future__ import annotations

from types import FrameType

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal once it has shut down; inside asyncio that cancels the
        # finished lifespan with a traceback. The caller stops on its own when run() returns.
        self._captured_signals.clear()


#: How long a shutdown waits for open responses: the candle page's event streams never end.
GRACEFUL_SHUTDOWN_S = 2


def serve_app(app: FastAPI, host: str, port: int, log_level: str = "warning") -> None:
    """Serve ``app``; a signal shuts it down gracefully (lifespan shutdown runs) and returns."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )  # fmt: skip
    _Server(config).run()
