"""compose.yaml against the code it runs: Settings, entry points, paths, users, topics, ports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import threading
import tomllib
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from binance_metrics.kafka.broker import TRADES_RETENTION_MS
from binance_metrics.settings import Settings
from tests.deploy.deploy_support import (
    APP_SERVICES,
    COMPOSE_FILE,
    INIT_SQL,
    REPO,
    USERS_XML,
    InterpolationError,
    compose,
    env_example,
    filled_env,
    interpolate,
    raw_compose,
    service_env,
)

EXPECTED_SERVICES = {
    "kafka",
    "kafka-init",
    "clickhouse",
    "ingestor",
    "dataflow",
    "prometheus",
    "grafana",
}
#: Services started only with `--profile monitoring`.
MONITORING = ("prometheus", "grafana")
#: Variables our app containers get that are not Settings fields, and who reads them.
NON_SETTINGS_ENV = {
    "BYTEWAX_DATAFLOW_API_ENABLED": "bytewax: serve /metrics on :3030",
    "BYTEWAX_RECOVERY_DIRECTORY": "bytewax.run and containers/dataflow-entrypoint.sh",
    "BYTEWAX_SNAPSHOT_INTERVAL": "bytewax.run",
}
#: Settings whose compose value deliberately differs from the Settings default.
DELIBERATE_OVERRIDES = {
    "SYMBOLS": "two symbols instead of one in the full stack",
    "HEALTH_HOST": "containers must listen on all interfaces",
    "KAFKA_BOOTSTRAP_SERVERS": "the compose Kafka",
    "CLICKHOUSE_URL": "the compose ClickHouse",
}
PASSWORDS = (
    "CLICKHOUSE_ADMIN_PASSWORD",
    "CLICKHOUSE_WRITER_PASSWORD",
    "CLICKHOUSE_READER_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
)


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return compose()


@pytest.fixture(scope="module")
def services(stack: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = stack["services"]
    return result


def test_compose_file_has_the_expected_services(services: dict[str, Any]) -> None:
    assert set(services) == EXPECTED_SERVICES


def test_every_service_has_an_image_or_a_build(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        image = service.get("image", "")
        if "build" not in service:
            # Third-party images are pinned to a tag, never "latest" or untagged.
            assert ":" in image and not image.endswith(":latest"), (name, image)


def test_app_services_build_from_the_dockerfile_targets(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        build = services[name]["build"]
        context = (REPO / build["context"]).resolve()
        assert context == REPO
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        targets = re.findall(
            r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", dockerfile.read_text(), re.MULTILINE | re.IGNORECASE
        )
        assert build["target"] == name and name in targets, (name, targets)


def test_published_ports_bind_to_localhost_by_default(services: dict[str, Any]) -> None:
    defaults_only = compose(
        {key: value for key, value in filled_env().items() if key.endswith("_PASSWORD")}
    )
    published = 0
    for name, service in defaults_only["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: use the HOST_IP:HOST:CONTAINER string form"
            host_ip, _, rest = port.partition(":")
            assert host_ip == "127.0.0.1", (name, port)
            assert re.fullmatch(r"\d+:\d+", rest), (name, port)
            published += 1
    assert published >= 4
    # ... and they follow BIND_ADDRESS when the operator sets it.
    env = filled_env() | {"BIND_ADDRESS": "0.0.0.0"}
    for service in compose(env)["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("0.0.0.0:")


def test_published_ports_match_what_the_containers_listen_on(services: dict[str, Any]) -> None:
    ingestor = service_env(services["ingestor"])
    assert [p.rsplit(":", 1)[1] for p in services["ingestor"]["ports"]] == [ingestor["HEALTH_PORT"]]
    assert [p.rsplit(":", 1)[1] for p in services["dataflow"]["ports"]] == ["3030"]
    assert [p.rsplit(":", 1)[1] for p in services["clickhouse"]["ports"]] == ["8123"]
    assert [p.rsplit(":", 1)[1] for p in services["grafana"]["ports"]] == ["3000"]
    assert [p.rsplit(":", 1)[1] for p in services["prometheus"]["ports"]] == ["9090"]
    kafka = service_env(services["kafka"])
    host_listener = re.search(r"HOST://:(\d+)", kafka["KAFKA_LISTENERS"])
    assert host_listener, kafka["KAFKA_LISTENERS"]
    assert [p.rsplit(":", 1)[1] for p in services["kafka"]["ports"]] == [host_listener[1]]


def test_passwords_have_no_default() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for password in PASSWORDS:
        uses = re.findall(r"\$\{" + password + r"([^}]*)\}", text)
        assert uses, f"{password} is not used in compose.yaml"
        assert all(use.startswith(":?") for use in uses), (password, uses)
        assert env_example()[password] == "", f".env.example must not suggest a {password}"
    for password in PASSWORDS:
        env = {key: value for key, value in filled_env().items() if key != password}
        with pytest.raises(InterpolationError, match=password):
            compose(env)


def test_every_compose_variable_is_in_env_example_with_the_same_default() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8").replace("$$", "")
    example = env_example()
    seen = set()
    for name, op, arg in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?+]))?([^}]*)\}", text):
        seen.add(name)
        assert name in example, f"{name} is used by compose.yaml but not in .env.example"
        if op == "-":
            assert example[name] == arg, f"{name}: .env.example {example[name]!r}, compose {arg!r}"
    assert not set(example) - seen, f"unused in compose.yaml: {set(example) - seen}"


def test_app_environment_is_made_of_settings_fields(services: dict[str, Any]) -> None:
    fields = Settings.model_fields
    for name in APP_SERVICES:
        for key in service_env(services[name]):
            assert key in fields or key in NON_SETTINGS_ENV, (
                f"{name}: {key} is neither a Settings field nor a known runtime variable"
            )


def test_app_environment_is_valid_settings(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        env = service_env(services[name])
        values: dict[str, Any] = {k: v for k, v in env.items() if k in Settings.model_fields}
        settings = Settings(_env_file=None, **values)
        assert settings.KAFKA_BOOTSTRAP_SERVERS == "kafka:9092"
        assert not settings.embedded_kafka


def test_compose_defaults_equal_settings_defaults() -> None:
    """A `${VAR:-x}` default for a Settings field must not drift from the field's default."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    defaults = Settings(_env_file=None)
    for name, arg in re.findall(r"\$\{([A-Z_]+):-([^}]*)\}", text):
        if name not in Settings.model_fields or name in DELIBERATE_OVERRIDES:
            continue
        parsed = Settings(_env_file=None, **{name: arg})
        assert getattr(parsed, name) == getattr(defaults, name), (name, arg)


def test_services_reach_kafka_on_its_advertised_listener(services: dict[str, Any]) -> None:
    kafka = service_env(services["kafka"])
    listeners = (item.split("://", 1) for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    advertised = {address: name for name, address in listeners}
    internal = next(addr for addr, name in advertised.items() if name == "PLAINTEXT")
    host, port = internal.split(":")
    assert host in services and host == "kafka"
    for name in APP_SERVICES:
        assert service_env(services[name])["KAFKA_BOOTSTRAP_SERVERS"] == f"{host}:{port}"
    assert f"--bootstrap-server {host}:{port}" in " ".join(services["kafka-init"]["command"])


def test_kafka_init_creates_the_topics_the_code_uses(services: dict[str, Any]) -> None:
    script = " ".join(services["kafka-init"]["command"])
    assert "$topics" in script  # compose's $$ became the container shell's $
    defaults = Settings(_env_file=None)
    create = r"--create --if-not-exists\s+\\?\s*--topic \"([^\"]+)\"([^\n]*\n[^\n]*)"
    creates = re.findall(create, script)
    created = {topic: rest for topic, rest in creates}
    assert set(created) == {defaults.KAFKA_TOPIC, defaults.KAFKA_DLQ_TOPIC}, created
    trades = created[defaults.KAFKA_TOPIC]
    assert f'--partitions "{defaults.KAFKA_PARTITIONS}"' in trades
    assert f"retention.ms={TRADES_RETENTION_MS}" in trades  # 24 h, as the embedded broker's
    assert service_env(services["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


@pytest.mark.parametrize("service", ["dataflow", "ingestor"])
def test_clickhouse_url_uses_the_insert_only_writer(services: dict[str, Any], service: str) -> None:
    # The ingestor reads the store too: its checkpoint, the ledger it heals, what it reconciles.
    url = urlparse(service_env(services[service])["CLICKHOUSE_URL"])
    assert (url.scheme, url.hostname, url.port) == ("http", "clickhouse", 8123)
    assert url.username == "binance_writer"
    assert url.password == filled_env()["CLICKHOUSE_WRITER_PASSWORD"]
    users = ET.parse(USERS_XML).getroot().find("users")
    assert users is not None and users.find("binance_writer") is not None


def test_clickhouse_gets_the_passwords_its_users_file_reads(services: dict[str, Any]) -> None:
    env = service_env(services["clickhouse"])
    users = ET.parse(USERS_XML).getroot().find("users")
    assert users is not None
    for user in users:
        password = user.find("password")
        assert password is not None and password.get("from_env"), user.tag
        assert not (password.text or "").strip(), f"{user.tag}: plaintext password in the file"
        assert env.get(password.get("from_env", "")), (user.tag, password.attrib)
    assert env["CLICKHOUSE_PASSWORD"] == filled_env()["CLICKHOUSE_ADMIN_PASSWORD"]


def test_mounted_host_paths_exist(services: dict[str, Any], stack: dict[str, Any]) -> None:
    named = set(stack.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert target.startswith("/"), (name, volume)
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: named volume {source} is not declared"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["clickhouse"]["volumes"]}
    assert (REPO / mounts["/docker-entrypoint-initdb.d/init.sql"]).resolve() == INIT_SQL


def test_depends_on_targets_exist_and_are_checkable(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, (name, target)
            condition = spec["condition"]
            if condition == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), (name, target)
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", (name, target)
            else:
                pytest.fail(f"{name} -> {target}: unexpected condition {condition}")
    dataflow = services["dataflow"]["depends_on"]
    assert dataflow["clickhouse"]["condition"] == "service_healthy"
    assert dataflow["kafka-init"]["condition"] == "service_completed_successfully"
    assert services["ingestor"]["depends_on"]["kafka-init"]["condition"] == (
        "service_completed_successfully"
    )


def test_long_running_services_have_health_checks(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name == "kafka-init":
            continue
        assert service.get("healthcheck", {}).get("test"), name


def test_app_health_checks_probe_the_served_ports(services: dict[str, Any]) -> None:
    ingestor_check = " ".join(services["ingestor"]["healthcheck"]["test"])
    port = service_env(services["ingestor"])["HEALTH_PORT"]
    assert f"http://127.0.0.1:{port}/health" in ingestor_check
    assert "http://127.0.0.1:3030/metrics" in " ".join(services["dataflow"]["healthcheck"]["test"])
    assert service_env(services["dataflow"])["BYTEWAX_DATAFLOW_API_ENABLED"] == "1"


def test_commands_are_real_entry_points(services: dict[str, Any]) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    program, subcommand = services["ingestor"]["command"]
    assert program in scripts
    module, _, func = scripts[program].partition(":")
    cli = REPO / "src" / (module.replace(".", "/") + ".py")
    source = cli.read_text(encoding="utf-8")
    assert f"def {func}(" in source
    assert re.search(r"add_parser\(\s*[\"']" + subcommand + r"[\"']", source), subcommand

    (import_str,) = services["dataflow"]["command"]
    module_name, _, attribute = import_str.partition(":")
    path = REPO / (module_name.replace(".", "/") + ".py")
    assert path.is_file(), path
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    assert attribute in assigned, f"{path} has no module-level {attribute!r}"


def test_grafana_and_prometheus_run_only_in_the_monitoring_profile(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        assert service.get("profiles", []) == (["monitoring"] if name in MONITORING else []), name
    grafana = service_env(services["grafana"])
    assert "grafana-clickhouse-datasource" in grafana["GF_PLUGINS_PREINSTALL_SYNC"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$$a ${SET} $SET ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d}", env) == "$a x x d d "
    assert interpolate("${SET:+y}${UNSET:+y}", env) == "y"
    with pytest.raises(InterpolationError):
        interpolate("${EMPTY:?need it}", env)
    assert "services" in raw_compose()


def test_configuration_doc_lists_every_variable() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", doc))
    missing = (set(Settings.model_fields) | set(env_example())) - documented
    assert not missing, f"not in docs/configuration.md: {sorted(missing)}"


def test_documented_ingestor_metrics_exist() -> None:
    doc = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    section = doc.split("## Ingestor", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE)
    assert len(names) >= 10
    source = "\n".join(
        p.read_text(encoding="utf-8") for p in (REPO / "src/binance_metrics/ingest").glob("*.py")
    )
    for name in names:
        base = re.sub(r"_total$", "", name)
        defined = f'"{base}"' in source or f'"{base.removeprefix("binance_")}"' in source
        assert defined, f"docs/metrics.md documents {name}, which the ingestor does not define"


def test_kafka_init_script_runs_and_passes_the_arguments(
    services: dict[str, Any], tmp_path: Path
) -> None:
    """Run kafka-init's shell script with a stand-in kafka-topics.sh that records its calls."""
    fake = tmp_path / "kafka-topics.sh"
    calls = tmp_path / "calls"
    fake.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> {calls}\necho >> {calls}\n')
    fake.chmod(0o755)
    entrypoint = services["kafka-init"]["entrypoint"]
    (script,) = services["kafka-init"]["command"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    script = script.replace("/opt/kafka/bin/kafka-topics.sh", str(fake))
    proc = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("|")[:-1] for line in calls.read_text().splitlines()]
    creates = [args for args in lines if "--create" in args]
    assert len(creates) == 2 and len(lines) == 4
    trades = creates[0]
    assert trades[trades.index("--topic") + 1] == "binance-trades"
    assert trades[trades.index("--partitions") + 1] == "3"
    assert trades[trades.index("--config") + 1] == "retention.ms=86400000"
    assert "--if-not-exists" in trades
    assert creates[1][creates[1].index("--topic") + 1] == "binance-trades-dlq"


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("service", "path"), [("ingestor", "/health"), ("dataflow", "/metrics")])
def test_app_health_check_commands_follow_the_http_status(
    services: dict[str, Any], service: str, path: str
) -> None:
    """The CMD health checks exit 0 on HTTP 200 and non-zero on 503 or no server."""
    test = services[service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        code = test[3]
        assert re.search(r"http://127\.0\.0\.1:\d+" + re.escape(path), code)
        code = re.sub(r"http://127\.0\.0\.1:\d+", f"http://127.0.0.1:{port}", code)
        command = [sys.executable, *test[2:3], code]
        _Health.status = 200
        assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
        _Health.status = 503
        assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0
    finally:
        server.shutdown()
        server.server_close()
    assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0


def test_env_example_is_valid_for_settings_too() -> None:
    """`binance-metrics` reads ./.env as well: a copy of the template must load as Settings."""
    settings = Settings(_env_file=REPO / ".env.example")
    assert settings.SYMBOLS == ("BTCUSDT", "ETHUSDT")
    # The template leaves the embedded broker and store on (compose sets its own servers).
    assert settings.embedded_kafka and settings.CLICKHOUSE_URL is None
