// Axon console: polls the gateway's own JSON endpoints and drives the task endpoints.
// No library, no outside URL. Keys: asked for when /ui/auth.json says the gateway has
// them, kept in sessionStorage (this tab only) and sent as X-API-Key on every fetch.
"use strict";

(() => {
  const POLL_MS = 2000;
  const WINDOW_MS = 60000;
  const $ = (id) => document.getElementById(id);
  const Charts = window.AxonCharts;
  const EXAMPLES = {
    "Sunspots, yearly 1985-2008": [17.9, 13.4, 29.4, 100.2, 157.6, 142.6, 145.7, 94.3, 54.6, 29.9, 17.5, 8.6,
      21.5, 64.3, 93.3, 119.6, 111.0, 104.0, 63.7, 40.4, 29.8, 15.2, 7.5, 2.9],
    "Sine wave": Array.from({ length: 24 }, (_, i) => +(60 + 50 * Math.sin(i / 2)).toFixed(1)),
    "Ramp": Array.from({ length: 12 }, (_, i) => 10 * i),
  };

  const state = {
    auth: { api_key: false, admin_key: false },
    samples: [], // recent fleet snapshots, oldest first, with the time they came
    snapshot: null,
    metadata: new Map(),
  };

  // ------------------------------------------------------------------ keys and fetch

  const store = {
    get: (name) => sessionStorage.getItem("axon." + name) || "",
    set: (name, value) => sessionStorage.setItem("axon." + name, value),
  };

  let asking = null;
  function askKey(kind, refused) {
    if (asking) return asking;
    const dialog = $("key-dialog");
    $("key-title").textContent = kind === "admin" ? "Admin key" : "API key";
    $("key-text").textContent = (refused ? "That key was refused. " : "") + (kind === "admin"
      ? "This operation needs an admin key (AXON_ADMIN_KEYS). It is kept in this tab only and sent as X-API-Key."
      : "This gateway needs an API key. It is kept in this tab only (sessionStorage) and sent as the X-API-Key header.");
    $("key-input").value = "";
    asking = new Promise((resolve) => {
      const done = (value) => {
        $("key-form").onsubmit = null;
        $("key-cancel").onclick = null;
        dialog.close();
        asking = null;
        resolve(value);
      };
      $("key-form").onsubmit = (event) => {
        event.preventDefault();
        const value = $("key-input").value.trim();
        if (value) store.set(kind === "admin" ? "adminKey" : "apiKey", value);
        done(value);
      };
      $("key-cancel").onclick = () => done("");
    });
    dialog.showModal();
    $("key-input").focus();
    return asking;
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  // fetch `path` with the key; on 401 (or 403 for `admin`) ask for a key and try again.
  async function api(path, options = {}) {
    const admin = Boolean(options.admin);
    for (let attempt = 0; attempt < 3; attempt++) {
      if (admin && state.auth.admin_key && !store.get("adminKey")) {
        if (!(await askKey("admin", false))) throw new ApiError(401, "no admin key given");
      } else if (state.auth.api_key && !store.get("apiKey") && !admin) {
        if (!(await askKey("api", false))) throw new ApiError(401, "no API key given");
      }
      const headers = { Accept: "application/json" };
      const key = admin && state.auth.admin_key ? store.get("adminKey") : store.get("apiKey");
      if (key) headers["X-API-Key"] = key;
      if (options.body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(path, {
        method: options.method || "GET",
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        cache: "no-store",
      });
      const text = await response.text();
      let doc = null;
      try { doc = text ? JSON.parse(text) : null; } catch (_) { doc = null; }
      if (response.ok) return doc;
      const message = (doc && doc.error) || `${response.status} ${response.statusText}`;
      const refusedKey = response.status === 401 || (admin && response.status === 403);
      if (!refusedKey) throw new ApiError(response.status, message);
      const kind = admin && state.auth.admin_key ? "admin" : "api";
      if (!(await askKey(kind, true))) throw new ApiError(response.status, message);
    }
    throw new ApiError(401, "the key was refused");
  }

  function show(id, message) {
    const node = $(id);
    node.textContent = message || "";
    node.hidden = !message;
  }

  // ------------------------------------------------------------------ tabs

  function openPanel(name) {
    for (const button of document.querySelectorAll("#tabs button")) {
      button.classList.toggle("active", button.dataset.panel === name);
    }
    for (const panel of document.querySelectorAll(".panel")) {
      panel.classList.toggle("active", panel.id === "panel-" + name);
    }
    if (name === "dead-letters") loadDeadLetters();
    history.replaceState(null, "", "#" + name);
  }

  // ------------------------------------------------------------------ fleet

  function td(text, cls) {
    const cell = document.createElement("td");
    cell.textContent = text === null || text === undefined ? "–" : String(text);
    if (cls) cell.className = cls;
    return cell;
  }

  const fmt = {
    num: (v, digits = 1) => (v === null || v === undefined || !isFinite(v) ? "–" : v.toFixed(digits)),
    uptime: (s) => s < 120 ? `${Math.round(s)} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`,
  };

  // The sample to take rates from: the oldest one within the window (else none).
  function baseline(now) {
    const old = state.samples.filter((s) => now.at - s.at <= WINDOW_MS && s !== now);
    return old.length ? old[0] : null;
  }

  function find(snapshot, model, version) {
    const m = snapshot && snapshot.models.find((x) => x.name === model);
    if (!m) return null;
    return version === undefined ? m : m.versions.find((v) => v.version === version) || null;
  }

  function renderFleet(snap, base) {
    const seconds = base ? (snap.at - base.at) / 1000 : 0;
    const sameGateway = base && base.doc.gateway.instance === snap.doc.gateway.instance;
    const body = $("fleet-table").querySelector("tbody");
    const workers = $("workers-table").querySelector("tbody");
    body.replaceChildren();
    workers.replaceChildren();
    let dead = 0;
    for (const model of snap.doc.models) {
      const before = sameGateway ? find(base.doc, model.name) : null;
      const buckets = Charts.bucketDelta(model.gateway.latency_buckets,
        before ? before.gateway.latency_buckets : null);
      const p50 = Charts.quantileMs(buckets, 0.5), p99 = Charts.quantileMs(buckets, 0.99);
      for (const v of model.versions) {
        const old = base ? find(base.doc, model.name, v.version) : null;
        const c = v.counters, o = old ? old.counters : null;
        const fresh = o && c.requests >= o.requests; // a worker restart resets counters
        const rate = fresh && seconds > 0 ? (c.requests - o.requests) / seconds : null;
        const runs = fresh ? c.runs - o.runs : c.runs;
        const rows = fresh ? c.rows - o.rows : c.rows;
        const tr = document.createElement("tr");
        tr.dataset.model = model.name;
        tr.dataset.version = String(v.version);
        tr.append(
          td(model.name), td(v.version, "num"), td(model.task),
          td(v.ready ? "ready" : "not ready", v.ready ? "ready" : "not-ready"),
          td(v.workers.length, "num"), td(v.backlog, "num"),
          td(fmt.num(rate, 2), "num"), td(fmt.num(p50), "num"), td(fmt.num(p99), "num"),
          td(runs > 0 ? fmt.num(rows / runs, 2) : "–", "num"),
          td(c.errors, "num"), td(v.dead_letters, "num"),
        );
        body.append(tr);
        dead += v.dead_letters || 0;
        for (const w of v.workers) {
          const row = document.createElement("tr");
          row.append(
            td(`${model.name}:${v.version}`), td(w.instance), td(w.provider.replace("ExecutionProvider", "")),
            td(`${w.pid}@${w.host}`), td(fmt.uptime(w.uptime_s), "num"), td(w.max_batch_rows, "num"),
            td(w.requests, "num"), td(w.runs > 0 ? fmt.num(w.rows / w.runs, 2) : "–", "num"),
          );
          workers.append(row);
        }
      }
    }
    renderShadows(snap.doc.models);
    $("dlq-badge").textContent = dead ? String(dead) : "";
    const g = snap.doc.gateway;
    const pill = $("gateway-status");
    pill.textContent = g.ready ? `gateway ${g.instance}: ready` : `gateway ${g.instance}: not ready`;
    pill.className = "pill " + (g.ready ? "up" : "down");
    $("updated").textContent = "updated " + new Date(snap.at).toLocaleTimeString();
  }

  function renderShadows(models) {
    const table = $("shadow-table");
    const body = table.querySelector("tbody");
    body.replaceChildren();
    for (const model of models) {
      const sh = model.shadow;
      if (!sh) continue;
      const st = sh.stats || { outcomes: {}, compared: 0, latency_ms: {} };
      const notCompared = Object.entries(st.outcomes)
        .filter(([name, n]) => name !== "compared" && n > 0)
        .map(([name, n]) => `${name} ${n}`).join(", ");
      const p50 = (role) => (st.latency_ms[role] ? fmt.num(st.latency_ms[role].p50) : "–");
      // The figures are of the version the last copies went to (st.version): say so
      // when the rule no longer names it (removed, or now another version).
      const figures = st.version === undefined || st.version === sh.version ? "" : String(st.version);
      const tr = document.createElement("tr");
      tr.dataset.model = model.name;
      tr.append(
        td(model.name),
        td(sh.version === null ? `${figures} (rule removed)`.trim()
          : `${sh.version}${sh.ready ? "" : " (no worker)"}${figures ? ` (figures of ${figures})` : ""}`),
        td(sh.fraction === null ? "–" : `${fmt.num(sh.fraction * 100)} %`, "num"),
        td(st.compared, "num"),
        td(st.top1_agreement === null || st.top1_agreement === undefined
          ? "–" : `${fmt.num(st.top1_agreement * 100, 2)} %`, "num"),
        td(st.mean_difference === null || st.mean_difference === undefined
          ? "–" : fmt.num(st.mean_difference, 4), "num"),
        td(p50("primary"), "num"), td(p50("shadow"), "num"),
        td(notCompared || "–"),
      );
      body.append(tr);
    }
    table.hidden = body.children.length === 0;
  }

  function fillModelSelect(select, task) {
    const models = state.snapshot.models.filter((m) => m.task === task);
    const current = select.value;
    const ready = (m) => m.versions.some((v) => v.ready);
    const wanted = current || (models.find(ready) || models[0] || {}).name || "";
    select.replaceChildren(...models.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = m.name + (ready(m) ? "" : " (not ready)");
      return option;
    }));
    if (wanted) select.value = wanted;
    if (select.value !== current) select.dispatchEvent(new Event("change"));
  }

  async function poll() {
    try {
      const doc = await api("/v1/fleet");
      const snap = { at: Date.now(), doc };
      state.samples.push(snap);
      state.samples = state.samples.filter((s) => snap.at - s.at <= WINDOW_MS + POLL_MS);
      state.snapshot = doc;
      renderFleet(snap, baseline(snap));
      fillModelSelect($("classify-model"), "classify");
      fillModelSelect($("forecast-model"), "forecast");
      fillModelSelect($("generate-model"), "generate");
      show("fleet-error", "");
    } catch (error) {
      show("fleet-error", "fleet: " + error.message);
      const pill = $("gateway-status");
      pill.textContent = "gateway unreachable";
      pill.className = "pill down";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  async function metadata(model) {
    if (!state.metadata.has(model)) {
      state.metadata.set(model, await api(`/v2/models/${encodeURIComponent(model)}`));
    }
    return state.metadata.get(model);
  }

  // ------------------------------------------------------------------ classify

  function setupCanvas() {
    const canvas = $("draw");
    const ctx = canvas.getContext("2d");
    const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
    clear();
    let drawing = false;
    const at = (event) => {
      const r = canvas.getBoundingClientRect();
      return [(event.clientX - r.left) * (canvas.width / r.width), (event.clientY - r.top) * (canvas.height / r.height)];
    };
    canvas.addEventListener("pointerdown", (event) => {
      drawing = true;
      canvas.setPointerCapture(event.pointerId);
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 26; ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.beginPath();
      ctx.moveTo(...at(event));
      ctx.lineTo(...at(event));
      ctx.stroke();
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drawing) return;
      ctx.lineTo(...at(event));
      ctx.stroke();
    });
    const end = () => {
      if (!drawing) return;
      drawing = false;
      classify();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    $("classify-clear").addEventListener("click", () => {
      clear();
      $("classify-label").textContent = "";
      $("classify-bars").replaceChildren();
    });
    $("classify-run").addEventListener("click", classify);
  }

  async function classify() {
    const model = $("classify-model").value;
    if (!model) return show("classify-error", "no classifier is served");
    const png = $("draw").toDataURL("image/png").split(",", 2)[1];
    try {
      const meta = await metadata(model);
      const labels = (meta.parameters && meta.parameters.labels) || [];
      const topK = Math.min(5, Math.max(labels.length, 1));
      const doc = await api(`/v1/models/${encodeURIComponent(model)}/classify`,
        { method: "POST", body: { png: [png], top_k: topK } });
      const prediction = doc.predictions[0];
      $("classify-label").textContent = prediction.label;
      $("classify-label").title = `version ${doc.version}`;
      const bars = prediction.top_k.map((item, i) => {
        const row = document.createElement("div");
        row.className = "bar" + (i === 0 ? " top" : "");
        const name = document.createElement("span");
        name.textContent = item.label;
        const track = document.createElement("div");
        track.className = "track";
        const fill = document.createElement("div");
        fill.className = "fill";
        fill.style.width = (100 * item.probability).toFixed(1) + "%";
        track.append(fill);
        const p = document.createElement("span");
        p.className = "p";
        p.textContent = (100 * item.probability).toFixed(1) + " %";
        row.append(name, track, p);
        return row;
      });
      $("classify-bars").replaceChildren(...bars);
      show("classify-error", "");
    } catch (error) {
      show("classify-error", error.message);
    }
  }

  // ------------------------------------------------------------------ forecast

  function parseSeries(text) {
    return text.split(/[\s,;]+/).filter(Boolean).map(Number);
  }

  function setupForecast() {
    const examples = $("forecast-example");
    for (const name of Object.keys(EXAMPLES)) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      examples.append(option);
    }
    const pick = () => { $("forecast-history").value = EXAMPLES[examples.value].join(", "); };
    examples.addEventListener("change", pick);
    pick();
    $("forecast-model").addEventListener("change", async () => {
      const model = $("forecast-model").value;
      if (!model) return;
      try {
        const horizon = (await metadata(model)).parameters.horizon;
        if (horizon) { $("forecast-horizon").max = horizon; $("forecast-horizon").value = horizon; }
      } catch (error) { show("forecast-error", error.message); }
    });
    $("forecast-run").addEventListener("click", forecast);
  }

  async function forecast() {
    const model = $("forecast-model").value;
    const history = parseSeries($("forecast-history").value);
    if (!model) return show("forecast-error", "no forecaster is served");
    if (!history.length || history.some((v) => !isFinite(v))) {
      return show("forecast-error", "history: type numbers separated by commas or spaces");
    }
    try {
      const doc = await api(`/v1/models/${encodeURIComponent(model)}/forecast`,
        { method: "POST", body: { history, horizon: Number($("forecast-horizon").value) } });
      const values = doc.forecasts[0];
      Charts.forecastChart($("forecast-chart"), history, values);
      $("forecast-values").textContent = `${doc.model} v${doc.version}, next ${values.length}: ` +
        values.map((v) => v.toFixed(2)).join(", ");
      show("forecast-error", "");
    } catch (error) {
      show("forecast-error", error.message);
    }
  }

  // ------------------------------------------------------------------ generate

  function setupGenerate() {
    $("generate-model").addEventListener("change", async () => {
      const model = $("generate-model").value;
      const select = $("generate-label");
      if (!model) return;
      try {
        const p = (await metadata(model)).parameters;
        const labels = p.conditional ? (p.labels || []) : [];
        const options = [["", p.conditional ? "any (random)" : "—"], ...labels.map((l, i) => [String(i), l])];
        select.replaceChildren(...options.map(([value, text]) => {
          const option = document.createElement("option");
          option.value = value;
          option.textContent = text;
          return option;
        }));
        select.disabled = !p.conditional;
      } catch (error) { show("generate-error", error.message); }
    });
    $("generate-run").addEventListener("click", generate);
  }

  async function generate() {
    const model = $("generate-model").value;
    if (!model) return show("generate-error", "no generator is served");
    const body = { count: Number($("generate-count").value), seed: Number($("generate-seed").value), format: "png" };
    if ($("generate-label").value !== "") body.label = Number($("generate-label").value);
    try {
      const doc = await api(`/v1/models/${encodeURIComponent(model)}/generate`, { method: "POST", body });
      $("generate-grid").replaceChildren(...doc.images.map((png, i) => {
        const img = document.createElement("img");
        img.src = "data:image/png;base64," + png;
        img.alt = `generated image ${i + 1}`;
        return img;
      }));
      const label = doc.label === undefined || doc.label === null ? "" : `, label ${doc.label}`;
      $("generate-info").textContent = `${doc.images.length} images from ${doc.model} v${doc.version}, seed ${doc.seed}${label}`;
      show("generate-error", "");
    } catch (error) {
      show("generate-error", error.message);
    }
  }

  // ------------------------------------------------------------------ dead letters

  async function loadDeadLetters() {
    try {
      const doc = await api("/v1/dead-letters");
      const body = $("dlq-table").querySelector("tbody");
      body.replaceChildren();
      let total = 0;
      for (const group of doc.dead_letters) {
        for (const entry of group.entries) {
          total += 1;
          const tr = document.createElement("tr");
          tr.dataset.id = entry.id;
          const button = document.createElement("button");
          button.type = "button";
          button.className = "redrive";
          button.textContent = "Re-drive";
          button.disabled = entry.truncated;
          button.title = entry.truncated ? "its body was cut: send the request again" : "move it back to its stream";
          button.addEventListener("click", () => redrive(group.model, group.version, entry.id, button));
          const cell = document.createElement("td");
          cell.append(button);
          tr.append(
            td(group.model), td(group.version, "num"), td(entry.id), td(entry.request_id),
            td(entry.reason, "wrap reason"), td(entry.deliveries, "num"), td(entry.consumer),
            td(entry.at_ms ? new Date(entry.at_ms).toLocaleString() : "–"),
            td(entry.body_bytes + " B" + (entry.truncated ? " (cut)" : ""), "num"), cell,
          );
          body.append(tr);
        }
      }
      $("dlq-empty").hidden = total > 0;
      show("dlq-error", "");
    } catch (error) {
      show("dlq-error", error.message);
    }
  }

  async function redrive(model, version, id, button) {
    button.disabled = true;
    try {
      const path = `/v1/dead-letters/${encodeURIComponent(model)}/${version}/${encodeURIComponent(id)}/redrive`;
      const doc = await api(path, { method: "POST", admin: true });
      show("dlq-message", `Re-drove ${id}: back in ${doc.stream} as ${doc.entry}.`);
      show("dlq-error", "");
    } catch (error) {
      button.disabled = false;
      show("dlq-error", error.message);
    }
    await loadDeadLetters();
  }

  // ------------------------------------------------------------------ start

  async function start() {
    for (const button of document.querySelectorAll("#tabs button")) {
      button.addEventListener("click", () => openPanel(button.dataset.panel));
    }
    $("key-button").addEventListener("click", () => askKey("api", false));
    $("dlq-refresh").addEventListener("click", loadDeadLetters);
    $("interval").textContent = String(POLL_MS / 1000);
    setupCanvas();
    setupForecast();
    setupGenerate();
    try {
      state.auth = await api("/ui/auth.json");
    } catch (error) {
      show("fleet-error", "auth: " + error.message);
    }
    const wanted = location.hash.slice(1);
    if (wanted && $("panel-" + wanted)) openPanel(wanted);
    poll();
  }

  start();
})();
