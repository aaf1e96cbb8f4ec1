// The Drizzle dashboard's page: renders each state the server pushes (/events), in plain DOM and SVG.
// No library and nothing fetched from elsewhere: the page must work on a machine with no internet.
(function () {
  "use strict";
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  const $ = (id) => document.getElementById(id);
  const SVGNS = "http://www.w3.org/2000/svg";
  let updates = 0;
  let started = null;

  // ------------------------------------------------------------------ formatting
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const ms = (s) => (s === null || s === undefined ? "–" : (s * 1e3).toFixed(2));
  const pct = (x) => (x === null || x === undefined ? "–" : (x * 100).toFixed(1) + "%");
  const int = (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US"));
  const num = (x, d) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
  const clock = (t) => (t ? new Date(t * 1000).toLocaleTimeString("en-GB") : "–");
  function ago(seconds) {
    if (seconds < 60) return Math.round(seconds) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + Math.round(seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }
  function tile(key, value, field) {
    return `<div class="tile"><div class="v" data-field="${field || ""}">${value}</div><div class="k">${esc(key)}</div></div>`;
  }

  // ------------------------------------------------------------------ charts (plain SVG)
  const COLORS = ["#2f6fd6", "#e07b24", "#1f9d55", "#9b4dca", "#d64545", "#0e9aa7", "#c98a00", "#5b6b82"];

  function bounds(values, zero) {
    let lo = zero ? 0 : Infinity, hi = -Infinity;
    for (const v of values) { if (v !== null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
    if (!isFinite(hi)) { lo = 0; hi = 1; }
    if (hi === lo) { hi = lo + (Math.abs(lo) || 1); }
    return [lo, hi];
  }
  // the chart's own width in pixels: drawn at its size, so that text is never stretched
  const width = (el) => Math.max(280, Math.round(el.clientWidth || 600));
  function fmtAxis(v) {
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (Number.isInteger(v) && a < 1e4) return String(v);
    if (a >= 1000) return (v / 1000).toFixed(a >= 10000 ? 0 : 1) + "k";
    if (a >= 10) return v.toFixed(0);
    if (a >= 1) return v.toFixed(1);
    return v.toPrecision(2);
  }
  // series: [{name, points: [[x, y], ...]}]; options: {zero, unit, step}
  function lineChart(el, series, options) {
    const o = options || {};
    const W = width(el), H = 150, L = 46, R = 8, T = 18, B = 18;
    const xs = [], ys = [];
    for (const s of series) for (const p of s.points) { xs.push(p[0]); ys.push(p[1]); }
    if (!xs.length) { el.innerHTML = `<p class="empty">${esc(o.empty || "Nothing yet.")}</p>`; return; }
    const [x0, x1] = bounds(xs, false), [y0, y1] = bounds(ys, o.zero !== false);
    const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), Y = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    let svg = `<svg viewBox="0 0 ${W} ${H}">`;
    for (const f of [0, 0.5, 1]) {
      const y = y0 + f * (y1 - y0);
      svg += `<line class="axis" x1="${L}" x2="${W - R}" y1="${Y(y)}" y2="${Y(y)}"/>` +
             `<text x="${L - 4}" y="${Y(y) + 3}" text-anchor="end">${fmtAxis(y)}${o.unit || ""}</text>`;
    }
    svg += `<text x="${L}" y="${H - 4}">${fmtAxis(x0)}</text><text x="${W - R}" y="${H - 4}" text-anchor="end">${fmtAxis(x1)}</text>`;
    series.forEach((s, k) => {
      const pts = s.points.filter((p) => p[1] !== null && isFinite(p[1]));
      if (!pts.length) return;
      let d = "";
      pts.forEach((p, i) => {
        if (o.step && i) d += ` L${X(p[0]).toFixed(1)},${Y(pts[i - 1][1]).toFixed(1)}`;
        d += `${i ? " L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`;
      });
      const color = s.color || COLORS[k % COLORS.length];
      svg += `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6" vector-effect="non-scaling-stroke"` +
             (s.dash ? ` stroke-dasharray="4 3"` : "") + `/>`;
      if (pts.length === 1) svg += `<circle cx="${X(pts[0][0])}" cy="${Y(pts[0][1])}" r="2.5" fill="${color}"/>`;
      svg += `<text class="legend" x="${L + k * 110}" y="11" style="fill:${color}">&#9644; ${esc(s.name)}</text>`;
    });
    el.innerHTML = svg + "</svg>";
  }
  // stacked bars: rows [{x, values: [..]}], names [..]
  function barChart(el, rows, names, options) {
    const o = options || {};
    const W = width(el), H = 150, L = 46, R = 8, T = 18, B = 18;
    if (!rows.length) { el.innerHTML = `<p class="empty">${esc(o.empty || "Nothing yet.")}</p>`; return; }
    const totals = rows.map((r) => r.values.reduce((a, b) => a + b, 0));
    const [, y1] = bounds(totals, true);
    const bw = (W - L - R) / rows.length;
    const Y = (y) => (H - B) - y / y1 * (H - T - B);
    let svg = `<svg viewBox="0 0 ${W} ${H}">`;
    for (const f of [0, 0.5, 1]) {
      svg += `<line class="axis" x1="${L}" x2="${W - R}" y1="${Y(f * y1)}" y2="${Y(f * y1)}"/>` +
             `<text x="${L - 4}" y="${Y(f * y1) + 3}" text-anchor="end">${fmtAxis(f * y1)}</text>`;
    }
    rows.forEach((r, i) => {
      let acc = 0;
      r.values.forEach((v, k) => {
        const y = Y(acc + v), h = Y(acc) - y;
        if (h > 0) svg += `<rect x="${(L + i * bw).toFixed(2)}" y="${y.toFixed(2)}" width="${Math.max(0.5, bw * 0.85).toFixed(2)}" height="${h.toFixed(2)}" fill="${COLORS[k]}"><title>group ${r.x}: ${esc(names[k])} ${v.toFixed(3)}</title></rect>`;
        acc += v;
      });
    });
    svg += `<text x="${L}" y="${H - 4}">${rows[0].x}</text><text x="${W - R}" y="${H - 4}" text-anchor="end">${rows[rows.length - 1].x}</text>`;
    names.forEach((n, k) => { svg += `<text class="legend" x="${L + k * 90}" y="11" style="fill:${COLORS[k]}">&#9632; ${esc(n)}</text>`; });
    el.innerHTML = svg + "</svg>";
  }

  // ------------------------------------------------------------------ sections
  function renderOverview(s) {
    const g = s.groups, last = g.recent.length ? g.recent[g.recent.length - 1] : null;
    const alive = s.workers.filter((w) => w.state === "alive").length;
    $("overview").innerHTML =
      tile("workers alive", `${alive} / ${s.workers.length}`, "workers-alive") +
      tile("groups", int(g.count), "groups") +
      tile("jobs finished", int(g.jobs_done), "jobs-done") +
      tile("jobs stamped", int(g.stamped), "stamped") +
      tile("current G (planned)", last ? `${last.jobs} (${last.planned})` : "–", "current-g") +
      tile("coordination, last group", last ? pct(last.coordination) : "–", "last-coordination") +
      tile("coordination, all groups", pct(g.coordination), "coordination") +
      tile("recoveries", int(g.recoveries), "recoveries");
  }

  function renderWorkers(s) {
    const alive = s.workers.filter((w) => w.state === "alive").length;
    $("workers-summary").textContent = `${alive} alive of ${s.workers.length}`;
    $("workers-table").tBodies[0].innerHTML = s.workers.map((w) =>
      `<tr data-worker="${w.index}"><td>${w.index}</td><td>${esc(w.name)}</td>` +
      `<td><span class="badge ${w.state}" data-field="state">${w.state}</span></td>` +
      `<td data-field="replaced">${w.replaced}</td><td data-field="lost">${w.lost}</td>` +
      `<td data-field="joined">${clock(w.joined)}${w.added ? " (added)" : ""}</td>` +
      `<td>${esc(w.last_event || "")}${w.last_event ? " at " + clock(w.last_event_at) : ""}</td></tr>`).join("");
    $("worker-events").innerHTML = s.worker_events.slice(-20).reverse().map((e) =>
      `<li class="${e.kind}">${clock(e.time)} ${esc(e.name)} ${e.kind}${e.detail ? ": " + esc(e.detail) : ""}</li>`).join("");
  }

  function renderGroups(s) {
    const rows = s.groups.recent;
    lineChart($("chart-g"), [
      {name: "G", points: rows.map((r) => [r.group, r.jobs])},
      {name: "planned G", points: rows.map((r) => [r.group, r.planned]), dash: true},
    ], {empty: "No group has run yet."});
    lineChart($("chart-coord"), [{name: "coordination", points: rows.map((r) => [r.group, r.coordination * 100])}],
              {unit: "%", empty: "No group has run yet."});
    barChart($("chart-driver"), rows.map((r) => ({x: r.group, values: [r.plan_s * 1e3, r.serialize_s * 1e3, r.launch_s * 1e3]})),
             ["plan", "serialize", "launch"], {empty: "No group has run yet."});
    $("groups-table").tBodies[0].innerHTML = rows.slice(-12).reverse().map((r) =>
      `<tr data-group="${r.group}"><td data-field="group">${r.group}</td><td data-field="jobs">${r.jobs}</td>` +
      `<td data-field="planned">${r.planned}</td><td data-field="stamped">${r.stamped}</td><td data-field="tasks">${r.tasks}</td>` +
      `<td data-field="workers">${r.workers}</td><td data-field="coordination">${pct(r.coordination)}</td>` +
      `<td data-field="plan">${ms(r.plan_s)}</td><td data-field="serialize">${ms(r.serialize_s)}</td>` +
      `<td data-field="launch">${ms(r.launch_s)}</td><td data-field="wall">${ms(r.wall_s)}</td>` +
      `<td data-field="recoveries">${r.recoveries}</td></tr>`).join("");
  }

  function renderTimeline(s) {
    const t = s.timeline, el = $("timeline");
    const lanes = t.lanes.filter((l) => l.spans.length);
    if (!lanes.length) { el.innerHTML = `<p class="empty">No task has run yet.</p>`; $("timeline-caption").textContent = ""; return; }
    $("timeline-caption").textContent = `(the last ${t.window} s of tasks, to ${clock(t.end)}; colour: group)`;
    const W = width(el), L = 170, R = 6, lane = 20, T = 4, H = T + lanes.length * lane + 16;
    const X = (x) => L + x / t.window * (W - L - R);
    const svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.style.height = H + "px";
    let body = "";
    lanes.forEach((l, i) => {
      const y = T + i * lane;
      body += `<text x="4" y="${y + 13}">${esc(l.name.length > 26 ? l.name.slice(0, 25) + "…" : l.name)}</text>` +
              `<line class="axis" x1="${L}" x2="${W - R}" y1="${y + lane - 1}" y2="${y + lane - 1}" stroke="#dde2ea"/>`;
      for (const [start, dur, group, job, stage, kind] of l.spans) {
        const x = Math.max(L, X(start)), w = Math.max(0.8, X(start + dur) - x);
        const light = kind === 0 ? 62 : 45;
        body += `<rect x="${x.toFixed(1)}" y="${y + 2}" width="${w.toFixed(1)}" height="${lane - 5}" ` +
                `fill="hsl(${(group * 47) % 360},62%,${light}%)"><title>group ${group} job ${job} stage ${stage} ` +
                `${kind === 0 ? "map" : "result"} ${(dur * 1e3).toFixed(2)} ms</title></rect>`;
      }
    });
    for (let k = 0; k <= t.window; k += Math.max(1, Math.round(t.window / 10))) {
      body += `<text x="${X(k)}" y="${H - 3}" text-anchor="middle">${k - t.window} s</text>`;
    }
    svg.innerHTML = body;
    el.replaceChildren(svg);
    el.dataset.tasks = String(lanes.reduce((a, l) => a + l.spans.length, 0));
  }

  function renderStreams(s) {
    const el = $("streams");
    if (!s.streams.length) { el.innerHTML = `<p class="empty">No stream yet.</p>`; return; }
    el.innerHTML = s.streams.slice().reverse().map((st) =>
      `<div class="loop" data-stream="${st.number}"><h3>${esc(st.label)} ` +
      `<span class="badge ${st.running ? "running" : "done"}" data-field="running">${st.running ? "running" : "stopped"}</span></h3>` +
      `<div class="tiles">` + tile("batches", int(st.batches), "batches") + tile("events", int(st.events), "events") +
      tile("events/s (run)", int(st.events_per_s), "events-per-s") + tile("events/s (recent)", int(st.recent_events_per_s), "recent-events-per-s") +
      tile("latency p50 ms", ms(st.latency_p50), "latency-p50") + tile("latency p99 ms", ms(st.latency_p99), "latency-p99") +
      tile("lag ms (last)", ms(st.lag), "lag") + tile("lag ms (max)", ms(st.lag_max), "lag-max") +
      tile("queued (max)", `${st.queued} (${st.queued_max})`, "queued") + `</div>` +
      `<div class="charts"><figure><figcaption>latency and lag per batch (ms)</figcaption><div class="chart" data-chart="latency"></div></figure>` +
      `<figure><figcaption>events per batch</figcaption><div class="chart" data-chart="events"></div></figure></div></div>`).join("");
    for (const st of s.streams) {
      const card = el.querySelector(`[data-stream="${st.number}"]`);
      lineChart(card.querySelector('[data-chart="latency"]'), [
        {name: "latency", points: st.recent.map((b) => [b.batch, b.latency * 1e3])},
        {name: "lag", points: st.recent.map((b) => [b.batch, b.lag * 1e3])},
      ], {empty: "No batch delivered yet."});
      lineChart(card.querySelector('[data-chart="events"]'), [{name: "events", points: st.recent.map((b) => [b.batch, b.events])}],
                {empty: "No batch delivered yet."});
    }
  }

  function renderIterates(s) {
    const el = $("iterates");
    if (!s.iterates.length) { el.innerHTML = `<p class="empty">No iterate loop yet.</p>`; return; }
    el.innerHTML = s.iterates.slice().reverse().map((it) => {
      const state = it.error ? "failed" : it.running ? "running" : it.converged ? "converged" : "done";
      return `<div class="loop" data-iterate="${it.number}"><h3>iterate ${it.number} ` +
        `<span class="badge ${state}" data-field="status">${state}</span> <span class="muted">${esc(it.kind)}</span></h3>` +
        `<div class="tiles">` + tile("iteration", `${int(it.iteration)} / ${int(it.iterations)}`, "iteration") +
        tile("iterations/s", it.per_s === null ? "–" : num(it.per_s, 1), "per-s") +
        tile("started", clock(it.started), "started") + tile("latest", latest(it), "latest") + `</div>` +
        (it.error ? `<p class="empty">${esc(it.error)}</p>` : "") +
        `<div class="charts"><figure><figcaption>${it.labels.length ? "state by iteration" : "state: not a number or a small vector (iteration count only)"}</figcaption>` +
        `<div class="chart" data-chart="state"></div></figure></div></div>`;
    }).join("");
    for (const it of s.iterates) {
      const card = el.querySelector(`[data-iterate="${it.number}"]`);
      lineChart(card.querySelector('[data-chart="state"]'),
        it.labels.map((name, k) => ({name, points: it.series.map((p) => [p[0], p[k + 1]])})),
        {zero: false, empty: it.labels.length ? "No state yet." : "Nothing to plot."});
    }
  }
  function latest(it) {
    if (!it.series.length) return "–";
    const last = it.series[it.series.length - 1];
    return last.slice(1, 3).map((v) => (v === null ? "–" : Number(v).toPrecision(4))).join(", ") + (last.length > 3 ? ", …" : "");
  }

  // ------------------------------------------------------------------ the loop
  function render(s) {
    if (!s.groups) return;  // not a state (an empty one, before the first is built)
    started = s.started;
    $("uptime").textContent = ago(Date.now() / 1000 - started);
    $("title").textContent = `· ${s.title}` + (s.transport ? ` · ${s.transport} transport` : "") +
      ` · ${s.workers.length} workers`;
    renderOverview(s);
    renderWorkers(s);
    renderGroups(s);
    renderTimeline(s);
    renderStreams(s);
    renderIterates(s);
    updates += 1;
    $("updates").textContent = String(updates);
    document.body.dataset.updates = String(updates);
    document.body.dataset.groups = String(s.groups.count);
  }
  function setStatus(on) {
    $("status").className = on ? "dot" : "dot off";
    $("status-text").textContent = on ? "live" : "disconnected (the Context stopped?)";
    document.body.dataset.live = on ? "1" : "0";
  }
  setInterval(() => { if (started) $("uptime").textContent = ago(Date.now() / 1000 - started); }, 1000);
  const source = new EventSource("/events" + query);
  source.onopen = () => setStatus(true);
  source.onmessage = (e) => {
    try { render(JSON.parse(e.data)); setStatus(true); }
    catch (err) { console.error("dashboard: could not render a state", err); document.body.dataset.error = String(err); }
  };
  source.onerror = () => setStatus(false);
})();
