// swarmlet dashboard charts: time series as plain SVG, no library.
// Why plain SVG: a line chart with a time axis, marks and a hover readout is ~200 lines,
// ships with the package as-is (no CDN, no build step) and has no third-party code to vet
// or keep up to date; the browser does the drawing and the text stays crisp at any size.
"use strict";
window.SwarmletCharts = (function () {
  const NS = "http://www.w3.org/2000/svg";
  const MARK = {rollout: "#2563eb", rollback: "#d97706", death: "#b3261e", autoscale: "#059669"};
  const MARK_LABEL = {rollout: "rollout", rollback: "rollback", death: "node death",
                      autoscale: "autoscale"};

  function svg(tag, attrs, parent) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.append(e);
    return e;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function fmtValue(v, unit) {
    if (v == null || Number.isNaN(v)) return "–";
    const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
    return v.toFixed(digits) + (unit || "");
  }

  function clock(ts, seconds) {
    const d = new Date(ts * 1000), two = n => n.toString().padStart(2, "0");
    return two(d.getHours()) + ":" + two(d.getMinutes()) + (seconds ? ":" + two(d.getSeconds()) : "");
  }

  // draw(box, {title, unit, ts, series: [{name, values, color, dash}], marks, span, yMax, now})
  function draw(box, opts) {
    const W = Math.max(240, box.clientWidth || 480), H = 150;
    const pad = {l: 44, r: 10, t: 8, b: 20};
    const now = opts.now || (opts.ts.length ? opts.ts[opts.ts.length - 1] : Date.now() / 1000);
    // the last hour, or since the first sample when the master has been up for less
    const first = opts.ts.length ? opts.ts[0] : now;
    const x0 = Math.max(now - (opts.span || 3600), Math.min(first, now - 60));
    let top = 0;
    for (const s of opts.series) for (const v of s.values) if (v != null && v > top) top = v;
    const yMax = opts.yMax != null ? Math.max(opts.yMax, top) : niceMax(top * 1.1);
    // the y labels decide the left margin: "1500ms" or "12000/s" did not fit in a fixed 44 px
    const ticks = [0, 0.5, 1].map(f => [f, fmtValue(yMax * f, opts.unit)]);
    pad.l = Math.max(pad.l, 8 + 7 * Math.max(...ticks.map(([, label]) => label.length)));
    const X = t => pad.l + (W - pad.l - pad.r) * (t - x0) / (now - x0 || 1);
    const Y = v => H - pad.b - (H - pad.t - pad.b) * Math.min(v, yMax) / (yMax || 1);
    box.replaceChildren();
    const head = document.createElement("div");
    head.className = "chart-head";
    head.textContent = opts.title;
    box.append(head);
    const root = svg("svg", {viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "chart",
                             "data-chart": opts.key || ""}, box);
    // grid and axes
    for (const [f, label] of ticks) {
      const y = Y(yMax * f);
      svg("line", {x1: pad.l, x2: W - pad.r, y1: y, y2: y, class: "grid"}, root);
      svg("text", {x: pad.l - 4, y: y + 4, class: "tick", "text-anchor": "end"}, root)
        .textContent = label;
    }
    const step = [10, 30, 60, 120, 300, 600, 900, 1800, 3600].find(s => (now - x0) / s <= 6) || 3600;
    for (let t = Math.ceil(x0 / step) * step; t <= now; t += step) {
      svg("line", {x1: X(t), x2: X(t), y1: pad.t, y2: H - pad.b, class: "grid v"}, root);
      if (X(t) > W - pad.r - 24) continue;   // no half label at the right edge
      svg("text", {x: X(t), y: H - 5, class: "tick", "text-anchor": "middle"}, root).textContent =
        clock(t, step < 60);
    }
    // marks: spans for rollouts in progress or done, a line for every mark
    const spans = k => k === "rollout" || k === "rollback";
    const marks = (opts.marks || []).filter(m => m.ts >= x0 || (spans(m.kind) && (!m.until || m.until >= x0)));
    for (const m of marks) {
      const color = MARK[m.kind] || "#64748b";
      const g = svg("g", {"data-mark": m.kind, class: "mark"}, root);
      const at = Math.max(m.ts, x0);
      if (spans(m.kind)) {
        const end = m.until || now;
        svg("rect", {x: X(at), y: pad.t, width: Math.max(2, X(end) - X(at)), height: H - pad.t - pad.b,
                     fill: color, opacity: m.until ? 0.08 : 0.16}, g);
      }
      if (m.ts >= x0) {
        svg("line", {x1: X(m.ts), x2: X(m.ts), y1: pad.t, y2: H - pad.b, stroke: color,
                     "stroke-width": 1.5, "stroke-dasharray": m.kind === "autoscale" ? "3 2" : ""}, g);
      }
      svg("title", {}, g).textContent =
        `${clock(m.ts, true)} ${MARK_LABEL[m.kind] || m.kind}: ${m.subject}: ${m.text}` +
        (m.kind === "rollout" && !m.until ? " (in progress)" : "");
    }
    // the series
    for (const s of opts.series) {
      let d = "", pen = false, points = 0;
      s.values.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        d += (pen ? "L" : "M") + X(opts.ts[i]).toFixed(1) + " " + Y(v).toFixed(1);
        pen = true; points++;
      });
      if (!d) continue;
      svg("path", {d, fill: "none", stroke: s.color, "stroke-width": s.width || 1.6,
                   "stroke-dasharray": s.dash || "", "data-series": s.name, "data-points": points}, root);
    }
    if (!opts.series.some(s => s.values.some(v => v != null))) {
      svg("text", {x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle"}, root).textContent =
        opts.empty || "no data yet";
    }
    // legend and hover readout
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of opts.series) {
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${s.color}"></i>`;
      item.append(document.createTextNode(s.name));
      legend.append(item);
    }
    box.append(legend);
    const cross = svg("line", {y1: pad.t, y2: H - pad.b, class: "cross", visibility: "hidden"}, root);
    const tip = document.createElement("div");
    tip.className = "tip";
    box.append(tip);
    root.addEventListener("mousemove", ev => {
      const rect = root.getBoundingClientRect();
      const t = x0 + (ev.clientX - rect.left - pad.l) / (rect.width - pad.l - pad.r) * (now - x0);
      let best = -1, dist = Infinity;
      opts.ts.forEach((ts, i) => { const d = Math.abs(ts - t); if (d < dist) { dist = d; best = i; } });
      if (best < 0) return;
      cross.setAttribute("x1", X(opts.ts[best])); cross.setAttribute("x2", X(opts.ts[best]));
      cross.setAttribute("visibility", "visible");
      tip.replaceChildren(document.createTextNode(clock(opts.ts[best], true)));
      for (const s of opts.series) {
        const row = document.createElement("div");
        row.innerHTML = `<i style="background:${s.color}"></i>`;
        row.append(document.createTextNode(`${s.name}: ${fmtValue(s.values[best], opts.unit)}`));
        tip.append(row);
      }
      tip.style.display = "block";
      tip.style.left = Math.min(ev.clientX - rect.left + 12, rect.width - 160) + "px";
    });
    root.addEventListener("mouseleave", () => { tip.style.display = "none"; cross.setAttribute("visibility", "hidden"); });
    return root;
  }

  function markLegend(box) {
    box.replaceChildren();
    for (const [k, c] of Object.entries(MARK)) {
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${c}"></i>`;
      item.append(document.createTextNode(MARK_LABEL[k]));
      box.append(item);
    }
  }

  return {draw, markLegend, MARK};
})();
