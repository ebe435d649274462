"""Secrets never reach a message: passwords in URLs and query strings are masked.

Every error or log line that shows a DSN, a URL or a value the user typed goes through
:func:`redact`, so ``binance-metrics`` can echo what was wrong without echoing the password.
"""

from __future__ import annotations

import re
from typing import Final

#: ``scheme://user:password@`` -> ``scheme://user:***@`` (a URL without a password is kept). The
#: password runs to the last ``@`` of the URL: an unencoded ``@`` or ``/`` in it is masked too.
_USERINFO: Final = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):[^\s'\"]*@")
#: ``?password=...`` and the like, as clickhouse-connect and others accept them.
_QUERY_SECRET: Final = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|sasl\.password)=)[^&\s'\"]*", re.IGNORECASE
)
MASK: Final = "***"


def redact(text: str) -> str:
    """``text`` with every URL password and every ``password=`` value replaced by ``***``.

    >>> redact("tcp://grafana:s3cret@host")
    'tcp://grafana:***@host'
    >>> redact("http://host:8123/?user=me&password=s3cret")
    'http://host:8123/?user=me&password=***'
    >>> redact("chdb:///data/clickhouse")
    'chdb:///data/clickhouse'
    """
    text = _USERINFO.sub(rf"\g<head>:{MASK}@", text)
    return _QUERY_SECRET.sub(rf"\g<key>{MASK}", text)
