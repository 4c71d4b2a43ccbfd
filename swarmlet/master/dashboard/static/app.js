// swarmlet dashboard: one EventSource on /api/stream, the whole picture redrawn per event.
// No framework and no build step: the page is served as-is from the swarmlet package.
"use strict";
(function () {
  const COLORS = ["#2563eb", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d",
                  "#dc2626", "#4f46e5", "#0d9488"];
  const serviceColor = {};
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
  function meter(fraction, label) {
    const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
    return el("div", {}, el("div", {class: "meter"}, el("div", {style: `width:${pct.toFixed(1)}%`})),
              el("div", {class: "small"}, label));
  }
  function drawNodes(doc) {
    const byNode = {};
    for (const s of doc.services) {
      for (const t of s.tasks) {
        (byNode[t.node || ""] = byNode[t.node || ""] || []).push({service: s.name, ...t});
      }
    }
    const box = document.getElementById("nodes");
    box.replaceChildren();
    for (const n of doc.nodes) {
      const card = el("div", {class: `node ${n.status}`, "data-node": n.name, "data-status": n.status},
        el("div", {class: "head"}, el("span", {}, n.name),
           el("span", {class: `badge ${n.status}`, "data-role": "status"}, n.status)),
        el("div", {class: "small"}, `${n.address} · ${n.cpus} cpu · ${n.tasks} tasks`),
        meter(n.cpu_percent / 100, `cpu ${Number(n.cpu_percent || 0).toFixed(1)}%`),
        meter(n.mem_total ? n.mem_used / n.mem_total : 0,
              `mem ${bytes(n.mem_used)} / ${bytes(n.mem_total)}`));
      for (const t of (byNode[n.name] || [])) {
        card.append(el("div", {class: `task ${t.state} ${t.health}`, "data-task": t.task,
                               style: `background:${colorOf(t.service)}`},
                       el("span", {}, `${t.service}.${t.slot}`), el("span", {}, t.state)));
      }
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
  function drawServices(doc) {
    const body = document.querySelector("#services tbody");
    body.replaceChildren();
    for (const s of doc.services) {
      const a = s.autoscale ? `${s.autoscale.min}..${s.autoscale.max} @${s.autoscale.cpu}%` : "";
      body.append(el("tr", {"data-service": s.name},
        el("td", {}, el("span", {style: `color:${colorOf(s.name)}`}, "■ "), s.name),
        el("td", {}, `${s.running}/${s.replicas}`), el("td", {class: s.health}, s.health),
        el("td", {}, Number(s.req_s).toFixed(1)), el("td", {}, s.errors),
        el("td", {}, s.cpu == null ? "-" : `${Math.round(s.cpu)}%`), el("td", {}, s.ports), el("td", {}, a)));
    }
  }
  function drawEvents(doc) {
    const list = document.getElementById("events");
    list.replaceChildren();
    for (const e of doc.events.slice().reverse()) {
      const when = new Date(e.ts * 1000).toLocaleTimeString();
      list.append(el("li", {}, `${when} `, el("span", {class: "kind"}, e.kind),
                     `${e.subject}: ${e.message}`));
    }
  }
  function draw(doc) {
    document.getElementById("cluster").textContent = (doc.cluster && doc.cluster.name) || "";
    const down = doc.nodes.filter(n => n.status === "down").length;
    document.getElementById("summary").textContent =
      `${doc.nodes.length} nodes (${down} down) · ${doc.services.length} services`;
    drawNodes(doc); drawServices(doc); drawEvents(doc);
    document.body.setAttribute("data-version", doc.version);
  }
  function connect() {
    const conn = document.getElementById("conn");
    const es = new EventSource("/api/stream");
    es.addEventListener("overview", ev => {
      conn.className = "conn live"; conn.textContent = "live";
      draw(JSON.parse(ev.data));
    });
    es.onerror = () => { conn.className = "conn lost"; conn.textContent = "reconnecting…"; };
  }
  connect();
})();
