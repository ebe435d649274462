"""The pushed candle page in a real headless Chromium: the newest candle changes without a reload,
scrolling back loads older bars, a date range can be chosen, and the feed status and the demo
banner show. Real uvicorn, real chDB, real server-sent events; only the feed status (``up``'s
ingestor) is given as a function."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.forming import FormingUpdate
from binance_metrics.store.clickhouse import Store
from binance_metrics.store.forming import insert_forming

from .cdp import Browser
from .support import SCALE, fill, make_app, random_walk, serve

#: 1,200 minutes: more than the page loads at first (500 before the pushed newest three).
LONG = random_walk("BTCUSDT", datetime(2024, 8, 7, 0, 0, tzinfo=UTC), 1200, 61_000 * SCALE, seed=3)

DRAWN = """(() => {
  const chart = document.getElementById("chart");
  const trace = (chart.data || [])[0];
  const label = ((chart.layout || {}).annotations || []).find((a) => a.name === "last-price");
  return {
    rendered: chart.dataset.rendered || "",
    last: chart.dataset.last || "",
    points: trace ? trace.x.length : 0,
    first: trace && trace.x.length ? trace.x[0] : null,
    shapes: chart.querySelectorAll(".boxlayer .trace.boxes path.box").length,
    priceLine: ((chart.layout || {}).shapes || []).map((s) => s.y0),
    priceLabel: label ? label.text : null,
    readout: document.getElementById("readout").textContent,
    feed: document.getElementById("feed").textContent,
    feedState: document.getElementById("feed").dataset.state || "",
    notice: document.getElementById("notice").hidden ? null
      : document.getElementById("notice").textContent,
    banner: document.getElementById("banner").hidden ? null
      : document.getElementById("banner").textContent,
    xaxisVisible: chart.layout ? chart.layout.xaxis.visible : null,
  };
})()"""


def trim(value: object) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


_COLUMNS = ("open", "high", "low", "close", "volume")


def _readout_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _parse_readout_time(readout: str) -> int:
    when = datetime.strptime(readout[:16], "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    return int(when.timestamp()) * 1000


def drawn(browser: Browser) -> dict[str, Any]:
    value = browser.evaluate(DRAWN)
    assert isinstance(value, dict)
    return value


def points_are(count: int) -> str:
    chart = "document.getElementById('chart')"
    return f"((({chart}?.data || [])[0] || {{}}).x || []).length === {count}"


def key(open_time: int, bar: Bar) -> str:
    values = bar.decimals()
    return f"{open_time}|{format(values['close'], 'f')}|{values['trade_count']}"


def test_the_newest_candle_changes_without_a_reload(store: Store, browser: Browser) -> None:
    fill(store, [LONG])
    last_time = LONG.open_times[-1]
    with serve(make_app(store, ["BTCUSDT"])) as base:
        browser.navigate(f"{base}/")
        browser.wait_for(points_are(503), "the newest 503 bars (500 loaded, 3 pushed)")
        first = drawn(browser)
        assert first["last"] == key(last_time, LONG.bars[-1]), first
        assert first["first"] == LONG.open_times[-503]

        # The readout shows the bar under the cursor, exact; away from the chart, the newest.
        box = browser.evaluate(
            "(() => { const r = document.querySelectorAll('#chart path.box')[250]"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box[0], "y": box[1]})
        hovered = browser.wait_for(
            "document.getElementById('readout').textContent.includes('trades') &&"
            " !document.getElementById('readout').textContent.startsWith("
            f"{json.dumps(_readout_time(last_time))}) &&"
            " document.getElementById('readout').textContent",
            "the readout of the hovered candle",
        )
        index = LONG.open_times.index(_parse_readout_time(hovered))
        values = LONG.bars[index].decimals()
        assert hovered == "  ".join(
            [_readout_time(LONG.open_times[index])]
            + [f"{k} {trim(values[c])}" for k, c in zip("OHLCV", _COLUMNS, strict=True)]
            + [f"{values['trade_count']} trades"]
        )
        browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 5, "y": 5})

        # The newest minute grows (as a forming bar or a late trade does): drawn in place.
        # 100 trades: more than the bar it replaces (the table keeps the higher trade count).
        grown = Bar().add(62_345_678_901_234, 7 * SCALE + 1, 8_000_000, 8_000_099, False)
        store.insert_bars([BarUpdate("BTCUSDT", last_time, grown)])
        newest = "document.getElementById('chart').dataset.last"
        browser.wait_for(
            f"{newest} === {json.dumps(key(last_time, grown))}", "the grown newest candle, pushed"
        )
        now = drawn(browser)
        assert now["points"] == 503, now
        close = grown.decimals()["close"]
        # The last-price line at the new close, its label and the readout exact to the digit.
        assert now["priceLine"] == [float(close)], now
        assert now["priceLabel"] == trim(close) == "623456.78901234"
        values = grown.decimals()
        for column, letter in (("open", "O"), ("high", "H"), ("low", "L"), ("close", "C")):
            assert f"{letter} {trim(values[column])}" in now["readout"], now
        assert f"V {trim(values['volume'])}  100 trades" in now["readout"], now

        # A new minute: appended.
        nxt = Bar().add(62_000 * SCALE, SCALE, 8_000_100, 8_000_100, True)
        store.insert_bars([BarUpdate("BTCUSDT", last_time + 60_000, nxt)])
        browser.wait_for(points_are(504), "the next minute's candle, pushed")
        assert drawn(browser)["last"] == key(last_time + 60_000, nxt)
    assert browser.problems == [], browser.problems


def test_the_forming_candle_moves_without_a_reload(store: Store, browser: Browser) -> None:
    """The dataflow's forming bar (binance.ohlcv_forming) is the last candle; each snapshot the
    dataflow writes moves it, and its readout says it is forming."""
    fill(store, [LONG])
    forming_at = LONG.open_times[-1] + 60_000
    with serve(make_app(store, ["BTCUSDT"])) as base:
        browser.navigate(f"{base}/")
        browser.wait_for(points_are(503), "the newest bars")
        first = Bar().add(61_000 * SCALE, SCALE, 8_000_000, 8_000_000, True)
        insert_forming(store, [FormingUpdate("BTCUSDT", forming_at, first)])
        browser.wait_for(points_are(504), "the forming candle, pushed")
        assert drawn(browser)["last"] == key(forming_at, first)
        assert "forming" in browser.evaluate("document.getElementById('readout').textContent")
        moved = Bar().add(61_000 * SCALE, SCALE, 8_000_000, 8_000_000, True)
        moved.add(61_500 * SCALE, 2 * SCALE, 8_000_001, 8_000_001, False)
        insert_forming(store, [FormingUpdate("BTCUSDT", forming_at, moved)])
        newest = "document.getElementById('chart').dataset.last"
        browser.wait_for(
            f"{newest} === {json.dumps(key(forming_at, moved))}", "the forming candle, moved"
        )
        assert drawn(browser)["points"] == 504
    assert browser.problems == [], browser.problems


def test_scrolling_back_loads_older_bars_and_a_date_range_can_be_chosen(
    store: Store, browser: Browser
) -> None:
    fill(store, [LONG])
    with serve(make_app(store, ["BTCUSDT"])) as base:
        browser.navigate(f"{base}/?symbol=BTCUSDT&interval=1m")
        browser.wait_for(points_are(503), "the newest bars")
        # Scroll the mouse wheel over the chart (scrollZoom): it zooms out past the first bar.
        box = browser.evaluate(
            "(() => { const r = document.querySelector('#chart .nsewdrag').getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        seen = set()
        # Plotly zooms about 10 % per wheel event; older bars load while it goes on (a fetch
        # each), so keep turning the wheel until they are all there, however slow the machine.
        deadline = time.monotonic() + 90
        while 1200 not in seen and time.monotonic() < deadline:
            browser.send(
                "Input.dispatchMouseEvent",
                {"type": "mouseWheel", "x": box[0], "y": box[1], "deltaX": 0, "deltaY": 1500},
            )
            seen.add(drawn(browser)["points"])
            time.sleep(0.05)
        # Page by page: the 500 bars before the first loaded one, then the last 197.
        assert seen <= {503, 1003, 1200} and {1003, 1200} <= seen, seen
        assert drawn(browser)["first"] == LONG.open_times[0]

        # A date range (UTC): exactly the bars in [from, to).
        start, end = LONG.open_times[100], LONG.open_times[160]
        browser.evaluate(
            "(() => { const f = document.getElementById('from'), t = document.getElementById('to');"
            f" f.value = {json.dumps(_local(start))}; t.value = {json.dumps(_local(end))};"
            " t.dispatchEvent(new Event('change')); })()"
        )
        browser.wait_for(points_are(60), "the 60 bars of the range")
        ranged = drawn(browser)
        assert ranged["first"] == start and ranged["last"] == key(
            start + 59 * 60_000, LONG.bars[159]
        )
        assert browser.evaluate("location.search").endswith(
            f"&from={_local(start).replace(':', '%3A')}&to={_local(end).replace(':', '%3A')}"
        )
        # A closed range does not move: a new bar is not drawn into it.
        browser.evaluate("document.getElementById('live').click()")
        browser.wait_for(points_are(503), "back to the newest bars, live")
    assert browser.problems == [], browser.problems


def _local(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M")


def test_feed_status_and_an_unreachable_binance_are_shown(store: Store, browser: Browser) -> None:
    store.command("TRUNCATE TABLE binance.ohlcv")
    reason = (
        "cannot reach stream.binance.com:9443: DNS lookup failed "
        "(gaierror -2: Name or service not known)"
    )
    state: dict[str, Any] = {
        "feeds": {"BTCUSDT": {"state": "unreachable", "reason": reason}},
        "exchange": {"kind": "binance", "replayed": False},
    }

    def status() -> Mapping[str, Any]:
        return state

    with serve(make_app(store, ["BTCUSDT"], status)) as base:
        browser.navigate(f"{base}/")
        browser.wait_for(
            "document.getElementById('notice')?.hidden === false", "the unreachable notice"
        )
        page = drawn(browser)
        assert page["notice"] == (
            f'Binance is unreachable: {reason}. Offline? "make demo" replays a recording '
            "through the same pipeline."
        )
        assert page["feed"] == f"feed unreachable: {reason}" and page["feedState"] == "unreachable"
        assert page["xaxisVisible"] is False, "no empty placeholder axes"

        # The demo: a banner says the bars are replayed; the feed's state follows.
        state = {
            "feeds": {"BTCUSDT": {"state": "connected", "reason": None}},
            "exchange": {"kind": "replay", "replayed": True, "files": ["a.jsonl"], "speed": 10,
                         "ended": False},
        }  # fmt: skip
        browser.wait_for("document.getElementById('banner')?.hidden === false", "the demo banner")
        page = drawn(browser)
        assert page["banner"] == (
            "Demo: replay of a.jsonl at speed 10, times moved to today — not live Binance data."
        )
        assert page["feed"] == "feed connected" and page["notice"] is None
    assert browser.problems == [], browser.problems
