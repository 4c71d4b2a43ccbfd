// swarmlet dashboard: one EventSource on /api/stream (the live picture), /api/history for the
// charts of the last hour. No framework and no build step: served as-is from the package.
// Nodes: cards with their replicas for a small cluster; a heatmap grid (hover for details,
// click to chart one node) above CARDS_MAX nodes, with filters by status, label and name.
"use strict";
(function () {
  const CARDS_MAX = 40;
  const COLORS = ["#2563eb", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d",
                  "#dc2626", "#4f46e5", "#0d9488"];
  const serviceColor = {};
  const state = {doc: null, hist: null, status: "", label: "", q: "", metric: "cpu", sort: "name",
                 selected: null, marksSeen: 0, histTimer: null};
  const $ = id => document.getElementById(id);

  function colorOf(name) {
    if (!(name in serviceColor)) {
      serviceColor[name] = COLORS[Object.keys(serviceColor).length % COLORS.length];
    }
    return serviceColor[name];
  }
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  function bytes(n) {
    const u = ["B", "K", "M", "G", "T"]; let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return n.toFixed(i < 2 ? 0 : 1) + u[i];
  }
  function memPct(n) { return n.mem_total ? 100 * n.mem_used / n.mem_total : 0; }
  function meter(fraction, label) {
    const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
    return el("div", {}, el("div", {class: "meter"}, el("div", {style: `width:${pct.toFixed(1)}%`})),
              el("div", {class: "small"}, label));
  }

  // --- filters ------------------------------------------------------------------------------
  function labelMatch(n) {
    const want = state.label.trim();
    if (!want) return true;
    return want.split(",").every(part => {
      const [k, v] = part.split("=").map(s => s.trim());
      if (!k) return true;
      const have = (n.labels || {})[k];
      return v === undefined ? have !== undefined : have === v;
    });
  }
  function shown(n) {
    return (!state.status || n.status === state.status) && labelMatch(n) &&
           (!state.q || n.name.includes(state.q) || (n.address || "").includes(state.q));
  }
  function sorted(nodes) {
    const key = {name: n => n.name, cpu: n => -(n.cpu_percent || 0), mem: n => -memPct(n),
                 status: n => ({down: 0, left: 1, suspect: 2, draining: 3, ready: 4}[n.status] ?? 5) +
                              n.name}[state.sort] || (n => n.name);
    return nodes.slice().sort((a, b) => { const x = key(a), y = key(b); return x < y ? -1 : x > y ? 1 : 0; });
  }
  function drawFilters(doc) {
    const sel = $("f-status");
    const counts = {};
    for (const n of doc.nodes) counts[n.status] = (counts[n.status] || 0) + 1;
    const want = ["", "ready", "suspect", "down", "draining", "left"];
    sel.replaceChildren(...want.map(s => el("option", {value: s},
      s ? `${s} (${counts[s] || 0})` : `all (${doc.nodes.length})`)));
    sel.value = state.status;
  }

  // --- nodes: cards (small clusters) or a heatmap --------------------------------------------
  function heatColor(v) {   // 0..100 -> green .. amber .. red
    const t = Math.max(0, Math.min(1, (v || 0) / 100));
    const hue = 140 - 140 * t;
    return `hsl(${hue.toFixed(0)},70%,${(46 - 6 * t).toFixed(0)}%)`;
  }
  function drawCards(doc, nodes) {
    const byNode = {};
    for (const s of doc.services) {
      for (const t of s.tasks) (byNode[t.node || ""] = byNode[t.node || ""] || []).push({service: s.name, ...t});
    }
    const box = $("nodes");
    box.className = "nodes";
    box.replaceChildren();
    for (const n of nodes) {
      const card = el("div", {class: `node ${n.status}`, "data-node": n.name, "data-status": n.status},
        el("div", {class: "head"}, el("span", {}, n.name),
           el("span", {class: `badge ${n.status}`, "data-role": "status"}, n.status)),
        el("div", {class: "small"}, `${n.address} · ${n.cpus} cpu · ${n.tasks} tasks`),
        meter(n.cpu_percent / 100, `cpu ${Number(n.cpu_percent || 0).toFixed(1)}%`),
        meter(n.mem_total ? n.mem_used / n.mem_total : 0, `mem ${bytes(n.mem_used)} / ${bytes(n.mem_total)}`));
      for (const t of (byNode[n.name] || [])) {
        card.append(el("div", {class: `task ${t.state} ${t.health}`, "data-task": t.task,
                               style: `background:${colorOf(t.service)}`},
                       el("span", {}, `${t.service}.${t.slot}`), el("span", {}, t.state)));
      }
      card.addEventListener("click", () => select(n.name));
      box.append(card);
    }
    const pending = byNode[""] || [];
    if (pending.length) {
      const card = el("div", {class: "node suspect", "data-node": ""},
                      el("div", {class: "head"}, el("span", {}, "pending"), el("span", {}, "")));
      for (const t of pending) card.append(el("div", {class: "task pending",
        style: `background:${colorOf(t.service)}`}, el("span", {}, `${t.service}.${t.slot}`)));
      box.append(card);
    }
  }
  function drawHeat(doc, nodes) {
    const box = $("nodes");
    box.className = "heat";
    const cells = nodes.map(n => {
      const v = state.metric === "mem" ? memPct(n) : state.metric === "tasks" ? 0 : n.cpu_percent;
      const cls = `cell ${n.status}${n.unhealthy ? " sick" : ""}${n.name === state.selected ? " sel" : ""}`;
      const style = (n.status === "down" || n.status === "left") ? "" :
        `background:${state.metric === "tasks" ? taskColor(n) : heatColor(v)}`;
      return el("div", {class: cls, style, "data-node": n.name, "data-status": n.status});
    });
    box.replaceChildren(...cells);
  }
  function taskColor(n) {
    if (!n.tasks) return "#cbd5e1";
    return n.unhealthy ? "#dc2626" : n.serving < n.tasks ? "#d97706" : "#16a34a";
  }
  function nodeDetails(n) {
    const labels = Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ");
    return [el("b", {}, n.name), ` ${n.status}${n.availability === "drain" ? " (drain)" : ""}`,
            el("br"), `${n.address} · ${n.cpus} cpu`, el("br"),
            `cpu ${Number(n.cpu_percent || 0).toFixed(1)}% · mem ${bytes(n.mem_used)} / ${bytes(n.mem_total)}`,
            el("br"), `${n.tasks} tasks: ${n.serving} serving${n.unhealthy ? `, ${n.unhealthy} unhealthy` : ""}`,
            ...(labels ? [el("br"), labels] : [])];
  }
  function drawNodes(doc) {
    const all = doc.nodes;
    const nodes = sorted(all.filter(shown));
    const cards = all.length <= CARDS_MAX && doc.tasks_listed !== false;
    if (cards) drawCards(doc, nodes); else drawHeat(doc, nodes);
    const down = all.filter(n => n.status === "down").length;
    const cpu = all.filter(n => n.status === "ready").map(n => n.cpu_percent || 0).sort((a, b) => a - b);
    const mean = cpu.length ? cpu.reduce((a, b) => a + b, 0) / cpu.length : 0;
    const p90 = cpu.length ? cpu[Math.min(cpu.length - 1, Math.ceil(0.9 * cpu.length) - 1)] : 0;
    $("nodes-summary").textContent =
      `showing ${nodes.length} of ${all.length} · ${down} down · cpu mean ${mean.toFixed(0)}% p90 ${p90.toFixed(0)}%` +
      (cards ? "" : ` · colour: ${state.metric}`);
  }
  function select(name) {
    state.selected = state.selected === name ? null : name;
    if (state.doc) drawNodes(state.doc);
    loadHistory();
  }

  // --- services and events ---------------------------------------------------------------
  function drawServices(doc) {
    const body = document.querySelector("#services tbody");
    body.replaceChildren();
    const rank = {down: 0, degraded: 1, ok: 2, idle: 3};
    const rows = doc.services.slice().sort((a, b) => (rank[a.health] - rank[b.health]) || (a.name < b.name ? -1 : 1));
    for (const s of rows) {
      const a = s.autoscale ? `${s.autoscale.min}..${s.autoscale.max} @${s.autoscale.cpu}%` +
        (s.autoscale.down_window ? ` down after ${s.autoscale.down_window}s` : "") : "";
      body.append(el("tr", {"data-service": s.name},
        el("td", {}, el("span", {style: `color:${colorOf(s.name)}`}, "■ "), s.name),
        el("td", {}, `${s.running}/${s.replicas}`), el("td", {class: s.health}, s.health),
        el("td", {}, Number(s.req_s).toFixed(1)), el("td", {}, s.errors),
        el("td", {}, s.cpu == null ? "-" : `${Math.round(s.cpu)}%`), el("td", {}, s.ports), el("td", {}, a)));
    }
  }
  function drawEvents(doc) {
    const list = $("events");
    list.replaceChildren();
    for (const e of doc.events.slice().reverse()) {
      const when = new Date(e.ts * 1000).toLocaleTimeString();
      list.append(el("li", {}, `${when} `, el("span", {class: "kind"}, e.kind), `${e.subject}: ${e.message}`));
    }
    // an event that makes a mark: redraw the charts now rather than at the next refresh
    const markable = doc.events.filter(e => e.id > state.marksSeen &&
      ((e.kind === "service" && /rolling|rolled|completed|failed/.test(e.message)) ||
       (e.kind === "node" && /-> down$/.test(e.message)) || (e.kind === "scale")));
    if (doc.events.length) state.marksSeen = Math.max(state.marksSeen, ...doc.events.map(e => e.id));
    if (markable.length) { clearTimeout(state.histTimer); state.histTimer = setTimeout(loadHistory, 300); }
  }
  function draw(doc) {
    state.doc = doc;
    $("cluster").textContent = (doc.cluster && doc.cluster.name) || "";
    const down = doc.nodes.filter(n => n.status === "down").length;
    const rolling = doc.services.filter(s => s.update && (s.update.status === "updating" || s.update.status === "rolling_back")).length;
    $("summary").textContent = `${doc.nodes.length} nodes (${down} down) · ${doc.services.length} services` +
      (rolling ? ` · ${rolling} rolling out` : "");
    drawFilters(doc); drawNodes(doc); drawServices(doc); drawEvents(doc);
    document.body.setAttribute("data-version", doc.version);
  }

  // --- charts of the last hour ---------------------------------------------------------------
  async function loadHistory() {
    const q = state.selected ? `?nodes=${encodeURIComponent(state.selected)}` : "";
    try {
      const r = await fetch("/api/history" + q, {credentials: "same-origin"});
      if (r.ok) { state.hist = await r.json(); drawCharts(); }
    } catch (e) { /* the stream shows the connection state */ }
  }
  function drawCharts() {
    const h = state.hist;
    if (!h) return;
    const C = window.SwarmletCharts;
    const svc = Object.entries(h.services);
    const base = {ts: h.ts, marks: h.marks, span: h.span};
    const per = (metric, scale) => svc.filter(([, s]) => s[metric]).map(([name, s]) => (
      {name, color: colorOf(name), values: s[metric].map(v => v == null ? null : v * (scale || 1))}));
    C.draw($("c-req"), {...base, key: "req_s", title: "requests/s per service", series: per("req_s"),
                        empty: "no traffic through the master's load balancers yet"});
    C.draw($("c-err"), {...base, key: "error_rate", title: "error rate per service", unit: "%",
                        series: per("error_rate", 100), empty: "no traffic yet"});
    C.draw($("c-p99"), {...base, key: "p99_ms", title: "p99 latency per service", unit: " ms",
                        series: per("p99_ms"), empty: "no traffic yet"});
    for (const [key, metric, title] of [["c-cpu", "cpu", "node CPU"], ["c-mem", "mem", "node memory"]]) {
      const agg = h.nodes["*"] || {};
      const series = [
        {name: "max", color: "#dc2626", values: agg[`${metric}_max`] || [], width: 1},
        {name: "p90", color: "#d97706", values: agg[`${metric}_p90`] || []},
        {name: "mean", color: "#2563eb", values: agg[`${metric}_mean`] || [], width: 2}];
      if (state.selected && h.nodes[state.selected]) {
        series.push({name: state.selected, color: "#111827", dash: "4 2",
                     values: h.nodes[state.selected][metric] || []});
      }
      C.draw($(key), {...base, key: metric, title: `${title} (% · ${state.selected ? "one node and " : ""}all nodes)`,
                      unit: "%", yMax: 100, series});
    }
    C.markLegend($("marks-legend"));
    document.body.setAttribute("data-history", String(h.ts.length));
  }

  // --- wiring ---------------------------------------------------------------------------------
  function bind() {
    $("f-status").addEventListener("change", e => { state.status = e.target.value; state.doc && drawNodes(state.doc); });
    $("f-label").addEventListener("input", e => { state.label = e.target.value; state.doc && drawNodes(state.doc); });
    $("f-name").addEventListener("input", e => { state.q = e.target.value; state.doc && drawNodes(state.doc); });
    $("f-metric").addEventListener("change", e => { state.metric = e.target.value; state.doc && drawNodes(state.doc); });
    $("f-sort").addEventListener("change", e => { state.sort = e.target.value; state.doc && drawNodes(state.doc); });
    const box = $("nodes"), tip = $("node-tip");
    box.addEventListener("mouseover", ev => {
      const cell = ev.target.closest(".cell");
      if (!cell || !state.doc) return;
      const n = state.doc.nodes.find(x => x.name === cell.dataset.node);
      if (!n) return;
      tip.replaceChildren(...nodeDetails(n));
      const r = cell.getBoundingClientRect();
      tip.style.left = (r.right + window.scrollX + 6) + "px";
      tip.style.top = (r.top + window.scrollY - 4) + "px";
      tip.style.display = "block";
    });
    box.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    box.addEventListener("click", ev => { const c = ev.target.closest(".cell"); if (c) select(c.dataset.node); });
    window.addEventListener("resize", drawCharts);
  }
  function connect() {
    const conn = $("conn");
    const es = new EventSource("/api/stream");
    es.addEventListener("overview", ev => {
      conn.className = "conn live"; conn.textContent = "live";
      draw(JSON.parse(ev.data));
    });
    es.onerror = () => { conn.className = "conn lost"; conn.textContent = "reconnecting…"; };
  }
  bind();
  connect();
  loadHistory();
  setInterval(loadHistory, 10000);
})();
