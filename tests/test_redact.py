"""Passwords in URLs and ``password=`` values are masked; everything else is shown as it is."""

from __future__ import annotations

import pytest

from binance_metrics.redact import redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("tcp://grafana:s3cret@host", "tcp://grafana:***@host"),
        ("cannot reach http://u:p@ss:w/rd@h:8123/db", "cannot reach http://u:***@h:8123/db"),
        ("URL='http://u:pw@h' or 'http://v:pw@k'", "URL='http://u:***@h' or 'http://v:***@k'"),
        ("http://h:8123/?user=me&password=s3cret&x=1", "http://h:8123/?user=me&password=***&x=1"),
        ("http://reader@host:8123 and chdb:///data/clickhouse", None),
        ("KAFKA_BOOTSTRAP_SERVERS='kafka:9092'", None),
    ],
)
def test_redact_masks_passwords_only(text: str, shown: str | None) -> None:
    assert redact(text) == (text if shown is None else shown)
