"""Grafana provisioning: data source, dashboard provider, and every panel's SQL, run for real.

Each panel query is expanded the way Grafana and the ClickHouse plugin expand it (template
variables first, in the browser; then the plugin's macros, in its Go backend, pkg/macros:
``$__timeFilter(c)`` -> ``c >= toDateTime(<from s>) AND c <= toDateTime(<to s>)``,
``$__fromTime`` -> ``toDateTime(<from s>)``...) and run on chDB against the schema (init.sql) with
a few bars in the table, for every value of the interval variable.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from binance_metrics.intervals import INTERVALS
from tests.deploy.deploy_support import (
    DASHBOARD,
    GRAFANA,
    USERS_XML,
    compose,
    filled_env,
    run_chdb,
    service_env,
)

DATASOURCE_FILE = GRAFANA / "datasources" / "clickhouse.yaml"
PROVIDER_FILE = GRAFANA / "dashboards" / "binance.yaml"
PLUGIN = "grafana-clickhouse-datasource"

T0 = datetime(2024, 8, 9, 0, 0, tzinfo=UTC)
FROM = T0 - timedelta(hours=1)
TO = T0 + timedelta(hours=1)
MINUTES = 12  # BTCUSDT bars at T0 .. T0+11m; minute 7 has no trades
ZERO_MINUTE = 7
CORRECTED_MINUTE = 3  # written twice: a partial bar, then the full one (more trades)


# --- expansion, as Grafana (variables) and the plugin backend (macros) do it ---------------------


def _sqlstring(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def expand_variables(sql: str, variables: dict[str, tuple[str, str]]) -> str:
    """Grafana's template interpolation: ``$v``, ``${v}``, ``${v:text}``, ``${v:sqlstring}``."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"] or match["bare"]
        if name.startswith("__"):
            return match[0]  # a macro: the backend's job
        text, value = variables[name]
        fmt = match["fmt"]
        if fmt is None or fmt == "raw":
            return value
        if fmt == "text":
            return text
        if fmt == "sqlstring":
            return _sqlstring(value)
        raise AssertionError(f"unsupported variable format {fmt!r} in {match[0]}")

    pattern = r"\$\{(?P<name>\w+)(?::(?P<fmt>\w+))?\}|\$(?P<bare>\w+)"
    return re.sub(pattern, replace, sql)


def expand_macros(sql: str, start: datetime, end: datetime) -> str:
    """The plugin's macros (grafana-clickhouse-datasource pkg/macros/macros.go)."""
    seconds = {"from": int(start.timestamp()), "to": int(end.timestamp())}
    millis = {"from": int(start.timestamp() * 1000), "to": int(end.timestamp() * 1000)}

    def with_args(match: re.Match[str]) -> str:
        name, args = match[1], [a.strip() for a in match[2].split(",")]
        if name == "timeFilter":
            (column,) = args
            start_s, end_s = seconds["from"], seconds["to"]
            return f"{column} >= toDateTime({start_s}) AND {column} <= toDateTime({end_s})"
        if name == "timeFilter_ms":
            (column,) = args
            return (
                f"{column} >= fromUnixTimestamp64Milli({millis['from']}) AND "
                f"{column} <= fromUnixTimestamp64Milli({millis['to']})"
            )
        raise AssertionError(f"macro $__{name}(...) is not expanded by this test")

    sql = re.sub(r"\$__(\w+)\(([^)]*)\)", with_args, sql)
    plain = {
        "fromTime": f"toDateTime({seconds['from']})",
        "toTime": f"toDateTime({seconds['to']})",
        "fromTime_ms": f"fromUnixTimestamp64Milli({millis['from']})",
        "toTime_ms": f"fromUnixTimestamp64Milli({millis['to']})",
    }
    sql = re.sub(r"\$__(fromTime_ms|toTime_ms|fromTime|toTime)\b", lambda m: plain[m[1]], sql)
    # Grafana's global variables of the range, in epoch milliseconds.
    sql = sql.replace("${__from}", str(millis["from"])).replace("${__to}", str(millis["to"]))
    assert "$" not in sql, f"unexpanded variable or macro left in:\n{sql}"
    return sql


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert isinstance(variable, dict)
    return variable


def _intervals(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(text, value) options of the custom interval variable, parsed as Grafana does."""
    options = []
    for item in re.split(r"(?<!\\),", _variable(dashboard, "interval")["query"]):
        text, sep, value = item.partition(" : ")
        options.append((text.strip(), value.strip()) if sep else (item.strip(), item.strip()))
    return options


def _all_targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, t) for panel in dashboard["panels"] for t in panel.get("targets", [])]


def _targets(dashboard: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The ClickHouse (SQL) targets; the Prometheus ones are checked by test_deploy_prometheus."""
    return [
        (panel, t)
        for panel, t in _all_targets(dashboard)
        if (t.get("datasource") or panel.get("datasource") or {}).get("type") != "prometheus"
    ]


def _bar_rows() -> list[str]:
    rows = []
    price = Decimal("61000.00000000")
    for minute in range(MINUTES):
        start = T0 + timedelta(minutes=minute)
        if minute == ZERO_MINUTE:
            o = h = low = c = price
            volume, count = Decimal(0), 0
        else:
            o = price
            c = price + Decimal(minute) - Decimal(2)
            h = max(o, c) + Decimal("5.5")
            low = min(o, c) - Decimal("4.25")
            volume, count = Decimal("1.5") + minute, 10 + minute
            price = c
        written = start + timedelta(seconds=61.5)
        rows.append(_insert("BTCUSDT", start, o, h, low, c, volume, count, written))
        if minute == CORRECTED_MINUTE:
            # An earlier, partial version of the same bar: FINAL must keep the full one.
            earlier = written - timedelta(seconds=1)
            partial = _insert("BTCUSDT", start, o, h, low, o, Decimal("0.5"), 2, earlier)
            rows.insert(-1, partial)
    rows.append(
        _insert(
            "ETHUSDT",
            T0,
            Decimal(2600),
            Decimal(2601),
            Decimal(2599),
            Decimal("2600.5"),
            Decimal(3),
            4,
            T0 + timedelta(seconds=62),
        )
    )
    return rows


def _insert(
    symbol: str,
    start: datetime,
    o: Decimal,
    h: Decimal,
    low: Decimal,
    c: Decimal,
    volume: Decimal,
    count: int,
    written: datetime,
) -> str:
    taker = (volume / 2).quantize(Decimal("0.00000001"))
    values = ", ".join(
        [
            "'spot'",
            f"'{symbol}'",
            f"toDateTime64('{start:%Y-%m-%d %H:%M:%S}', 3, 'UTC')",
            *(f"toDecimal128('{v}', 8)" for v in (o, h, low, c, volume)),
            f"toDecimal128('{volume * c}', 16)",
            str(count),
            f"toDecimal128('{taker}', 8)",
            f"toDecimal128('{taker * c}', 16)",
            "0",  # base volumes: COIN-M only
            "0",
            "1",
            str(max(count, 1)),
            f"[(1, {count})]" if count else "[]",  # trade_ids
            f"toDateTime64('{written:%Y-%m-%d %H:%M:%S.%f}', 3, 'UTC')",
        ]
    )
    return f"INSERT INTO binance.ohlcv VALUES ({values})"


@pytest.fixture(scope="module")
def results(dashboard: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every panel query, for every interval, plus the symbol variable query: run once."""
    spot = {"market": ("spot", "spot")}
    queries = {
        "var:market": _variable(dashboard, "market")["query"],
        "var:symbol": expand_variables(_variable(dashboard, "symbol")["query"], spot),
    }
    for panel, target in _targets(dashboard):
        for text, value in _intervals(dashboard):
            variables = {**spot, "symbol": ("BTCUSDT", "BTCUSDT"), "interval": (text, value)}
            sql = expand_macros(expand_variables(target["rawSql"], variables), FROM, TO)
            queries[f"{panel['id']}:{target['refId']}:{text}"] = sql
    data_dir: Path = tmp_path_factory.mktemp("grafana-chdb") / "store"
    return run_chdb(data_dir, _bar_rows(), queries)


def _result(results: dict[str, Any], panel_id: int, interval: str = "1m") -> dict[str, Any]:
    result: dict[str, Any] = results[f"{panel_id}:A:{interval}"]
    assert "error" not in result, result.get("error")
    return result


def _column(result: dict[str, Any], name: str) -> list[str]:
    index = result["columns"].index(name)
    return [row[index] for row in result["rows"]]


# --- provisioning files ----------------------------------------------------------------------


def test_datasource_files_are_the_expected_ones() -> None:
    files = sorted(p.name for p in DATASOURCE_FILE.parent.iterdir())
    assert files == ["clickhouse.yaml", "prometheus.yaml"]
    uids = [
        source["uid"]
        for path in DATASOURCE_FILE.parent.glob("*.yaml")
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    ]
    assert len(uids) == len(set(uids)) == 2
    defaults = [
        source.get("isDefault", False)
        for path in DATASOURCE_FILE.parent.glob("*.yaml")
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    ]
    assert defaults.count(True) == 1  # Grafana refuses two default data sources


def test_datasource_provisioning_matches_the_stack() -> None:
    config = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))
    (source,) = config["datasources"]
    assert source["type"] == PLUGIN
    services = compose()["services"]
    assert source["jsonData"]["host"] in services
    assert (source["jsonData"]["protocol"], source["jsonData"]["port"]) in {
        ("native", 9000),
        ("http", 8123),
    }
    # Grafana reads through the read-only user, whose password the container gets from .env.
    user = source["jsonData"]["username"]
    users = ET.parse(USERS_XML).getroot()
    element = users.find(f"users/{user}")
    assert element is not None, user
    profile = users.find(f"profiles/{element.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") == "1"
    password_ref = source["secureJsonData"]["password"]
    match = re.fullmatch(r"\$\{?(\w+)\}?", password_ref)
    assert match, "the password must come from the environment, not the file"
    grafana_env = service_env(services["grafana"])
    assert grafana_env[match[1]] == filled_env()["CLICKHOUSE_READER_PASSWORD"]
    assert PLUGIN in grafana_env["GF_PLUGINS_PREINSTALL_SYNC"]


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    config = yaml.safe_load(PROVIDER_FILE.read_text(encoding="utf-8"))
    (provider,) = config["providers"]
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    host_dir = mounts[provider["options"]["path"]]
    assert (GRAFANA.parents[1] / host_dir).resolve() == DASHBOARD.parent.resolve()
    home = service_env(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA.parents[1] / mounts[str(Path(home).parent)] / Path(home).name).is_file()


def test_every_sql_panel_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    config = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))
    uid = config["datasources"][0]["uid"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    sql_panels = {panel["id"] for panel, _ in _targets(dashboard)}
    assert {1, 2, 3, 11, 12, 13} <= sql_panels
    for panel, target in _targets(dashboard):
        for ref in (panel.get("datasource"), target["datasource"]):
            assert ref == {"type": PLUGIN, "uid": uid}, panel["title"]
        assert target["editorType"] == "sql" and target["rawSql"].strip()
    assert _variable(dashboard, "symbol")["datasource"]["uid"] == uid


def test_interval_variable_offers_every_binance_interval(dashboard: dict[str, Any]) -> None:
    names = [name for name in INTERVALS if name != "1s"]  # the store holds 1-minute bars
    assert _intervals(dashboard) == [(name, name) for name in names]
    variable = _variable(dashboard, "interval")
    assert [(o["text"], o["value"]) for o in variable["options"]] == _intervals(dashboard)
    assert (variable["current"]["text"], variable["current"]["value"]) == ("1m", "1m")


def test_bar_panels_read_every_interval_from_the_klines_view(dashboard: dict[str, Any]) -> None:
    for panel_id in (1, 2, 3):
        (panel,) = [p for p in dashboard["panels"] if p["id"] == panel_id]
        sql = " ".join(panel["targets"][0]["rawSql"].split())
        assert (
            "FROM binance.ohlcv_klines(market = ${market:sqlstring}, symbol = ${symbol:sqlstring}, "
            "interval = "
            "${interval:sqlstring}, tz_offset_ms = 0, from_ms = ${__from}, to_ms = ${__to})"
        ) in sql


# --- the SQL, run ----------------------------------------------------------------------------


def test_every_query_runs_for_every_interval(
    dashboard: dict[str, Any], results: dict[str, Any]
) -> None:
    failures = {name: r["error"] for name, r in results.items() if "error" in r}
    assert not failures, json.dumps(failures, indent=2)[:4000]
    assert len(results) == 2 + len(_targets(dashboard)) * len(_intervals(dashboard))


def test_symbol_variable_lists_the_symbols(results: dict[str, Any]) -> None:
    assert results["var:market"]["rows"] == [["spot"]]
    assert results["var:symbol"]["rows"] == [["BTCUSDT"], ["ETHUSDT"]]


def test_the_symbol_list_is_searchable(dashboard: dict[str, Any], results: dict[str, Any]) -> None:
    """The Search symbols box narrows the Symbol list through the variable's regex, which
    Grafana interpolates with the ``regex`` format (the text escaped) and applies to each
    value (``/pattern/flags``, as in JavaScript)."""
    search = _variable(dashboard, "search")
    assert search["type"] == "textbox" and search["current"]["value"] == ""
    regex = _variable(dashboard, "symbol")["regex"]
    symbols = [row[0] for row in results["var:symbol"]["rows"]]

    def listed(text: str) -> list[str]:
        pattern, _, flags = regex.replace("${search}", re.escape(text))[1:].rpartition("/")
        compiled = re.compile(pattern, re.IGNORECASE if "i" in flags else 0)
        return [s for s in symbols if compiled.search(s)]

    assert listed("") == ["BTCUSDT", "ETHUSDT"]
    assert listed("eth") == ["ETHUSDT"]
    assert listed("USDT") == ["BTCUSDT", "ETHUSDT"]
    assert listed("b.c") == []  # the text is a text, not a pattern


def test_candles_return_the_candlestick_fields(results: dict[str, Any]) -> None:
    # 12 minutes from 2024-08-09T00:00 (a Friday): one bar of each longer interval, the ones
    # opened before the dashboard's range included (3d opened on 08-07, 1w on Monday 08-05).
    expected = {"1m": MINUTES, "3m": 4, "5m": 3, **{i: 1 for i in ("15m", "30m", "1h", "2h",
                "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")}}  # fmt: skip
    for interval, count in expected.items():
        result = _result(results, 1, interval)
        assert result["columns"] == ["time", "open", "high", "low", "close", "volume"]
        assert result["types"][0].startswith("DateTime64")
        assert all(t == "Float64" for t in result["types"][1:])
        assert len(result["rows"]) == count, interval
        times = _column(result, "time")
        assert times == sorted(times)


def test_candles_are_exact_rollups_of_the_minutes(results: dict[str, Any]) -> None:
    minutes = _result(results, 1, "1m")
    five = _result(results, 1, "5m")
    first = {c: [float(v) for v in _column(minutes, c)][:5] for c in minutes["columns"][1:]}
    bucket = dict(zip(five["columns"][1:], (float(v) for v in five["rows"][0][1:]), strict=True))
    assert bucket["open"] == first["open"][0]
    assert bucket["close"] == first["close"][-1]
    assert bucket["high"] == max(first["high"])
    assert bucket["low"] == min(first["low"])
    assert bucket["volume"] == pytest.approx(sum(first["volume"]))


def test_final_keeps_the_full_bar_not_the_partial_one(results: dict[str, Any]) -> None:
    trades = [int(v) for v in _column(_result(results, 3, "1m"), "trades")]
    assert trades[CORRECTED_MINUTE] == 10 + CORRECTED_MINUTE
    assert trades[ZERO_MINUTE] == 0
    assert len(trades) == MINUTES


def test_volume_panel_splits_by_taker_side(results: dict[str, Any]) -> None:
    result = _result(results, 2, "1m")
    assert result["columns"] == [
        "time",
        "volume",
        "taker_buy_volume",
        "taker_sell_volume",
        "quote_volume",
    ]
    for row in result["rows"]:
        volume, buy, sell = (float(v) for v in row[1:4])
        assert buy + sell == pytest.approx(volume)


def test_health_panels(results: dict[str, Any]) -> None:
    freshness = _result(results, 11)
    assert freshness["columns"] == ["symbol", "seconds_behind"]
    assert [row[0] for row in freshness["rows"]] == ["BTCUSDT", "ETHUSDT"]
    assert all(float(row[1]) > 0 for row in freshness["rows"])

    delay = _result(results, 12)
    assert delay["columns"] == [
        "time",
        "first_write_delay_s",
        "last_write_delay_s",
        "stored_versions",
    ]
    assert len(delay["rows"]) == MINUTES
    first_delays = {float(v) for v in _column(delay, "first_write_delay_s")}
    assert first_delays <= {1.0, 1.5}  # written_at - (window_start + 60 s)
    assert all(int(v) >= 1 for v in _column(delay, "stored_versions"))

    coverage = _result(results, 13)
    assert coverage["columns"] == ["bars", "zero_trade_bars", "trades", "missing_minutes"]
    ((bars, zero, trades, missing),) = coverage["rows"]
    assert (int(bars), int(zero)) == (MINUTES, 1)
    assert int(trades) == sum(10 + m for m in range(MINUTES) if m != ZERO_MINUTE)
    assert int(missing) == 120 - MINUTES


def test_expansion_matches_the_plugin_and_fails_on_unknown_macros() -> None:
    sql = expand_macros("WHERE $__timeFilter(t) AND x < $__toTime", FROM, TO)
    assert sql == (
        f"WHERE t >= toDateTime({int(FROM.timestamp())}) AND t <= toDateTime({int(TO.timestamp())})"
        f" AND x < toDateTime({int(TO.timestamp())})"
    )
    assert expand_variables("s = ${s:sqlstring}", {"s": ("a'b", "a'b")}) == "s = 'a''b'"
    with pytest.raises(AssertionError):
        expand_macros("$__timeGroup(t, 1m)", FROM, TO)
    with pytest.raises(AssertionError):
        expand_macros("$__unknown", FROM, TO)
