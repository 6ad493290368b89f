// odinlab model comparison: agreement and McNemar, per-class deltas (SVG bars), movement between
// the versions (SVG histogram), layer CKA (SVG heat-map), attribution agreement (on a button), and
// the disagreements as cards (PNGs as buffers of one {kind: "thumbs"} message) that select.
// DOM hooks for tests: .odinlab-compare (root), .odinlab-message, .odinlab-compare-summary[data-agreement]
// [data-mcnemar-p], rect.odinlab-delta-bar[data-label][data-delta], button.odinlab-compare-metric[data-metric],
// .odinlab-compare-movement (rect.odinlab-move-bar[data-kind]), rect.odinlab-cka-cell[data-layer-a][data-layer-b]
// [data-value], button.odinlab-compare-attribution-button, .odinlab-compare-attribution[data-state],
// button.odinlab-compare-group[data-group] (.selected), .odinlab-compare-card[data-index][data-image-id]
// [data-right][data-shown] (.selected when chosen, .has-shown when in a selection shown from elsewhere).

const SVG = "http://www.w3.org/2000/svg";
const GOOD = "#2ca02c", BAD = "#d62728", KEPT = "#9db4cc", AXIS = "#888";
const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];
const GROUP_TEXT = { a: "only a right", b: "only b right", neither: "neither right" };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toPrecision(digits);
}

function pct(value) {
  return value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)}%`;
}

function viridis(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
  const [a, b] = [VIRIDIS[i], VIRIDIS[i + 1]].map((h) => [1, 3, 5].map((k) => parseInt(h.slice(k, k + 2), 16)));
  return `rgb(${a.map((v, k) => Math.round(v + f * (b[k] - v))).join(",")})`;
}

function summaryTable(s) {
  const box = el("div", "odinlab-compare-summary");
  Object.assign(box.dataset, { agreement: String(s.agreement), mcnemarP: String(s.mcnemar_p) });
  box.appendChild(el("div", "odinlab-compare-heading", "Agreement"));
  const rows = [
    ["agreement", pct(s.agreement)], [`accuracy ${s.model_a}`, pct(s.accuracy_a)],
    [`accuracy ${s.model_b}`, pct(s.accuracy_b)], ["both right", s.both_right], ["only a right", s.only_a_right],
    ["only b right", s.only_b_right], ["both wrong", s.both_wrong],
    ["McNemar", `${fmt(s.mcnemar_statistic)} (p = ${fmt(s.mcnemar_p, 2)})`],
  ];
  const table = el("table");
  for (const [k, v] of rows) {
    const tr = el("tr");
    tr.append(el("th", "", k), el("td", "", String(v)));
    table.appendChild(tr);
  }
  const better = s.only_b_right > s.only_a_right ? s.model_b : s.model_a;
  const verdict = s.mcnemar_p < 0.05 ? `${better} is better (McNemar p < 0.05)` : "no significant difference";
  box.append(table, el("div", "odinlab-compare-verdict", verdict));
  return box;
}

function deltaChart(rows, metric) {
  const rowH = 16, left = 60, width = 300, mid = left + (width - left - 50) / 2, half = (width - left - 50) / 2;
  const deltas = rows.map((r) => r[`${metric}_delta`] ?? 0);
  const scale = half / Math.max(0.05, ...deltas.map(Math.abs));
  const chart = svg("svg", { width, height: rows.length * rowH + 8, class: "odinlab-delta-chart" });
  chart.appendChild(svg("line", { x1: mid, x2: mid, y1: 0, y2: rows.length * rowH + 4, stroke: AXIS }));
  rows.forEach((r, i) => {
    const d = deltas[i], y = 4 + i * rowH;
    chart.appendChild(svg("text", { x: left - 4, y: y + 11, "text-anchor": "end", class: "odinlab-chart-text" },
      r.label_name));
    const bar = svg("rect", { x: d >= 0 ? mid : mid + d * scale, y: y + 2, width: Math.max(1, Math.abs(d) * scale),
      height: rowH - 4, fill: d >= 0 ? GOOD : BAD, class: "odinlab-delta-bar", "data-label": r.label_name,
      "data-delta": d });
    bar.appendChild(svg("title", {}, `${r.label_name}: ${metric} ${fmt(r[`${metric}_a`])} → ${fmt(r[`${metric}_b`])}` +
      ` (${d >= 0 ? "+" : ""}${fmt(d, 2)}), ${r.support} images`));
    chart.appendChild(bar);
    chart.appendChild(svg("text", { x: width - 4, y: y + 11, "text-anchor": "end", class: "odinlab-chart-text" },
      `${d >= 0 ? "+" : ""}${d.toFixed(2)}`));
  });
  return chart;
}

function histogram(series, edges, width = 260, height = 70) {
  // series: [{counts, color, kind}], stacked
  const n = edges.length - 1, barW = width / n;
  const totals = Array.from({ length: n }, (_, i) => series.reduce((a, s) => a + s.counts[i], 0));
  const top = Math.max(1, ...totals);
  const chart = svg("svg", { width, height: height + 14, class: "odinlab-histogram" });
  for (let i = 0; i < n; i++) {
    let y = height;
    for (const s of series) {
      const h = (s.counts[i] / top) * height;
      if (!h) continue;
      y -= h;
      const bar = svg("rect", { x: i * barW + 0.5, y, width: barW - 1, height: h, fill: s.color,
        class: "odinlab-move-bar", "data-kind": s.kind });
      bar.appendChild(svg("title", {}, `${s.kind}: ${s.counts[i]} in [${fmt(edges[i], 2)}, ${fmt(edges[i + 1], 2)})`));
      chart.appendChild(bar);
    }
  }
  chart.appendChild(svg("line", { x1: 0, x2: width, y1: height, y2: height, stroke: AXIS }));
  chart.appendChild(svg("text", { x: 0, y: height + 12, class: "odinlab-chart-text" }, fmt(edges[0], 2)));
  chart.appendChild(svg("text", { x: width, y: height + 12, "text-anchor": "end", class: "odinlab-chart-text" },
    fmt(edges[n], 2)));
  return chart;
}

function ckaMap(cka) {
  const cell = 34, left = 110, topPad = 16;
  const { layers_a: rows, layers_b: cols, values } = cka;
  // room on the right and below for the slanted column names
  const chart = svg("svg", { width: left + cols.length * cell + 90, height: topPad + rows.length * cell + 70,
    class: "odinlab-cka-map" });
  rows.forEach((a, i) => {
    chart.appendChild(svg("text", { x: left - 4, y: topPad + i * cell + cell / 2 + 4, "text-anchor": "end",
      class: "odinlab-chart-text" }, a));
    cols.forEach((b, j) => {
      const v = values[i][j];
      const rect = svg("rect", { x: left + j * cell, y: topPad + i * cell, width: cell - 2, height: cell - 2,
        fill: v === null ? "#ccc" : viridis(v), class: "odinlab-cka-cell", "data-layer-a": a, "data-layer-b": b,
        "data-value": v });
      rect.appendChild(svg("title", {}, `CKA(${a} of a, ${b} of b) = ${fmt(v)}`));
      chart.appendChild(rect);
      chart.appendChild(svg("text", { x: left + j * cell + cell / 2 - 1, y: topPad + i * cell + cell / 2 + 3,
        "text-anchor": "middle", class: "odinlab-cka-text", fill: v !== null && v > 0.6 ? "#000" : "#fff" },
      v === null ? "" : v.toFixed(2)));
    });
  });
  cols.forEach((b, j) => {
    const x = left + j * cell + cell / 2, y = topPad + rows.length * cell + 4;
    chart.appendChild(svg("text", { x, y, transform: `rotate(40 ${x} ${y})`, class: "odinlab-chart-text" }, b));
  });
  chart.appendChild(svg("text", { x: left, y: 11, class: "odinlab-chart-text" }, "rows: layers of a, columns: of b"));
  return chart;
}

function render({ model, el: host }) {
  const root = el("div", "odinlab-compare");
  host.appendChild(root);
  const message = el("div", "odinlab-message");
  const title = el("div", "odinlab-compare-title");
  const panels = el("div", "odinlab-compare-panels");
  const attribution = el("div", "odinlab-compare-attribution");
  const groups = el("div", "odinlab-compare-groups");
  const status = el("div", "odinlab-compare-status");
  const grid = el("div", "odinlab-compare-cards");
  root.append(message, title, panels, groups, status, grid);
  const urls = [];
  let version = -1;

  function panel(cls, heading, ...content) {
    const box = el("div", `odinlab-compare-panel ${cls}`);
    box.appendChild(el("div", "odinlab-compare-heading", heading));
    box.append(...content);
    return box;
  }

  function note(text) { return el("div", "odinlab-compare-note", text); }

  function drawPanels() {
    const s = model.get("summary");
    if (!s || s.images === undefined) { panels.replaceChildren(); return; }
    const metric = model.get("metric");
    const buttons = el("div", "odinlab-compare-metrics");
    for (const m of ["precision", "recall", "f1"]) {
      const b = el("button", "odinlab-compare-metric", m);
      b.type = "button"; b.dataset.metric = m;
      b.classList.toggle("selected", m === metric);
      b.addEventListener("click", () => { model.set("metric", m); model.save_changes(); });
      buttons.appendChild(b);
    }
    const deltas = panel("odinlab-compare-deltas", `${metric}: b − a per class`, buttons,
      deltaChart(model.get("deltas"), metric));
    const mv = model.get("movement");
    const movement = mv.note ? panel("odinlab-compare-movement", "Movement", note(mv.note))
      : panel("odinlab-compare-movement", `Movement in ${mv.layer} (shared PCA)`,
        histogram([{ counts: mv.hist_kept, color: KEPT, kind: "kept" }, { counts: mv.hist_flipped, color: BAD,
          kind: "flipped" }], mv.edges),
        note(`${mv.flipped} of ${mv.images} predictions flipped; median move ${fmt(mv.median_flipped)} (flipped) ` +
          `vs ${fmt(mv.median_kept)} (kept), in typical neighbour distances`));
    const cka = model.get("cka");
    const ckaPanel = cka.note ? panel("odinlab-compare-cka", "Layer CKA", note(cka.note))
      : panel("odinlab-compare-cka", "Layer CKA (linear)", ckaMap(cka));
    panels.replaceChildren(summaryTable(s), deltas, ckaPanel, movement, attribution);
    drawAttribution();
  }

  function drawAttribution() {
    const a = model.get("attribution") || {};
    attribution.className = "odinlab-compare-panel odinlab-compare-attribution";
    attribution.dataset.state = a.state || "idle";
    const button = el("button", "odinlab-compare-attribution-button",
      a.state === "done" ? "compute again" : `compute (${a.method}, ${a.images} images)`);
    button.type = "button";
    button.disabled = a.state === "computing";
    button.addEventListener("click", () => model.send({ kind: "attribution" }));
    const parts = [el("div", "odinlab-compare-heading", "Attribution agreement (Spearman ρ per image)"), button];
    if (a.state === "computing") parts.push(el("div", "odinlab-compare-computing", `computing ${a.method}…`));
    if (a.state === "error") parts.push(el("div", "odinlab-message", a.text));
    if (a.state === "done") {
      parts.push(histogram([{ counts: a.hist, color: "#1f77b4", kind: "spearman" }], a.edges));
      parts.push(note(`mean ρ ${fmt(a.mean)}, median ${fmt(a.median)} over ${a.images} images (1: same pixels matter)`));
    }
    attribution.replaceChildren(...parts);
    paintCards();
  }

  function drawGroups() {
    const counts = model.get("groups") || {};
    groups.replaceChildren(el("span", "odinlab-compare-heading", "Select the disagreements: "));
    for (const g of ["a", "b", "neither"]) {
      const b = el("button", "odinlab-compare-group", `${GROUP_TEXT[g]} (${counts[g] ?? 0})`);
      b.type = "button"; b.dataset.group = g;
      b.addEventListener("click", () => model.send({ kind: "group", group: g }));
      groups.appendChild(b);
    }
  }

  function card(data) {
    const node = el("div", "odinlab-compare-card");
    Object.assign(node.dataset, { index: String(data.index), imageId: data.image_id, right: data.right });
    const size = model.get("thumb_size");
    const img = el("img", "odinlab-compare-img");
    img.width = size; img.height = size; img.alt = data.image_id;
    const label = el("div", "odinlab-compare-label", `label ${data.label_name ?? "?"}`);
    const a = el("div", `odinlab-compare-pred ${data.right === "a" ? "right" : "wrong"}`,
      `a: ${data.predicted_a} ${data.right === "a" ? "✓" : "✗"}`);
    const b = el("div", `odinlab-compare-pred ${data.right === "b" ? "right" : "wrong"}`,
      `b: ${data.predicted_b} ${data.right === "b" ? "✓" : "✗"}`);
    const badge = el("div", `odinlab-compare-badge right-${data.right}`,
      data.right === "neither" ? "neither right" : `${data.right} right`);
    const extra = el("div", "odinlab-compare-extra", data.moved === null ? "" : `moved ${fmt(data.moved, 2)}`);
    node.title = `${data.image_id}: label ${data.label_name}, a predicts ${data.predicted_a}, b predicts ` +
      `${data.predicted_b}\nclick: select it`;
    node.append(img, label, a, b, badge, extra);
    node.addEventListener("click", () => model.send({ kind: "click", index: data.index }));
    return node;
  }

  function paintCards() {
    const chosen = model.get("chosen"), group = model.get("group");
    const shownBytes = model.get("shown");
    const view = shownBytes && shownBytes.byteLength
      ? new DataView(shownBytes.buffer || shownBytes, shownBytes.byteOffset || 0, shownBytes.byteLength) : null;
    const rho = (model.get("attribution") || {}).by_image || {};
    for (const node of grid.children) {
      const i = Number(node.dataset.index);
      const n = view && 4 * i + 4 <= view.byteLength ? view.getUint32(4 * i, true) : null;
      node.dataset.shown = n === null ? "" : String(n);
      node.classList.toggle("has-shown", !!n);
      node.classList.toggle("selected", i === chosen || (!!group && node.dataset.right === group));
      const r = rho[node.dataset.imageId];
      const extra = node.querySelector(".odinlab-compare-extra");
      const moved = model.get("cards")[i]?.moved;
      extra.textContent = [moved === null || moved === undefined ? "" : `moved ${fmt(moved, 2)}`,
        r === undefined ? "" : `ρ ${fmt(r, 2)}`].filter(Boolean).join(" · ");
    }
    for (const b of groups.querySelectorAll(".odinlab-compare-group")) b.classList.toggle("selected", b.dataset.group === group);
    const total = model.get("shown_total");
    status.textContent = total === 0 ? "No images selected."
      : total > 0 ? `Selected: ${total} image${total === 1 ? "" : "s"}, ${grid.querySelectorAll(".has-shown").length} of them shown here.`
      : "Click a card to select its image.";
  }

  function onMessage(content, buffers) {
    placeThumbs(model, grid, ".odinlab-compare-img", urls, content, buffers);  // thumbs.js
  }

  function update() {
    const text = model.get("message");
    message.textContent = text;
    message.style.display = text ? "" : "none";
    for (const part of [title, panels, groups, status, grid]) part.style.display = text ? "none" : "";
    title.textContent = model.get("title");
    drawPanels();
    drawGroups();
    if (model.get("version") !== version) {
      version = model.get("version");
      for (const url of urls.splice(0)) URL.revokeObjectURL(url);
      grid.replaceChildren(...model.get("cards").map(card));
      if (!text && model.get("cards").length) model.send({ kind: "thumbs" });
    }
    paintCards();
  }

  const names = ["message", "title", "summary", "deltas", "metric", "movement", "cka", "groups", "cards", "version"];
  for (const name of names) model.on(`change:${name}`, update);
  model.on("change:attribution", drawAttribution);
  for (const name of ["chosen", "group", "shown", "shown_total"]) model.on(`change:${name}`, paintCards);
  model.on("msg:custom", onMessage);
  update();
  return () => {
    for (const name of names) model.off(`change:${name}`, update);
    model.off("change:attribution", drawAttribution);
    for (const name of ["chosen", "group", "shown", "shown_total"]) model.off(`change:${name}`, paintCards);
    model.off("msg:custom", onMessage);
    for (const url of urls.splice(0)) URL.revokeObjectURL(url);
  };
}

export default { render };
