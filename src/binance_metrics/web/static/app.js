// The live candle page: bars pushed over server-sent events (api/live), older ones loaded on
// scroll or for a chosen date range (api/bars), drawn with plotly.
// Everything the server sends is inserted as text (textContent, plotly data), never as HTML.
"use strict";

(() => {
  const PAGE = 500; // bars per history request
  const RANGE_LIMIT = 5000; // the API's maximum, for a chosen date range
  const SYMBOLS_EVERY_MS = 30000; // the symbol list is refreshed: new symbols appear
  const UP = "#26a69a";
  const DOWN = "#ef5350";
  const SYMBOL = /^[A-Z0-9_]{2,30}$/; // the API's rule; anything else in the URL is ignored
  const MARKETS = { spot: "Spot", um: "USDⓈ-M futures", cm: "COIN-M futures" }; // MARKET

  const $ = (id) => document.getElementById(id);
  const symbolInput = $("symbol"); // a search box over the symbols (datalist "symbols")
  const symbolList = $("symbols");
  const matchesLine = $("matches");
  const marketBadge = $("market");
  const intervalSelect = $("interval");
  const fromInput = $("from");
  const toInput = $("to");
  const statusLine = $("status");
  const feedLine = $("feed");
  const readout = $("readout");
  const banner = $("banner");
  const chart = $("chart");
  const notice = $("notice");

  // The chart's state for the current choice (symbol, interval, range).
  let view = null;
  let source = null; // the EventSource
  let feedStatus = { feeds: {} };
  let symbolsTimer = null;
  let known = []; // every symbol offered, in the API's order
  let chosen = ""; // the symbol of the chart (the box may hold a search being typed)
  const draws = []; // {at, key}: when each newest bar was drawn (benchmarks read it)
  window.candleDraws = draws;

  // Exact decimal strings without trailing zeros ("61602.02000000" -> "61602.02"), for display.
  function trim(decimal) {
    return decimal.includes(".") ? decimal.replace(/0+$/, "").replace(/\.$/, "") : decimal;
  }

  function utc(ms) {
    return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
  }

  function setStatus(text, isError = false) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", isError);
  }

  async function getJSON(path, signal) {
    const response = await fetch(path, { signal, cache: "no-store" });
    if (!response.ok) {
      let detail = "";
      try {
        const body = await response.json();
        detail = typeof body.detail === "string" ? `: ${body.detail}` : "";
      } catch {
        // not JSON: the status code says enough
      }
      throw new Error(`HTTP ${response.status}${detail}`);
    }
    return response.json();
  }

  function fillSelect(select, values, labels, selected) {
    const same =
      select.options.length === values.length &&
      values.every((v, i) => select.options[i].value === v && select.options[i].text === labels[i]);
    if (!same) {
      select.replaceChildren(...values.map((v, i) => new Option(labels[i], v)));
    }
    select.value = selected;
  }

  // The datalist the box offers (the browser filters it as the user types): each symbol, with
  // "no bars yet" as its label when it has none.
  function fillSymbols(symbols, withBars) {
    const labels = symbols.map((s) => (withBars.has(s) ? "" : "no bars yet"));
    const options = symbolList.options;
    const same = options.length === symbols.length &&
      symbols.every((s, i) => options[i].value === s && options[i].label === labels[i]);
    if (same) return;
    symbolList.replaceChildren(...symbols.map((s, i) => {
      const option = document.createElement("option");
      option.value = s;
      if (labels[i]) option.label = labels[i];
      return option;
    }));
  }

  async function loadSymbols() {
    const info = await getJSON("api/symbols");
    const params = new URLSearchParams(location.search);
    const asked = (params.get("symbol") ?? "").toUpperCase();
    const current = chosen || (SYMBOL.test(asked) ? asked : "");
    const symbols = [...info.symbols];
    const wanted = current || info.default;
    // A symbol asked for in the URL is kept even before it has bars (the API validates it).
    if (wanted && !symbols.includes(wanted)) symbols.push(wanted);
    known = symbols;
    fillSymbols(symbols, new Set(info.with_bars));
    chosen = wanted ?? "";
    if (document.activeElement !== symbolInput) symbolInput.value = chosen; // not while typing
    marketBadge.textContent = MARKETS[info.market] ?? info.market ?? "";
    marketBadge.dataset.market = info.market ?? "";
    if (intervalSelect.options.length === 0) {
      const interval = info.intervals.includes(params.get("interval"))
        ? params.get("interval") : info.intervals[0];
      fillSelect(intervalSelect, info.intervals, info.intervals, interval);
      fromInput.value = params.get("from") ?? "";
      toInput.value = params.get("to") ?? "";
    }
  }

  // A datetime-local value ("2024-08-09T00:00") is read as UTC, as the page shows UTC throughout.
  function rangeBound(input) {
    const ms = input.value ? Date.parse(`${input.value}Z`) : NaN;
    return Number.isFinite(ms) ? String(ms) : null;
  }

  // -- the bars of the view ----------------------------------------------------------------

  // Bars in by open time: a newer version of a bar replaces it, a new one is added.
  function merge(bars) {
    const byTime = view.byTime;
    for (const bar of bars) {
      if (!byTime.has(bar.open_time)) view.bars.push(bar);
      else view.bars[view.bars.findIndex((b) => b.open_time === bar.open_time)] = bar;
      byTime.set(bar.open_time, bar);
    }
    view.bars.sort((a, b) => a.open_time - b.open_time);
  }

  async function loadHistory(end, limit = PAGE) {
    const query = new URLSearchParams({ symbol: view.symbol, interval: view.interval, limit });
    if (view.start) query.set("start", view.start);
    if (end !== null) query.set("end", end);
    const data = await getJSON(`api/bars?${query}`, view.abort.signal);
    return data.bars;
  }

  // The chart shows time before the earliest loaded bar (a scroll or zoom): load older bars.
  function loadOlderIfShown() {
    const range = chart.layout && chart.layout.xaxis && chart.layout.xaxis.range;
    if (!range || !view || !view.bars.length || chart.layout.xaxis.autorange) return;
    const left = range[0];
    const leftMs = typeof left === "number" ? left : Date.parse(`${left}Z`.replace(" ", "T"));
    if (leftMs < view.bars[0].open_time) loadOlder();
  }

  // The page of bars before the earliest loaded one; again while the chart shows time before it.
  async function loadOlder() {
    const mine = view;
    if (mine.loadingOlder || mine.exhausted || !mine.bars.length) return;
    mine.loadingOlder = true;
    try {
      const older = await loadHistory(mine.bars[0].open_time);
      if (mine !== view) return;
      if (older.length < PAGE) mine.exhausted = true;
      merge(older);
      await draw();
      mine.loadingOlder = false;
      loadOlderIfShown(); // the user may have zoomed out further meanwhile
    } catch (err) {
      if (err.name !== "AbortError") setStatus(`loading older bars failed (${err.message})`, true);
    } finally {
      mine.loadingOlder = false;
    }
  }

  async function onSnapshot(bars) {
    const mine = view;
    // History ends where the pushed bars begin: from here on every message continues the last.
    const end = view.end ?? (bars.length ? bars[0].open_time : null);
    const limit = view.start ? RANGE_LIMIT : PAGE;
    const history = await loadHistory(end, limit);
    if (mine !== view) return;
    view.bars = [];
    view.byTime = new Map();
    view.exhausted = history.length < limit;
    merge(history);
    if (!view.end) merge(bars);
    view.loaded = true;
    for (const queued of view.queued.splice(0)) merge(queued);
    await draw();
  }

  function onBars(message) {
    if (view.end) return; // a closed date range does not move
    if (!view.loaded) {
      view.queued.push(message.bars);
      return;
    }
    if (message.reset || !view.bars.length) {
      onSnapshot(message.bars).catch(showError);
      return;
    }
    merge(message.bars);
    draw().catch(showError);
  }

  function showError(err) {
    if (err.name !== "AbortError") setStatus(`update failed (${err.message}); retrying`, true);
  }

  // -- drawing -----------------------------------------------------------------------------

  function feedOf(symbol) {
    return (feedStatus.feeds || {})[symbol] ?? null;
  }

  // Over an empty chart: why it is empty, when the feed knows (as text, never as HTML).
  function showNotice(empty) {
    const feed = view ? feedOf(view.symbol) : null;
    const unreachable = empty && feed && feed.state === "unreachable";
    notice.hidden = !unreachable;
    if (unreachable) {
      notice.textContent = `Binance is unreachable: ${feed.reason}. Offline? "make demo" ` +
        "replays a recording through the same pipeline.";
    }
  }

  function layout(empty, last) {
    const axis = { gridcolor: "#222a33", zerolinecolor: "#222a33", visible: !empty };
    const replay = feedStatus.exchange && feedStatus.exchange.replayed ? " · replayed (demo)" : "";
    const market = marketBadge.textContent ? ` · ${marketBadge.textContent}` : "";
    return {
      title: { text: `${view.symbol}${market} · ${view.interval} · UTC${replay}`, x: 0.01, font: { size: 15 } },
      // Same uirevision while the choice stays: a user's zoom survives the updates.
      uirevision: view.key,
      paper_bgcolor: "#0f1419",
      plot_bgcolor: "#0f1419",
      font: { color: "#d0d6de" },
      margin: { l: 70, r: 90, t: 40, b: 40 },
      showlegend: false,
      hovermode: "x unified",
      xaxis: { ...axis, type: "date", rangeslider: { visible: false } },
      yaxis: { ...axis, domain: [0.27, 1], title: { text: "price" }, tickformat: "~r" },
      yaxis2: { ...axis, domain: [0, 0.21], anchor: "x", title: { text: "volume" } },
      // The last price: a dotted line across the chart, its exact decimal at the right.
      shapes: last ? [{ type: "line", xref: "paper", x0: 0, x1: 1, yref: "y",
                        y0: Number(last.close), y1: Number(last.close),
                        line: { color: "#d0d6de", width: 1, dash: "dot" } }] : [],
      annotations: empty
        ? [{ text: `no ${view.interval} bars of ${view.symbol} yet`, showarrow: false, xref: "paper", yref: "paper",
             x: 0.5, y: 0.6, font: { size: 16 } }]
        : [{ text: trim(last.close), name: "last-price", showarrow: false, xref: "paper",
             x: 1, xanchor: "left", yref: "y", y: Number(last.close),
             bgcolor: Number(last.close) >= Number(last.open) ? UP : DOWN,
             font: { color: "#0f1419", size: 12 } }],
    };
  }

  function describe(bar) {
    if (!bar) return "";
    const parts = [
      utc(bar.open_time), `O ${trim(bar.open)}`, `H ${trim(bar.high)}`, `L ${trim(bar.low)}`,
      `C ${trim(bar.close)}`, `V ${trim(bar.volume)}`, `${bar.trade_count} trades`,
    ];
    if (bar.closed === false) parts.push("forming");
    return parts.join("  ");
  }

  function draw() {
    const { bars } = view;
    const x = bars.map((b) => b.open_time); // epoch ms: plotly draws it as a UTC date
    const open = bars.map((b) => Number(b.open));
    const close = bars.map((b) => Number(b.close));
    const last = bars[bars.length - 1];
    const candles = {
      type: "candlestick",
      name: view.symbol,
      x,
      open,
      high: bars.map((b) => Number(b.high)),
      low: bars.map((b) => Number(b.low)),
      close,
      // Hover shows the stored decimals, not plotly's rounding of the floats it draws.
      text: bars.map((b) =>
        [`open ${trim(b.open)}`, `high ${trim(b.high)}`, `low ${trim(b.low)}`,
         `close ${trim(b.close)}`, `${b.trade_count} trades`].join("<br>")),
      hoverinfo: "x+text",
      increasing: { line: { color: UP }, fillcolor: UP },
      decreasing: { line: { color: DOWN }, fillcolor: DOWN },
      xaxis: "x",
      yaxis: "y",
    };
    const volume = {
      type: "bar",
      name: "volume",
      x,
      y: bars.map((b) => Number(b.volume)),
      text: bars.map((b) => trim(b.volume)),
      hovertemplate: "volume %{text}<extra></extra>",
      textposition: "none",
      marker: { color: close.map((c, i) => (c >= open[i] ? UP : DOWN)) },
      xaxis: "x",
      yaxis: "y2",
    };
    // scrollZoom: the wheel zooms out into older bars, which then load.
    const config = { responsive: true, displaylogo: false, scrollZoom: true };
    const mine = view;
    return Plotly.react(chart, [candles, volume], layout(!bars.length, last), config).then(() => {
      if (mine !== view) return;
      // Markers for tests and scripts: what is drawn now, and when the newest bar was drawn.
      chart.dataset.rendered = `${mine.symbol}|${mine.interval}|${bars.length}|${x[0] ?? ""}`;
      const key = last ? `${last.open_time}|${last.close}|${last.trade_count}` : "";
      chart.dataset.last = key;
      if (key && draws[draws.length - 1]?.key !== key) {
        draws.push({ at: Date.now(), key });
        if (draws.length > 10000) draws.splice(0, 5000);
      }
      if (!mine.hovering) readout.textContent = describe(last);
      showNotice(!bars.length);
      const time = new Date().toISOString().slice(11, 19);
      const range = mine.end ? " · date range (not live)" : "";
      setStatus(last
        ? `${bars.length} bars · last close ${trim(last.close)} · updated ${time} UTC${range}`
        : `no bars yet · updated ${time} UTC${range}`);
    });
  }

  function showFeed() {
    const exchange = feedStatus.exchange;
    banner.hidden = !(exchange && exchange.replayed);
    if (!banner.hidden) {
      const ended = exchange.ended ? " The recording has ended." : "";
      banner.textContent = `Demo: replay of ${exchange.files.join(", ")} at speed ` +
        `${exchange.speed}, times moved to today — not live Binance data.${ended}`;
    }
    const feed = view ? feedOf(view.symbol) : null;
    const store = feedStatus.store ? ` · store: ${feedStatus.store}` : "";
    if (!feed) {
      feedLine.textContent = store ? store.slice(3) : "";
      feedLine.dataset.state = store ? "store" : "";
      return;
    }
    feedLine.dataset.state = feed.state;
    feedLine.textContent = `feed ${feed.state}${feed.reason ? `: ${feed.reason}` : ""}${store}`;
  }

  // -- the choice and its event stream -----------------------------------------------------

  function open() {
    source?.close();
    view?.abort.abort();
    const symbol = chosen;
    if (!symbol) {
      setStatus("no symbols yet: is the pipeline running?");
      return;
    }
    const interval = intervalSelect.value;
    const start = rangeBound(fromInput);
    const end = rangeBound(toInput);
    view = {
      symbol, interval, start, end, key: `${symbol}|${interval}|${start}|${end}`,
      bars: [], byTime: new Map(), loaded: false, queued: [], exhausted: false,
      loadingOlder: false, hovering: false, abort: new AbortController(),
    };
    const query = new URLSearchParams({ symbol, interval });
    const events = new EventSource(`api/live?${query}`);
    source = events;
    events.addEventListener("snapshot", (e) => {
      if (events !== source) return;
      onSnapshot(JSON.parse(e.data).bars).catch(showError);
    });
    events.addEventListener("bars", (e) => {
      if (events === source) onBars(JSON.parse(e.data));
    });
    events.addEventListener("status", (e) => {
      if (events !== source) return;
      feedStatus = JSON.parse(e.data);
      showFeed();
      if (view.loaded && !view.bars.length) draw().catch(showError); // the empty note may change
    });
    events.addEventListener("error", () => {
      // EventSource reconnects by itself; a reconnect starts with a fresh snapshot.
      if (events === source) {
        view.loaded = false;
        view.queued = [];
        setStatus("connection to the server lost; reconnecting…", true);
      }
    });
  }

  function choose() {
    const query = new URLSearchParams({ symbol: chosen, interval: intervalSelect.value });
    if (fromInput.value) query.set("from", fromInput.value);
    if (toInput.value) query.set("to", toInput.value);
    history.replaceState(null, "", `?${query}`);
    setStatus("loading…");
    open();
  }

  async function start() {
    try {
      await loadSymbols();
    } catch (err) {
      setStatus(`loading symbols failed (${err.message}); retrying`, true);
      setTimeout(start, 3000);
      return;
    }
    open();
    symbolsTimer = setInterval(() => loadSymbols().catch(() => {}), SYMBOLS_EVERY_MS);
  }

  // -- the symbol search box ----------------------------------------------------------------

  // The symbols a typed text matches (case-insensitive, anywhere in the name).
  function matching(text) {
    const typed = text.trim().toUpperCase();
    return typed ? known.filter((s) => s.includes(typed)) : known;
  }

  function showMatches(text, found, isError = false) {
    matchesLine.textContent = text ? `${found} of ${known.length} symbols match "${text.trim()}"` : "";
    matchesLine.classList.toggle("error", isError);
  }

  // Enter, a pick from the list, or leaving the box: the symbol typed, or the only one that
  // matches, becomes the chart's; otherwise the chart stays and the line says why.
  function commit() {
    const typed = symbolInput.value.trim().toUpperCase();
    const found = matching(typed);
    const symbol = known.includes(typed) ? typed : found.length === 1 ? found[0] : null;
    if (!symbol) {
      if (typed) showMatches(typed, found.length, true);
      return;
    }
    symbolInput.value = symbol;
    showMatches("", 0);
    if (symbol === chosen && view && view.symbol === symbol) return;
    chosen = symbol;
    choose();
  }

  symbolInput.addEventListener("input", (e) => {
    // Picking from the list replaces the text with a whole symbol: take it at once.
    if (e.inputType === "insertReplacementText" || (!e.inputType && known.includes(symbolInput.value))) {
      commit();
      return;
    }
    showMatches(symbolInput.value, matching(symbolInput.value).length);
  });
  symbolInput.addEventListener("change", commit);
  symbolInput.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      commit();
    } else if (e.key === "Escape") {
      e.preventDefault(); // a search box would clear itself
      symbolInput.value = chosen; // back to the chart's symbol
      showMatches("", 0);
    }
  });
  intervalSelect.addEventListener("change", choose);
  fromInput.addEventListener("change", choose);
  toInput.addEventListener("change", choose);
  $("live").addEventListener("click", () => {
    fromInput.value = "";
    toInput.value = "";
    choose();
  });

  // plotly's events are on the element once it is a plot.
  function hookChart() {
    if (!chart.on) return;
    chart.on("plotly_relayout", (change) => {
      if ("xaxis.range[0]" in change || "xaxis.range" in change) loadOlderIfShown();
    });
    chart.on("plotly_hover", (event) => {
      const point = event.points && event.points[0];
      const bar = point && view && view.bars[point.pointIndex];
      if (bar) {
        view.hovering = true;
        readout.textContent = describe(bar);
      }
    });
    chart.on("plotly_unhover", () => {
      if (!view) return;
      view.hovering = false;
      readout.textContent = describe(view.bars[view.bars.length - 1]);
    });
  }
  Plotly.newPlot(chart, [], {
    paper_bgcolor: "#0f1419", plot_bgcolor: "#0f1419",
    xaxis: { visible: false }, yaxis: { visible: false },
  }, { responsive: true, displaylogo: false }).then(hookChart);

  // No stream while the tab is hidden; a fresh one (and snapshot) when it is shown again.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      source?.close();
      source = null;
    } else if (view) {
      open();
    }
  });
  start();
})();
