"""The one librdkafka configuration every Kafka client of binance-metrics starts from.

The ingestor's producer, the resume consumer, the dataflow's source and dead-letter sink, the
replay producer and the admin client that creates topics all take a :class:`KafkaConnection`:
where the brokers are and how to authenticate (``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*``,
``KAFKA_SSL_CA_LOCATION``). It is a small frozen value, so Bytewax can pickle the dataflow's
source and sinks that hold it; each client adds its own tuning on top with
:meth:`KafkaConnection.client_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from binance_metrics.kafka.log import LIBRDKAFKA_LOG
from binance_metrics.settings import Settings


@dataclass(frozen=True)
class KafkaConnection:
    """Bootstrap servers plus the security settings (``security.protocol``, ``sasl.*``, ...)."""

    bootstrap_servers: str
    security: Mapping[str, str] = field(default_factory=dict, repr=False)  # holds the password

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        """The configured Kafka (``KAFKA_BOOTSTRAP_SERVERS`` and the security settings).

        The embedded broker has its own :attr:`~binance_metrics.kafka.broker.EmbeddedBroker.
        connection`: it listens on loopback without authentication.
        """
        if settings.KAFKA_BOOTSTRAP_SERVERS is None:
            raise ValueError("KAFKA_BOOTSTRAP_SERVERS is not set")
        security: dict[str, str] = {"security.protocol": settings.KAFKA_SECURITY_PROTOCOL}
        if settings.KAFKA_SASL_MECHANISM is not None:
            security["sasl.mechanism"] = settings.KAFKA_SASL_MECHANISM
        if settings.KAFKA_SASL_USERNAME is not None:
            security["sasl.username"] = settings.KAFKA_SASL_USERNAME
        if settings.KAFKA_SASL_PASSWORD is not None:
            security["sasl.password"] = settings.KAFKA_SASL_PASSWORD.get_secret_value()
        if settings.KAFKA_SSL_CA_LOCATION is not None:
            security["ssl.ca.location"] = str(settings.KAFKA_SSL_CA_LOCATION)
        return cls(settings.KAFKA_BOOTSTRAP_SERVERS, security)

    def client_config(self, **tuning: Any) -> dict[str, Any]:
        """librdkafka settings for one client: connection, security and the ``logger`` that
        sends librdkafka's log lines to Python logging (:mod:`binance_metrics.kafka.log`, never
        raw to stderr), then ``tuning``.

        Keys use librdkafka's dotted names; pass them as ``**{"linger.ms": 5}``.
        """
        return {
            "bootstrap.servers": self.bootstrap_servers,
            **self.security,
            "logger": LIBRDKAFKA_LOG,
            **tuning,
        }
