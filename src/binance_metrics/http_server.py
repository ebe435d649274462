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


def serve_app(app: FastAPI, host: str, port: int, log_level: str = "warning") -> None:
    """Serve ``app``; a signal shuts it down gracefully (lifespan shutdown runs) and returns.
    An error the app's startup recorded as ``app.state.startup_error`` is raised."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    try:
        _Server(config).run()
    except SystemExit:  # uvicorn's exit 3 after a failed startup
        error = getattr(app.state, "startup_error", None)
        if isinstance(error, Exception):
            raise error from None
        raise
