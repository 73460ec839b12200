/* coinfer live dashboard.
 *
 * One snapshot a second arrives over server-sent events (GET /v1/live, see serve/live.py for
 * what each field means and where it is measured); every panel is redrawn from the newest one.
 * Charts are Apache ECharts (vendor/). For tests: <body data-updates> counts the snapshots
 * applied, and each panel gets data-rendered once it has been drawn.
 */
(function () {
  "use strict";

  const params = new URLSearchParams(window.location.search);
  const key = params.get("key");
  const query = key ? "?key=" + encodeURIComponent(key) : "";
  const $ = (id) => document.getElementById(id);
  const charts = {};
  let updates = 0;
  let lastAt = 0;

  // ---------------------------------------------------------------- formatting and colours

  const RAMP = [[0, [238, 244, 255]], [0.35, [147, 197, 253]], [0.7, [59, 130, 246]], [1, [30, 58, 138]]];
  const KIND_COLOUR = { scale_out: "#16a34a", scale_in: "#ea580c", failover: "#dc2626", handover: "#7c3aed" };
  const KIND_LABEL = { scale_out: "scale out", scale_in: "scale in", failover: "fail-over", handover: "hand-over" };

  function utilColour(u) {
    if (u === null || u === undefined) return "#f3f4f6";
    const x = Math.max(0, Math.min(1, u));
    for (let i = 1; i < RAMP.length; i++) {
      const [x1, c1] = RAMP[i];
      const [x0, c0] = RAMP[i - 1];
      if (x <= x1) {
        const f = (x - x0) / (x1 - x0);
        const c = c0.map((v, j) => Math.round(v + f * (c1[j] - v)));
        return `rgb(${c[0]},${c[1]},${c[2]})`;
      }
    }
    return "rgb(30,58,138)";
  }

  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const num = (x, d = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
  const pct = (u) => (u === null || u === undefined ? "–" : Math.round(100 * u) + " %");
  function ms(x) {
    if (x === null || x === undefined) return "–";
    return x >= 100 ? Math.round(x) + " ms" : x >= 10 ? x.toFixed(1) + " ms" : x.toFixed(2) + " ms";
  }
  function rate(Bps) {  // bytes/s as bits/s, the unit of the cluster file (bandwidth_mbps)
    if (Bps === null || Bps === undefined) return "–";
    const bits = 8 * Bps;
    if (bits >= 1e9) return (bits / 1e9).toFixed(2) + " Gbit/s";
    if (bits >= 1e6) return (bits / 1e6).toFixed(bits >= 1e8 ? 0 : 1) + " Mbit/s";
    return (bits / 1e3).toFixed(bits >= 1e5 ? 0 : 1) + " kbit/s";
  }
  const kindLabel = (k) => KIND_LABEL[k] || String(k || "event");

  function chart(id) {
    if (!charts[id]) charts[id] = echarts.init($(id), null, { renderer: "canvas" });
    return charts[id];
  }
  function rendered(panel) { $(panel).dataset.rendered = "1"; }

  function eventLines(events, from) {
    return (events || []).filter((e) => e.t_s !== null && e.t_s >= from).map((e) => ({
      xAxis: e.t_s,
      lineStyle: { color: KIND_COLOUR[e.kind] || "#6b7280", type: "dashed", width: 1.5 },
      label: { formatter: kindLabel(e.kind), color: KIND_COLOUR[e.kind] || "#6b7280", fontSize: 11 },
    }));
  }

  // ---------------------------------------------------------------- header

  function header(s) {
    const m = s.summary || {};
    const model = String(s.model || "");
    $("model").textContent = model.split(/[:.]/).pop() || model;  // coinfer.zoo.tiny:tiny_mlp -> tiny_mlp
    $("model").title = model;
    const st = $("status");
    st.textContent = s.status;
    st.dataset.state = s.status;
    $("k-devices").innerHTML = `${m.devices_alive}<small>/ ${m.devices_total}</small>`;
    const failed = (s.devices || []).filter((d) => !d.alive).map((d) => d.name);
    $("k-devices-sub").textContent = failed.length ? "lost: " + failed.join(", ") : "all reachable";
    $("k-rps").innerHTML = `${num(m.rps, 1)}<small>req/s</small>`;
    $("k-sps").textContent = `${num(m.samples_ps, 1)} samples/s · last 10 s`;
    $("k-p50").innerHTML = m.p50_ms === null ? "–" : `${num(m.p50_ms, m.p50_ms >= 100 ? 0 : 1)}<small>ms</small>`;
    $("k-p95").textContent = `p95 ${ms(m.p95_ms)} · mean ${ms(m.mean_ms)}`;
    $("k-queue").innerHTML = `${m.queue_samples ?? "–"}<small>/ ${m.queue_capacity ?? "–"}</small>`;
    $("k-inflight").textContent = `samples · ${m.inflight ?? "–"} micro-batches in flight`;
    $("k-replans").innerHTML = `${m.failovers}<small>·</small> ${m.handovers}`;
    const banner = $("banner");
    banner.hidden = !s.error;
    banner.textContent = s.error ? "Error: " + s.error : "";
  }

  // ---------------------------------------------------------------- devices and links

  function positions(s) {
    // Pipeline order left to right (one column per stage, replicas stacked); devices the plan
    // does not use in a last column.
    // The source leads in a column of its own when it is one of several replicas: stacked with
    // them, its links would run along the column and their labels overlap.
    const src = s.plan.source;
    let cols = (s.plan.stages || []).map((st) => st.devices.slice());
    if (cols.some((col) => col.length > 1 && col.includes(src))) {
      cols = [[src], ...cols.map((col) => col.filter((d) => d !== src))].filter((c) => c.length);
    }
    const used = new Set(cols.flat());
    const spare = (s.devices || []).map((d) => d.name).filter((n) => !used.has(n));
    if (spare.length) cols.push(spare);
    const pos = {};
    cols.forEach((col, i) => col.forEach((name, j) => {
      if (!(name in pos)) pos[name] = [i * 220, (j - (col.length - 1) / 2) * 130];
    }));
    return { pos, tall: Math.max(1, ...cols.map((c) => c.length)), wide: cols.length };
  }

  function graph(s) {
    const { pos, tall, wide } = positions(s);
    const source = s.plan.source;
    const nodes = (s.devices || []).map((d) => {
      const dead = !d.alive;
      const u = d.stale ? null : d.util;
      return {
        name: d.name,
        x: pos[d.name][0],
        y: pos[d.name][1],
        symbolSize: 58 + 26 * Math.min(1, u || 0),
        symbol: d.name === source ? "roundRect" : "circle",
        itemStyle: {
          color: dead ? "#f3f4f6" : utilColour(u),
          borderColor: dead ? "#dc2626" : d.name === source ? "#1d4ed8" : "#94a3b8",
          borderWidth: dead || d.name === source ? 2.5 : 1,
          borderType: dead ? "dashed" : "solid",
        },
        label: {
          show: true,
          formatter: `{n|${d.name}}\n{u|${dead ? "lost" : d.stale ? "idle" : pct(u)}}`,
          rich: {
            n: { fontWeight: 700, fontSize: 14, lineHeight: 17, color: (u || 0) > 0.55 ? "#fff" : "#111827" },
            u: { fontSize: 12, lineHeight: 15, color: (u || 0) > 0.55 ? "#e0e7ff" : "#374151" },
          },
        },
        tip: d,
      };
    });
    // one line per device pair: dashed grey when idle; else orange, as wide as its busier
    // direction is busy, with an arrow towards each device that received data
    const pairs = {};
    (s.links || []).forEach((l) => {
      if (!(l.src in pos) || !(l.dst in pos)) return;
      const k = [l.src, l.dst].sort().join("\u0000");
      (pairs[k] = pairs[k] || []).push(l);
    });
    const edges = Object.values(pairs).map((ls) => {
      const active = ls.filter((l) => (l.bytes || 0) > 0);
      const first = active[0] || ls[0];
      if (!active.length) {
        return {
          source: first.src, target: first.dst, tip: ls, symbol: ["none", "none"],
          lineStyle: { color: "#cbd5e1", width: 1, type: "dashed" }, label: { show: false },
        };
      }
      const back = active.some((l) => l.src === first.dst);
      const busy = Math.min(1, Math.max(...active.map((l) => l.busy || 0)));
      return {
        source: first.src, target: first.dst, tip: ls,
        symbol: [back ? "arrow" : "none", "arrow"], symbolSize: 10,
        lineStyle: { color: "#f59e0b", width: 2 + 10 * busy, opacity: 0.8, type: "solid" },
        label: {
          show: true, fontSize: 11, color: "#7c2d12", lineHeight: 15,
          formatter: active.map((l) => `${l.src}→${l.dst}  ${rate(l.rate_Bps)} · ${pct(l.busy)} busy`).join("\n"),
          backgroundColor: "rgba(255,255,255,0.9)", padding: [2, 4], borderRadius: 3,
        },
      };
    });
    const c = chart("graph");
    c.setOption({
      animation: false,
      tooltip: { formatter: graphTip, confine: true },
      series: [{
        type: "graph", layout: "none", roam: false, data: nodes, links: edges,
        preserveAspect: true, nodeScaleRatio: 0,
        left: wide > 1 ? 60 : "40%", right: wide > 1 ? 60 : "40%",
        top: tall > 1 ? 55 : "35%", bottom: tall > 1 ? 55 : "35%",
        emphasis: { focus: "adjacency", lineStyle: { width: 6 } },
      }],
    }, { replaceMerge: ["series"] });
    rendered("panel-graph");
  }

  function graphTip(p) {
    if (p.dataType === "node") {
      const d = p.data.tip;
      const rows = [
        `<b>${esc(d.name)}</b>${d.kind ? " · " + esc(d.kind) : ""}${d.stage !== null && d.stage !== undefined ? " · stage " + d.stage : " · not in the plan"}`,
        d.alive ? `busy ${pct(d.util)} of the last interval` : "<span style='color:#dc2626'>lost</span>",
        `${d.computes ?? "–"} computes, ${ms(d.compute_ms)} each`,
      ];
      if (d.stale && d.alive) rows.push("no telemetry in the last 2 s");
      return rows.join("<br>");
    }
    return p.data.tip.map((l) => [
      `<b>${esc(l.src)} → ${esc(l.dst)}</b>${l.medium ? " (" + esc(l.medium) + ")" : ""}`,
      `carried ${rate(l.rate_Bps)} · busy ${pct(l.busy)}`,
      `while sending ${rate(l.achieved_Bps)} of ${rate(l.nominal_Bps)} nominal`,
      `${l.transfers ?? 0} transfers, latency ${num(l.latency_ms, 1)} ms`,
    ].join("<br>")).join("<br><br>");
  }

  // ---------------------------------------------------------------- plan

  function plan(s) {
    const byName = Object.fromEntries((s.devices || []).map((d) => [d.name, d]));
    const stages = s.plan.stages || [];
    const cards = stages.map((st, k) => {
      const [a, b] = st.pieces;
      const devs = st.devices.map((n) => {
        const d = byName[n] || {};
        const u = d.stale ? null : d.util;
        return `<div class="dev ${d.alive === false ? "failed" : ""}">
          <div class="row"><b>${esc(n)}</b><span>${d.alive === false ? "lost" : pct(u)}</span></div>
          <div class="bar"><i style="width:${Math.round(100 * Math.min(1, u || 0))}%;background:${utilColour(u)}"></i></div></div>`;
      }).join("");
      const rep = st.devices.length > 1 ? `<span class="tag">${st.devices.length} replicas</span>` : "";
      return `<div class="stage"><div class="head"><span class="name">Stage ${k}${rep}</span>
        <span class="pieces">pieces ${a === b ? a : a + "–" + b}</span></div>${devs}</div>`;
    });
    const used = new Set(stages.flatMap((st) => st.devices));
    const spare = (s.devices || []).filter((d) => !used.has(d.name));
    const pred = s.plan.predicted || {};
    const meta = [
      ["algorithm", esc(s.plan.algo || "–")],
      ["objective", esc(s.plan.objective || "–")],
      ["source", esc(s.plan.source || "–")],
      ["period (predicted · now)", `${ms(pred.period_s === undefined ? null : 1e3 * pred.period_s)} · ` +
        `${ms(s.summary.microbatches_ps > 0 ? 1e3 / s.summary.microbatches_ps : null)}`],
      ["predicted latency", ms(pred.latency_s === undefined ? null : 1e3 * pred.latency_s)],
      ["micro-batch · window", `${s.plan.microbatch ?? "–"} · ${s.plan.window ?? "–"}`],
    ].map(([k, v]) => `<div>${k}<b>${v}</b></div>`).join("");
    $("plan").innerHTML =
      `<div class="strip">${cards.join('<span class="arrow">→</span>')}</div>` +
      (spare.length ? `<div class="spare">not in the plan: ${spare.map((d) => esc(d.name) + (d.alive ? "" : " (lost)")).join(", ")}</div>` : "") +
      `<div class="meta">${meta}</div>`;
    rendered("panel-plan");
  }

  // ---------------------------------------------------------------- rolling Gantt

  function gantt(s) {
    const lanes = (s.devices || []).map((d) => d.name);
    const lane = Object.fromEntries(lanes.map((n, i) => [n, i]));
    const now = s.t_s;
    const from = now - s.gantt.window_s;
    const data = (s.gantt.bars || []).filter((b) => b.device in lane).map((b) => ({
      value: [lane[b.device], Math.max(b.start_s, from), b.end_s, b.util ?? 0],
      tip: b,
    }));
    const el = $("gantt");
    const h = 70 + 38 * lanes.length;
    if (el.style.height !== h + "px") {
      el.style.height = h + "px";
      if (charts.gantt) charts.gantt.resize();
    }
    chart("gantt").setOption({
      animation: false,
      grid: { left: 60, right: 24, top: 24, bottom: 30 },
      tooltip: {
        confine: true,
        formatter: (p) => {
          const b = p.data && p.data.tip;
          if (!b) return "";
          return `<b>${esc(b.device)}</b> · ${num(b.start_s, 1)}–${num(b.end_s, 1)} s<br>busy ${pct(b.util)} · ` +
            `${b.computes ?? 0} computes, ${ms(b.compute_ms)} each<br>epoch ${b.epoch}`;
        },
      },
      xAxis: {
        type: "value", min: from, max: now,
        axisLabel: { formatter: (v) => v.toFixed(0) + " s", color: "#6b7280", showMinLabel: false, showMaxLabel: false },
        splitLine: { lineStyle: { color: "#f1f5f9" } },
      },
      yAxis: {
        type: "category", data: lanes, inverse: true, axisTick: { show: false },
        axisLine: { show: false }, axisLabel: { fontWeight: 600, color: "#374151" },
      },
      series: [{
        type: "custom",
        renderItem: (params, api) => {
          const y = api.value(0);
          const p0 = api.coord([api.value(1), y]);
          const p1 = api.coord([api.value(2), y]);
          const band = api.size([0, 1])[1] * 0.7;
          const u = Math.max(0, Math.min(1, api.value(3)));
          const w = Math.max(1, p1[0] - p0[0] - 1);
          const top = p0[1] - band / 2;
          return {
            type: "group",
            children: [
              { type: "rect", shape: { x: p0[0], y: top, width: w, height: band, r: 2 }, style: { fill: "#eef2f7" } },
              {
                type: "rect",
                shape: { x: p0[0], y: top + band * (1 - u), width: w, height: band * u, r: 1 },
                style: { fill: utilColour(u) },
              },
            ],
          };
        },
        encode: { x: [1, 2], y: 0 },
        data,
        clip: true,
        markLine: { symbol: "none", silent: true, data: eventLines(s.events, from) },
      }],
    }, { replaceMerge: ["series"] });
    rendered("panel-gantt");
  }

  // ---------------------------------------------------------------- over time

  function timeAxis(s, hist) {
    const to = s.t_s;
    const from = Math.min(to - 30, hist.length ? hist[0].t_s : to - 30);
    return {
      type: "value", min: Math.floor(from), max: Math.ceil(to),
      axisLabel: { formatter: (v) => v.toFixed(0) + " s", color: "#6b7280", showMinLabel: false, showMaxLabel: false },
      splitLine: { show: false },
    };
  }

  function line(name, hist, field, colour, extra) {
    return Object.assign({
      name, type: "line", showSymbol: false, connectNulls: false,
      data: hist.map((p) => [p.t_s, p[field]]),
      lineStyle: { width: 2, color: colour }, itemStyle: { color: colour },
    }, extra || {});
  }

  function overTime(s) {
    const hist = s.history || [];
    const x = timeAxis(s, hist);
    const base = {
      animation: false,
      grid: { left: 52, right: 20, top: 36, bottom: 28 },
      tooltip: { trigger: "axis", valueFormatter: (v) => num(v, 1) },
      legend: { top: 0, right: 0, itemWidth: 16, textStyle: { color: "#4b5563" } },
      xAxis: x,
    };
    const marks = { symbol: "none", silent: true, data: eventLines(s.events, x.min) };
    chart("throughput").setOption(Object.assign({}, base, {
      yAxis: { type: "value", name: "per second", nameTextStyle: { color: "#6b7280" }, min: 0,
        splitLine: { lineStyle: { color: "#f1f5f9" } } },
      series: [
        line("requests/s", hist, "rps", "#2563eb", { areaStyle: { color: "rgba(37,99,235,0.10)" }, markLine: marks }),
        line("samples/s", hist, "samples_ps", "#0ea5e9", { lineStyle: { width: 1.5, color: "#0ea5e9", type: "dashed" } }),
        line("rejected/s (429)", hist, "rejected_ps", "#dc2626", { lineStyle: { width: 1.5, color: "#dc2626" } }),
      ],
    }), { replaceMerge: ["series"] });
    rendered("panel-throughput");
    chart("latency").setOption(Object.assign({}, base, {
      yAxis: { type: "value", name: "ms", nameTextStyle: { color: "#6b7280" }, min: 0,
        splitLine: { lineStyle: { color: "#f1f5f9" } } },
      series: [
        line("mean", hist, "mean_ms", "#7c3aed", { areaStyle: { color: "rgba(124,58,237,0.08)" }, markLine: marks }),
        line("p50 ≈", hist, "p50_ms", "#059669", { lineStyle: { width: 1.5, color: "#059669", type: "dashed" } }),
        line("p95 ≈", hist, "p95_ms", "#d97706", { lineStyle: { width: 1.5, color: "#d97706", type: "dotted" } }),
      ],
    }), { replaceMerge: ["series"] });
    rendered("panel-latency");
  }

  // ---------------------------------------------------------------- events

  function eventsTable(s) {
    const evs = (s.events || []).slice().reverse();
    if (!evs.length) {
      $("events").innerHTML = '<div class="empty">No scaling, fail-over or hand-over events yet.</div>';
    } else {
      const rows = evs.map((e) => `<tr><td>${num(e.t_s, 1)} s</td>` +
        `<td>${num(s.t_s - e.t_s, 0)} s ago</td>` +
        `<td><span class="kind ${esc(e.kind)}">${esc(kindLabel(e.kind))}</span></td>` +
        `<td>${e.stage ?? "–"}</td><td>${esc(e.device ?? "–")}</td><td>${esc(e.reason ?? "")}</td>` +
        `<td>${e.decision_to_serving_s === null || e.decision_to_serving_s === undefined ? "–" : num(e.decision_to_serving_s, 2) + " s"}</td></tr>`);
      $("events").innerHTML = '<table class="events"><thead><tr><th>time</th><th></th><th>event</th>' +
        "<th>stage</th><th>device</th><th>why</th><th>serving after</th></tr></thead>" +
        `<tbody>${rows.join("")}</tbody></table>`;
    }
    rendered("panel-events");
  }

  // ---------------------------------------------------------------- wiring

  const PANELS = [header, graph, plan, gantt, overTime, eventsTable];

  function apply(s) {
    for (const draw of PANELS) {
      try {
        draw(s);
      } catch (err) {  // one broken panel must not stop the others from updating
        console.error(draw.name, err);
      }
    }
    updates += 1;
    lastAt = Date.now();
    document.body.dataset.updates = String(updates);
    $("clock").textContent = `t ${num(s.t_s, 1)} s · updated now`;
  }

  function tick() {
    const dot = $("dot");
    if (!lastAt) return;
    const age = (Date.now() - lastAt) / 1000;
    dot.className = "dot " + (age < 3 ? "live" : "stale");
    if (age >= 3) {
      $("clock").textContent = `no update for ${age.toFixed(0)} s`;
      const st = $("status");
      st.textContent = "disconnected";
      st.dataset.state = "disconnected";
    } else {
      $("clock").textContent = $("clock").textContent.replace(/updated .*/, `updated ${age.toFixed(1)} s ago`);
    }
  }

  function connect() {
    // EventSource reconnects by itself (the server ends each stream after a few seconds and
    // says when to come back); a key in the page's URL goes along as ?key=.
    const src = new EventSource("v1/live" + query);
    src.onmessage = (ev) => apply(JSON.parse(ev.data));
  }

  window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
  setInterval(tick, 500);
  connect();
})();
