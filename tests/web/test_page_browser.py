"""The candle page in a real headless Chromium, served by a real uvicorn over HTTP from chDB.

Loads the page, waits until plotly has drawn the candles (trace data and SVG shapes), switches
symbol and interval the way the pickers do, checks that a bar written while the page is open
shows up on its own, and saves screenshots (their paths are printed; run with ``-s`` to see them,
or set ``WEB_SCREENSHOT_DIR`` to keep copies).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from binance_metrics.bars import Bar, BarUpdate
from binance_metrics.store.clickhouse import Store

from .cdp import Browser
from .support import BTC, ETH, SCALE, fill, make_app, serve

PNG = b"\x89PNG\r\n\x1a\n"


def trim(value: object) -> str:
    """A decimal as the page displays it: fixed point without trailing zeros."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# What plotly drew: the candlestick trace's data and the number of candle shapes in the SVG.
DRAWN = """(() => {
  const chart = document.getElementById("chart");
  const trace = (chart.data || [])[0];
  return {
    rendered: chart.dataset.rendered || "",
    type: trace ? trace.type : null,
    points: trace ? trace.x.length : 0,
    first: trace && trace.x.length ? trace.x[0] : null,
    shapes: chart.querySelectorAll(".boxlayer .trace.boxes path.box").length,
    volumeBars: chart.querySelectorAll(".barlayer .trace.bars .point").length,
    symbol: document.getElementById("symbol").value,
    interval: document.getElementById("interval").value,
    status: document.getElementById("status").textContent,
    search: location.search,
  };
})()"""


def pick(select: str, value: str) -> str:
    # Native <select> pop-ups are not part of the page's DOM, so set the value and fire the
    # same "change" event a user's choice fires.
    return (
        f"(() => {{ const s = document.getElementById({json.dumps(select)});"
        f" s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change'));"
        " return s.value; })()"
    )


MATCHES = "document.getElementById('matches').textContent"


def type_in(browser: Browser, text: str) -> None:
    """Focus the symbol box, clear it, and type ``text`` as a user does (input events)."""
    browser.evaluate(
        "(() => { const s = document.getElementById('symbol'); s.focus(); s.select(); })()"
    )
    browser.send("Input.insertText", {"text": text})


def press(browser: Browser, key: str) -> None:
    codes = {"Enter": 13, "Escape": 27}
    for kind in ("keyDown", "keyUp"):
        browser.send(
            "Input.dispatchKeyEvent",
            {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": codes[key]},
        )


def rendered(symbol: str, interval: str, count: int) -> str:
    prefix = f"{symbol}|{interval}|{count}|"
    marker = "(document.getElementById('chart')?.dataset.rendered || '')"
    return f"{marker}.startsWith({json.dumps(prefix)})"


def keep(path: Path) -> None:
    print(f"screenshot: {path}")
    if target := os.environ.get("WEB_SCREENSHOT_DIR"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def test_candles_are_drawn_follow_the_pickers_and_update_live(
    store: Store, browser: Browser, tmp_path: Path
) -> None:
    fill(store)
    # SOLUSDT is configured first but has no bars: the page must open on ETHUSDT.
    with serve(make_app(store, ["SOLUSDT", "ETHUSDT"])) as base:
        browser.navigate(f"{base}/")
        browser.wait_for(rendered("ETHUSDT", "1m", len(ETH.bars)), "ETHUSDT 1m candles")
        eth = browser.evaluate(DRAWN)
        assert eth["type"] == "candlestick"
        assert eth["points"] == len(ETH.bars)
        assert eth["first"] == ETH.open_times[0]
        # Every bar is drawn as an SVG shape, zero-trade bars (flat candles) included.
        assert eth["shapes"] == len(ETH.bars), eth
        assert eth["volumeBars"] == len(ETH.bars), eth
        assert eth["status"].startswith(f"{len(ETH.bars)} bars · last close "), eth
        symbols = browser.evaluate(
            "[...document.getElementById('symbols').options].map(o => [o.value, o.label])"
        )
        assert symbols == [
            ["SOLUSDT", "no bars yet"],
            ["ETHUSDT", ""],
            ["BTCUSDT", ""],
        ]
        assert browser.evaluate("document.getElementById('market').textContent") == "Spot"
        # Hovering a candle shows its stored decimals, not plotly's rounding of the floats.
        box = browser.evaluate(
            "(() => { const r = document.querySelectorAll('#chart path.box')[5]"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box[0], "y": box[1]})
        label = browser.wait_for(
            "document.querySelector('#chart .hoverlayer')?.textContent", "a hover label"
        )
        lines = [
            [
                f"{column} {trim(bar.decimals()[column])}"
                for column in ("open", "high", "low", "close")
            ]
            for bar in ETH.bars
        ]
        assert any(all(line in label for line in bar) for bar in lines), label
        keep(browser.screenshot(tmp_path / "candles-ethusdt-1m.png"))

        # The symbol box, by keyboard: a text matching several symbols keeps the chart and
        # says how many match; Escape restores the box; a text only BTCUSDT matches picks it.
        type_in(browser, "usdt")
        assert browser.evaluate(MATCHES) == '3 of 3 symbols match "usdt"'
        press(browser, "Enter")
        assert browser.evaluate(DRAWN)["rendered"].startswith("ETHUSDT|1m|")
        press(browser, "Escape")
        assert browser.evaluate("document.getElementById('symbol').value") == "ETHUSDT"
        type_in(browser, "btc")
        assert browser.evaluate(MATCHES) == '1 of 3 symbols match "btc"'
        press(browser, "Enter")
        browser.wait_for(rendered("BTCUSDT", "1m", len(BTC.bars)), "BTCUSDT 1m candles")
        assert browser.evaluate("document.getElementById('symbol').value") == "BTCUSDT"
        btc = browser.evaluate(DRAWN)
        assert (btc["points"], btc["first"]) == (len(BTC.bars), BTC.open_times[0])
        assert (btc["points"], btc["first"]) != (eth["points"], eth["first"])
        assert btc["shapes"] == len(BTC.bars), btc

        assert browser.evaluate(pick("interval", "15m")) == "15m"
        browser.wait_for(rendered("BTCUSDT", "15m", 20), "BTCUSDT 15m candles")
        quarter = browser.evaluate(DRAWN)
        assert quarter["shapes"] == 20 and quarter["first"] == BTC.open_times[0], quarter
        assert quarter["search"] == "?symbol=BTCUSDT&interval=15m"

        # The pipeline writes a bar while the page is open: it appears without a reload.
        next_minute = BTC.open_times[-1] + 60_000
        bar = Bar().add(62_000 * SCALE, 3 * SCALE, 9_000_000, 9_000_000, False)
        store.insert_bars([BarUpdate("BTCUSDT", next_minute, bar)])
        browser.wait_for(rendered("BTCUSDT", "15m", 21), "the new bar, pushed", timeout=15)
        keep(browser.screenshot(tmp_path / "candles-btcusdt-15m.png"))

        # A configured symbol without bars: an empty chart that says so, not an error.
        browser.evaluate(pick("symbol", "SOLUSDT"))
        browser.wait_for(rendered("SOLUSDT", "15m", 0), "the empty SOLUSDT chart")
        empty = browser.evaluate(DRAWN)
        assert empty["shapes"] == 0 and empty["status"].startswith("no bars yet"), empty
        note = browser.evaluate("document.querySelector('#chart .annotation-text')?.textContent")
        assert note == "no 15m bars of SOLUSDT yet"

        # A reload keeps the choice (it is in the URL).
        browser.navigate(f"{base}/?symbol=BTCUSDT&interval=15m")
        browser.wait_for(rendered("BTCUSDT", "15m", 21), "BTCUSDT 15m after a reload")

    for shot in tmp_path.glob("*.png"):
        data = shot.read_bytes()
        assert data.startswith(PNG) and len(data) > 20_000, (shot, len(data))
    assert browser.problems == [], browser.problems
