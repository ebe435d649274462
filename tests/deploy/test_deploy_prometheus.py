"""Prometheus in the stack: its config, its compose service, Grafana's data source, and every
PromQL expression of the dashboard against the metrics the code really exposes.

The metric names are not copied here: the ingestor's are read from its real ``/metrics`` route
(``create_app``, not started, so no network), the dataflow's from what Bytewax appends to its
``:3030/metrics`` (``generate_latest`` of ``prometheus_client``'s default registry, after
importing ``binance_metrics.dataflow``). A renamed metric, or a dashboard typo, fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_support import DASHBOARD, GRAFANA, REPO, compose, filled_env, service_env

PROMETHEUS_CONFIG = REPO / "containers" / "prometheus" / "prometheus.yml"
PROMETHEUS_DATASOURCE = GRAFANA / "datasources" / "prometheus.yaml"
PROMETHEUS_PORT = "9090"  # the image's --web.listen-address default; compose does not change it

#: Series Prometheus itself adds to every scrape job (not in any registry of ours).
SCRAPE_SERIES = {"up"}

#: PromQL functions and aggregation operators (always followed by "(").
PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta",
    "deriv", "exp", "floor", "group", "histogram_quantile", "idelta", "increase", "irate",
    "label_replace", "last_over_time", "ln", "max", "max_over_time", "min", "min_over_time",
    "predict_linear", "quantile", "quantile_over_time", "rate", "resets", "round", "scalar",
    "sort", "sort_desc", "sqrt", "stddev", "stdvar", "sum", "sum_over_time", "time", "timestamp",
    "topk", "vector",
}  # fmt: skip
#: Keywords that are not followed by "(" once grouping clauses are removed.
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression.

    String literals, label matchers ``{...}``, ranges ``[...]`` (with Grafana's
    ``$__rate_interval``), grouping clauses ``by (le, symbol)`` and ``offset`` durations are
    removed first; what is left is functions (followed by ``(``: they must be known PromQL
    functions, so a typo fails too), keywords, numbers and metric names.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\boffset\s+-?[\w$]+", " ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match[1], match[2]
        if call:
            assert name in PROMQL_FUNCTIONS, f"unknown PromQL function {name!r} in {expr!r}"
        elif name.lower() not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def grouping_labels(expr: str) -> set[str]:
    """Label names of every ``by (...)`` / ``on (...)``... clause of the expression."""
    return {
        label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label
    }


def exposition_series(text: str) -> dict[str, set[str]]:
    """Series names of a Prometheus text exposition, each with the label names seen on it.

    ``# TYPE`` lines count too, so a labelled metric no event has touched yet (no sample) is
    still known: Prometheus would store it under that name from its first increment on.
    """
    series: dict[str, set[str]] = {}
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            for suffix in suffixes.get(kind, ("",)):
                series.setdefault(name + suffix, set())
        elif line and not line.startswith("#"):
            match = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s", line)
            assert match, line
            labels = set(re.findall(r'([A-Za-z_]\w*)="', match[2] or ""))
            series.setdefault(match[1], set()).update(labels)
    return series


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    result: dict[str, Any] = compose()["services"]
    return result


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    (source,) = yaml.safe_load(PROMETHEUS_DATASOURCE.read_text(encoding="utf-8"))["datasources"]
    result: dict[str, Any] = source
    return result


@pytest.fixture(scope="module")
def ingestor_series() -> dict[str, set[str]]:
    """What the ingestor's ``GET /metrics`` serves, every labelled metric given one child."""
    from fastapi.testclient import TestClient
    from prometheus_client.metrics import MetricWrapperBase

    from binance_metrics.ingest.app import create_app
    from binance_metrics.kafka.config import KafkaConnection
    from binance_metrics.settings import Settings

    # A string, parsed by Settings as it is from the environment.
    settings = Settings(_env_file=None, SYMBOLS="BTCUSDT,ETHUSDT")
    app = create_app(settings, KafkaConnection("unused:9092"))  # no lifespan: nothing connects
    metrics = app.state.ingestor.metrics
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            # A child per labelled metric, so its label names show on a sample line.
            metric.labels(*("x" for _ in metric._labelnames))
    response = TestClient(app).get("/metrics")
    assert response.status_code == 200
    return exposition_series(response.text)


@pytest.fixture(scope="module")
def dataflow_series() -> dict[str, set[str]]:
    """What Bytewax appends to ``:3030/metrics``: the default registry of the dataflow process."""
    from bytewax._metrics import generate_python_metrics

    import binance_metrics.dataflow  # noqa: F401  (registers PROMETHEUS_COUNTERS)

    return exposition_series(generate_python_metrics())


def _prometheus_targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (panel, target)
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if (target.get("datasource") or panel.get("datasource") or {}).get("type") == "prometheus"
    ]


# --- prometheus.yml --------------------------------------------------------------------------


def _duration_s(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)([smhdwy])", value)
    assert parts and "".join(n + u for n, u in parts) == value, (
        f"not a Prometheus duration: {value}"
    )
    return sum(int(n) * units[u] for n, u in parts)


def test_config_parses_with_sane_intervals(config: dict[str, Any]) -> None:
    assert set(config) == {"global", "scrape_configs"}
    interval = _duration_s(config["global"]["scrape_interval"])
    timeout = _duration_s(config["global"]["scrape_timeout"])
    assert 5 <= interval <= 60 and timeout < interval
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert len(jobs) == len(set(jobs))
    for job in config["scrape_configs"]:
        assert set(job) <= {"job_name", "metrics_path", "static_configs", "scrape_interval"}, job
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert job["static_configs"] and all(c["targets"] for c in job["static_configs"])


def _metrics_port(name: str, service: dict[str, Any]) -> str:
    """The container port the service serves /metrics on, from its own settings."""
    if name == "ingestor":
        return str(service_env(service)["HEALTH_PORT"])  # the ingestor's FastAPI app: /metrics
    if name == "dataflow":
        assert service_env(service)["BYTEWAX_DATAFLOW_API_ENABLED"] == "1"
        check = " ".join(service["healthcheck"]["test"])
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", check)
        assert match, check
        return str(match[1])
    raise AssertionError(f"{name} serves no metrics that Prometheus should scrape")


def test_every_scrape_target_is_a_service_on_its_metrics_port(
    config: dict[str, Any], services: dict[str, Any]
) -> None:
    scraped = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, _, port = target.partition(":")
                assert host in services, f"{job['job_name']}: {host} is not a compose service"
                assert port == _metrics_port(host, services[host]), (job["job_name"], target)
                # The container port is the one compose publishes (and the app listens on).
                container_ports = [p.rsplit(":", 1)[1] for p in services[host]["ports"]]
                assert port in container_ports, (target, container_ports)
                scraped[host] = job["job_name"]
    assert scraped == {"ingestor": "ingestor", "dataflow": "dataflow"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_config() -> None:
    """Prometheus's own validator, where it is installed (Debian: apt-get install prometheus)."""
    proc = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the compose service ---------------------------------------------------------------------


def test_prometheus_service_is_monitoring_only_pinned_and_healthchecked(
    services: dict[str, Any],
) -> None:
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    image, _, tag = prometheus["image"].partition(":")
    assert image == "prom/prometheus"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"pin an exact release, not {tag!r}"
    test = prometheus["healthcheck"]["test"]
    # The image is busybox-based (wget, no curl, no shell needed with CMD).
    assert test[:2] == ["CMD", "wget"]
    assert f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready" in test
    assert prometheus["restart"] == "unless-stopped"


def test_prometheus_binds_to_localhost_by_default_and_follows_bind_address() -> None:
    defaults_only = {k: v for k, v in filled_env().items() if k.endswith("_PASSWORD")}
    (port,) = compose(defaults_only)["services"]["prometheus"]["ports"]
    assert port == f"127.0.0.1:9090:{PROMETHEUS_PORT}"
    env = filled_env() | {"BIND_ADDRESS": "0.0.0.0", "PROMETHEUS_HOST_PORT": "19090"}
    (port,) = compose(env)["services"]["prometheus"]["ports"]
    assert port == f"0.0.0.0:19090:{PROMETHEUS_PORT}"


def test_prometheus_command_mounts_and_retention(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in prometheus["command"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert (REPO / mounts[flags["config.file"]]).resolve() == PROMETHEUS_CONFIG.resolve()
    assert prometheus["volumes"][1].endswith(":ro")
    assert mounts[flags["storage.tsdb.path"]] == "prometheus-data"
    assert "prometheus-data" in compose()["volumes"]
    retention = _duration_s(flags["storage.tsdb.retention.time"])
    assert retention == 15 * 86400  # the default of PROMETHEUS_RETENTION
    assert set(flags) == {"config.file", "storage.tsdb.path", "storage.tsdb.retention.time"}


def test_grafana_waits_for_prometheus(services: dict[str, Any]) -> None:
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


@pytest.mark.skipif(shutil.which("wget") is None, reason="no wget on this machine")
def test_health_check_command_follows_the_http_status(services: dict[str, Any]) -> None:
    """The wget check exits 0 on 200 and non-zero on 503 (GNU wget here, busybox in the image)."""
    statuses = {"status": 200}

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses["status"] if self.path == "/-/ready" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/-/ready"
        test = [
            url if "127.0.0.1" in a else a for a in services["prometheus"]["healthcheck"]["test"]
        ]
        command = test[1:]  # drop "CMD"
        assert subprocess.run(command, capture_output=True, timeout=30).returncode == 0
        statuses["status"] = 503
        assert subprocess.run(command, capture_output=True, timeout=30).returncode != 0
    finally:
        server.shutdown()
        server.server_close()


# --- Grafana ---------------------------------------------------------------------------------


def test_grafana_datasource_points_at_the_prometheus_service(
    datasource: dict[str, Any], services: dict[str, Any], config: dict[str, Any]
) -> None:
    assert datasource["type"] == "prometheus"
    assert datasource["access"] == "proxy"  # Grafana's server queries; the browser cannot
    assert datasource["url"] == f"http://prometheus:{PROMETHEUS_PORT}"
    assert "prometheus" in services
    assert datasource["editable"] is False and datasource.get("isDefault") is False
    # $__rate_interval is derived from it: it must be the real scrape interval.
    assert datasource["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]


def test_prometheus_panels_use_the_datasource_uid(
    dashboard: dict[str, Any], datasource: dict[str, Any]
) -> None:
    ref = {"type": "prometheus", "uid": datasource["uid"]}
    panels = {}
    for panel, target in _prometheus_targets(dashboard):
        assert panel["datasource"] == ref, panel["title"]
        assert target["datasource"] == ref, (panel["title"], target["refId"])
        assert target["expr"].strip(), (panel["title"], target["refId"])
        panels[panel["id"]] = panel
    assert len(panels) >= 6
    refs = [json.dumps(p.get("datasource")) for p in dashboard["panels"]]
    assert not [r for r in refs if '"prometheus"' in r and datasource["uid"] not in r]
    # In the pipeline-health row, below its ClickHouse panels.
    (row,) = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert row["title"] == "Pipeline health"
    assert all(p["gridPos"]["y"] > row["gridPos"]["y"] for p in panels.values())
    # The old note that the stack has no Prometheus is gone.
    text = json.dumps(dashboard)
    assert "no Prometheus" not in text and "runs no Prometheus" not in text


def _all_series(
    ingestor_series: dict[str, set[str]], dataflow_series: dict[str, set[str]]
) -> dict[str, set[str]]:
    known = {name: {"job", "instance"} for name in SCRAPE_SERIES}
    for series in (ingestor_series, dataflow_series):
        for name, labels in series.items():
            known.setdefault(name, {"job", "instance"}).update(labels)
    return known


def test_every_promql_metric_exists_in_the_code(
    dashboard: dict[str, Any],
    ingestor_series: dict[str, set[str]],
    dataflow_series: dict[str, set[str]],
) -> None:
    known = _all_series(ingestor_series, dataflow_series)
    used: set[str] = set()
    for panel, target in _prometheus_targets(dashboard):
        names = promql_metric_names(target["expr"])
        assert names, (panel["title"], target["expr"])
        missing = names - set(known)
        assert not missing, f"{panel['title']} / {target['refId']}: no such metric {missing}"
        used |= names
    # The panels the requirement asks for are there (and read the real series).
    assert {
        "binance_trade_latency_seconds_bucket",
        "binance_trades_produced_total",
        "binance_dlq_messages_total",
        "binance_metrics_dataflow_dead_letters_total",
        "binance_metrics_dataflow_late_trades_total",
        "binance_metrics_dataflow_bars_written_total",
        "binance_metrics_dataflow_trades_total",
        "binance_ws_reconnects_total",
        "binance_trade_gaps_total",
        "binance_backfilled_trades_total",
    } <= used


def test_every_grouping_and_legend_label_exists_on_the_metrics(
    dashboard: dict[str, Any],
    ingestor_series: dict[str, set[str]],
    dataflow_series: dict[str, set[str]],
) -> None:
    known = _all_series(ingestor_series, dataflow_series)
    for panel, target in _prometheus_targets(dashboard):
        expr = target["expr"]
        # (an unknown metric has no labels: test_every_promql_metric_exists_in_the_code names it)
        labels = set().union(*(known.get(name, set()) for name in promql_metric_names(expr)))
        grouped = grouping_labels(expr)
        assert grouped <= labels, (panel["title"], grouped - labels)
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        # An aggregation keeps only its "by" labels: a legend label outside them renders empty.
        available = grouped if re.search(r"\b(?:sum|avg|min|max|count)\b", expr) else labels
        assert legend <= available, (panel["title"], target["refId"], legend - available)


def test_histogram_quantiles_group_by_le(dashboard: dict[str, Any]) -> None:
    quantiles = [
        t["expr"] for _, t in _prometheus_targets(dashboard) if "histogram_quantile" in t["expr"]
    ]
    assert len(quantiles) >= 2
    for expr in quantiles:
        assert "le" in grouping_labels(expr), expr
        assert all(name.endswith("_bucket") for name in promql_metric_names(expr)), expr


# --- the extraction itself -------------------------------------------------------------------


def test_promql_extraction_finds_names_and_skips_the_rest() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, symbol) (rate(a_seconds_bucket{job="x",le!="+Inf"}'
        "[$__rate_interval]))) > 1e3 and on (job) group_left (symbol) b_total offset 5m"
        " / ignoring(reason) c unless sum without (instance) (d[5m:1m]) or Inf"
    )
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "d"}
    assert grouping_labels(expr) == {"le", "symbol", "job", "reason", "instance"}
    assert promql_metric_names("sum(rate(x_total[1m])) by (le)") == {"x_total"}
    assert promql_metric_names('up{job=~"ingestor|dataflow"}') == {"up"}
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        promql_metric_names("rat(x_total[1m])")


def test_a_renamed_metric_would_fail(
    ingestor_series: dict[str, set[str]], dataflow_series: dict[str, set[str]]
) -> None:
    known = _all_series(ingestor_series, dataflow_series)
    # Counters carry _total, histograms _bucket; the bare names are not series.
    assert "binance_trades_produced_total" in known and "binance_trades_produced" not in known
    assert "binance_trade_latency_seconds_bucket" in known
    assert "binance_trade_latency_seconds" not in known
    assert "binance_metrics_dataflow_late_trades_total" in dataflow_series
    assert promql_metric_names("rate(binance_trades_producd_total[1m])") - set(known)
