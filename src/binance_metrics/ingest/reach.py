"""Why a connection to the exchange failed, in one line that names the host and the error.

``gaierror(-2, 'Name or service not known')`` alone does not say that Binance is unreachable;
``cannot reach stream.binance.com:9443: DNS lookup failed (gaierror -2: Name or service not
known)`` does. Used for the log, ``/health`` and the candle page's feed status.
"""

from __future__ import annotations

import socket
import ssl
from typing import Final
from urllib.parse import urlsplit

import websockets

#: Said once when the first connection cannot be opened: the demo needs no network.
OFFLINE_HINT: Final = (
    "no network or Binance blocked here? `make demo` (binance-metrics up --exchange "
    "replay:FILE) runs the same pipeline offline on a recording"
)


def host_of(url: str) -> str:
    """``host:port`` of a ``ws(s)://`` URL, the port filled in from the scheme."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return f"{parts.hostname}:{port}"


def connect_failure(url: str, exc: BaseException) -> str:
    """``cannot reach HOST:PORT: what happened``."""
    if isinstance(exc, socket.gaierror):
        what = f"DNS lookup failed (gaierror {exc.errno}: {exc.strerror})"
    elif isinstance(exc, ConnectionRefusedError):
        what = "connection refused (nothing listens there)"
    elif isinstance(exc, TimeoutError):
        what = "no answer in time (TimeoutError)"
    elif isinstance(exc, ssl.SSLError):
        what = f"TLS failed ({exc.__class__.__name__}: {exc.reason or exc})"
    elif isinstance(exc, websockets.InvalidStatus):
        what = f"the handshake was answered with HTTP {exc.response.status_code}"
    elif isinstance(exc, OSError) and exc.strerror:
        what = f"{exc.strerror} ({exc.__class__.__name__} {exc.errno})"
    else:
        what = f"{exc.__class__.__name__}: {exc}"
    return f"cannot reach {host_of(url)}: {what}"
