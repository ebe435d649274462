"""Where a run's Kafka comes from: a configured one is checked before use (one clear error, within
seconds, naming the setting); the embedded one needs no security settings."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from binance_metrics.errors import BrokerError, ConfigError
from binance_metrics.kafka.broker import (
    EmbeddedBroker,
    check_broker,
    ensure_topics,
    free_port,
    kafka_for,
)
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.log import LIBRDKAFKA_LOG
from binance_metrics.settings import load_settings


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a hung broker, a firewall)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_a_refused_connection_names_the_setting_and_the_reason() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(BrokerError) as raised:
        check_broker(KafkaConnection(address))
    assert str(raised.value) == (
        f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS={address} "
        f"(Connect to ipv4#{address} failed: Connection refused): is the broker running?"
    )


def test_an_unknown_host_is_reported_as_such() -> None:
    with pytest.raises(BrokerError, match=r"KAFKA_BOOTSTRAP_SERVERS=kafka\.invalid:9092 .*resolve"):
        check_broker(KafkaConnection("kafka.invalid:9092"))


def test_a_broker_that_never_answers_is_given_up_after_the_timeout(silent_listener: str) -> None:
    with pytest.raises(BrokerError) as raised:
        check_broker(KafkaConnection(silent_listener), timeout_s=1.0)
    assert str(raised.value) == (
        f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS={silent_listener} (no answer in 1 s): "
        "is the broker running?"
    )


def test_client_settings_librdkafka_rejects_are_a_configuration_error() -> None:
    kafka = KafkaConnection(
        "127.0.0.1:9093", {"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"}
    )
    with pytest.raises(ConfigError, match=r"KAFKA_SSL_CA_LOCATION\): ssl\.ca\.location failed"):
        check_broker(kafka)


def test_a_running_broker_passes_and_lists_its_topics(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    ensure_topics(broker.connection, [f"{topic_prefix}-trades"], 1)
    assert f"{topic_prefix}-trades" in check_broker(broker.connection)


def test_the_embedded_broker_gets_no_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    settings = load_settings(KAFKA_SECURITY_PROTOCOL="SSL")  # meant for a configured Kafka
    with kafka_for(settings) as kafka:
        assert kafka.client_config() == {
            "bootstrap.servers": kafka.bootstrap_servers,
            "logger": LIBRDKAFKA_LOG,
        }
        assert {settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC} <= check_broker(kafka)
