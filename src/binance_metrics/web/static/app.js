// The live candle page: polls /api/bars and redraws candles and volume with plotly.
// Everything the server sends is inserted as text (textContent, plotly data), never as HTML.
"use strict";

(() => {
  const POLL_MS = 3000;
  const SYMBOLS_EVERY = 10; // refresh the symbol list every 10th poll: new symbols appear
  const LIMIT = 500;
  const UP = "#26a69a";
  const DOWN = "#ef5350";
  const SYMBOL = /^[A-Z0-9_]{2,30}$/; // the API's rule; anything else in the URL is ignored

  const symbolSelect = document.getElementById("symbol");
  const intervalSelect = document.getElementById("interval");
  const statusLine = document.getElementById("status");
  const chart = document.getElementById("chart");

  let timer = null;
  let polls = 0;
  // Bumped on every picker change: a response for an earlier choice is dropped, not drawn.
  let generation = 0;
  let controller = null;

  // Exact decimal strings without trailing zeros ("61602.02000000" -> "61602.02"), for display.
  function trim(decimal) {
    return decimal.includes(".") ? decimal.replace(/0+$/, "").replace(/\.$/, "") : decimal;
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

  async function loadSymbols(signal) {
    const info = await getJSON("api/symbols", signal);
    const asked = (new URLSearchParams(location.search).get("symbol") ?? "").toUpperCase();
    const current = symbolSelect.value || (SYMBOL.test(asked) ? asked : "");
    const symbols = [...info.symbols];
    const wanted = current || info.default;
    // A symbol asked for in the URL is kept even before it has bars (the API validates it).
    if (wanted && !symbols.includes(wanted)) symbols.push(wanted);
    const withBars = new Set(info.with_bars);
    const labels = symbols.map((s) => (withBars.has(s) ? s : `${s} (no bars yet)`));
    fillSelect(symbolSelect, symbols, labels, wanted ?? "");

    if (intervalSelect.options.length === 0) {
      const asked = new URLSearchParams(location.search).get("interval");
      const interval = info.intervals.includes(asked) ? asked : info.intervals[0];
      fillSelect(intervalSelect, info.intervals, info.intervals, interval);
    }
  }

  function layout(symbol, interval, empty) {
    const axis = { gridcolor: "#222a33", zerolinecolor: "#222a33" };
    return {
      title: { text: `${symbol} · ${interval} · UTC`, x: 0.01, font: { size: 15 } },
      // Same uirevision while symbol and interval stay: a user's zoom survives the refreshes.
      uirevision: `${symbol}|${interval}`,
      paper_bgcolor: "#0f1419",
      plot_bgcolor: "#0f1419",
      font: { color: "#d0d6de" },
      margin: { l: 70, r: 20, t: 40, b: 40 },
      showlegend: false,
      hovermode: "x unified",
      xaxis: { ...axis, type: "date", rangeslider: { visible: false } },
      yaxis: { ...axis, domain: [0.27, 1], title: { text: "price" }, tickformat: "~r" },
      yaxis2: { ...axis, domain: [0, 0.21], anchor: "x", title: { text: "volume" } },
      annotations: empty
        ? [{ text: `no ${interval} bars of ${symbol} yet`, showarrow: false,
             xref: "paper", yref: "paper", x: 0.5, y: 0.6, font: { size: 16 } }]
        : [],
    };
  }

  function render(data) {
    const bars = data.bars;
    const x = bars.map((b) => b.open_time); // epoch ms: plotly draws it as a UTC date
    const open = bars.map((b) => Number(b.open));
    const close = bars.map((b) => Number(b.close));
    const candles = {
      type: "candlestick",
      name: data.symbol,
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
      // The exact decimal and the trade count in the hover text, as the API sent them.
      text: bars.map((b) => trim(b.volume)),
      hovertemplate: "volume %{text}<extra></extra>",
      textposition: "none",
      marker: { color: close.map((c, i) => (c >= open[i] ? UP : DOWN)) },
      xaxis: "x",
      yaxis: "y2",
    };
    const config = { responsive: true, displaylogo: false };
    return Plotly.react(chart, [candles, volume], layout(data.symbol, data.interval, !bars.length), config)
      .then(() => {
        // A marker for tests and scripts: what is drawn now.
        chart.dataset.rendered = `${data.symbol}|${data.interval}|${bars.length}|${x[0] ?? ""}`;
        const last = bars[bars.length - 1];
        const time = new Date().toISOString().slice(11, 19);
        setStatus(last
          ? `${bars.length} bars · last close ${trim(last.close)} · updated ${time} UTC`
          : `no bars yet · updated ${time} UTC`);
      });
  }

  async function refresh() {
    clearTimeout(timer);
    controller?.abort();
    controller = new AbortController();
    const { signal } = controller;
    const mine = generation;
    try {
      if (polls++ % SYMBOLS_EVERY === 0 || !symbolSelect.value) await loadSymbols(signal);
      const symbol = symbolSelect.value;
      if (!symbol) {
        setStatus("no symbols yet: is the pipeline running?");
        return;
      }
      const query = new URLSearchParams({ symbol, interval: intervalSelect.value, limit: LIMIT });
      const data = await getJSON(`api/bars?${query}`, signal);
      if (mine === generation) await render(data);
    } catch (err) {
      if (err.name !== "AbortError") setStatus(`update failed (${err.message}); retrying`, true);
    } finally {
      // Only the latest request schedules the next one: never two polling chains.
      if (signal === controller.signal && !document.hidden) timer = setTimeout(refresh, POLL_MS);
    }
  }

  function choose() {
    generation += 1;
    const query = new URLSearchParams({ symbol: symbolSelect.value, interval: intervalSelect.value });
    history.replaceState(null, "", `?${query}`);
    setStatus("loading…");
    refresh();
  }

  symbolSelect.addEventListener("change", choose);
  intervalSelect.addEventListener("change", choose);
  // No polling while the tab is hidden; catch up at once when it is shown again.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(timer);
    else refresh();
  });
  refresh();
})();
