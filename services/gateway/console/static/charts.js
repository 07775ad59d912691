// Axon console: small pure helpers (no DOM state of their own), shared by console.js.
"use strict";

window.AxonCharts = (() => {
  const SVG = "http://www.w3.org/2000/svg";

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Draw `history` then `forecast` (continuing after it) as two lines in `svg`
  // (viewBox 720x280). Returns the number of forecast points drawn.
  function forecastChart(svg, history, forecast) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const all = history.concat(forecast);
    if (all.length === 0) return 0;
    const W = 720, H = 280, left = 48, right = 16, top = 16, bottom = 28;
    let lo = Math.min(...all), hi = Math.max(...all);
    if (hi === lo) { hi += 1; lo -= 1; }
    const n = all.length;
    const x = (i) => left + (n === 1 ? 0 : (i * (W - left - right)) / (n - 1));
    const y = (v) => top + ((hi - v) * (H - top - bottom)) / (hi - lo);
    svg.appendChild(el("line", { class: "axis", x1: left, y1: H - bottom, x2: W - right, y2: H - bottom }));
    svg.appendChild(el("line", { class: "axis", x1: left, y1: top, x2: left, y2: H - bottom }));
    for (const v of [lo, (lo + hi) / 2, hi]) {
      svg.appendChild(el("text", { x: 4, y: y(v) + 4 }, v.toFixed(1)));
    }
    const path = (points) => points.map(([i, v], k) => `${k ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.appendChild(el("path", { class: "history", d: path(history.map((v, i) => [i, v])) }));
    if (forecast.length) {
      const start = history.length ? [[history.length - 1, history[history.length - 1]]] : [];
      const points = start.concat(forecast.map((v, i) => [history.length + i, v]));
      svg.appendChild(el("path", { class: "forecast", d: path(points) }));
      forecast.forEach((v, i) => svg.appendChild(el("circle", { class: "dot", cx: x(history.length + i), cy: y(v), r: 3.5 })));
      svg.appendChild(el("text", { x: x(history.length) , y: H - 8 }, "forecast →"));
    }
    svg.appendChild(el("text", { x: left, y: H - 8 }, "history"));
    return forecast.length;
  }

  // Quantile q (0..1) of a cumulative histogram [[le_s or null (+Inf), count], ...], by
  // linear interpolation inside the bucket (as Prometheus' histogram_quantile). In ms;
  // null when the histogram is empty.
  function quantileMs(buckets, q) {
    if (!buckets.length) return null;
    const total = buckets[buckets.length - 1][1];
    if (total <= 0) return null;
    const rank = q * total;
    let prevLe = 0, prevCount = 0;
    for (const [le, count] of buckets) {
      if (count >= rank) {
        if (le === null) return prevLe * 1000; // in +Inf: the largest finite bound
        const width = count - prevCount;
        const frac = width > 0 ? (rank - prevCount) / width : 1;
        return (prevLe + (le - prevLe) * frac) * 1000;
      }
      if (le !== null) prevLe = le;
      prevCount = count;
    }
    return prevLe * 1000;
  }

  // Cumulative buckets of `now` minus those of `before` (same bounds), for a window.
  function bucketDelta(now, before) {
    const old = new Map((before || []).map(([le, c]) => [String(le), c]));
    return now.map(([le, c]) => [le, Math.max(c - (old.get(String(le)) || 0), 0)]);
  }

  return { forecastChart, quantileMs, bucketDelta };
})();
