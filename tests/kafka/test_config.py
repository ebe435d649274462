"""One Kafka client configuration: security settings reach every client, secrets stay hidden."""

from __future__ import annotations

import pytest

from binance_metrics.errors import ConfigError
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.log import LIBRDKAFKA_LOG
from binance_metrics.settings import load_settings


def test_security_settings_reach_the_client_config() -> None:
    settings = load_settings(
        KAFKA_BOOTSTRAP_SERVERS="kafka-1:9093,kafka-2:9093",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="ingestor",
        KAFKA_SASL_PASSWORD="s3cret",
        KAFKA_SSL_CA_LOCATION="/etc/kafka/ca.pem",
    )
    kafka = KafkaConnection.from_settings(settings)
    assert kafka.client_config(**{"linger.ms": 5}) == {
        "bootstrap.servers": "kafka-1:9093,kafka-2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "ingestor",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "logger": LIBRDKAFKA_LOG,
        "linger.ms": 5,
    }
    assert "s3cret" not in repr(kafka) and "s3cret" not in repr(settings)


def test_sasl_without_credentials_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD"):
        load_settings(
            KAFKA_BOOTSTRAP_SERVERS="kafka:9093",
            KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            KAFKA_SASL_MECHANISM="PLAIN",
        )
