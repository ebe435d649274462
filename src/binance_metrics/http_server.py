"""Run a FastAPI app under uvicorn until Ctrl-C or SIGTERM, then return normally."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from types import FrameType

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    on_exit: Sequence[Callable[[], None]] = ()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal once it has shut down; inside asyncio that cancels the
        # finished lifespan with a traceback. The caller stops on its own when run() returns.
        self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Before uvicorn waits for open responses: streams that never end on their own end now.
        for hook in self.on_exit:
            hook()
        await super().shutdown(sockets)


#: How long a shutdown waits for open responses, at most.
GRACEFUL_SHUTDOWN_S = 5


def serve_app(
    app: FastAPI,
    host: str,
    port: int,
    log_level: str = "warning",
    on_exit: Sequence[Callable[[], None]] = (),
) -> None:
    """Serve ``app``; a signal shuts it down gracefully (lifespan shutdown runs) and returns.
    ``on_exit`` runs, on the event loop, when the shutdown begins (the page's streams end).
    An error the app's startup recorded as ``app.state.startup_error`` is raised."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )  # fmt: skip
    server = _Server(config)
    server.on_exit = on_exit
    try:
        server.run()
    except SystemExit:  # uvicorn's exit 3 after a failed startup
        error = getattr(app.state, "startup_error", None)
        if isinstance(error, Exception):
            raise error from None
        raise
