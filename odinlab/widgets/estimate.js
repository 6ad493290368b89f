// odinlab sampled estimate: one SVG row per item — the interval (bar), the estimate (dot) and the exact value
// (red tick) beside it. Tens of rows, sent as JSON.
// DOM hooks for tests: .odinlab-estimate (root), svg.odinlab-estimate-plot, g.odinlab-estimate-row[data-row]
// [data-label][data-estimate][data-lower][data-upper][data-exact][data-covered], .odinlab-estimate-summary,
// .odinlab-message.

const SVG = "http://www.w3.org/2000/svg";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(x) {
  return x === null || x === undefined ? "–" : Number(x).toPrecision(3);
}

function draw(rows, value) {
  const left = 120, right = 20, top = 24, rowHeight = 20, width = 560;
  const height = top + rowHeight * rows.length + 8;
  const plot = svg("svg", { class: "odinlab-estimate-plot", width, height, viewBox: `0 0 ${width} ${height}` });
  const numbers = rows.flatMap((r) => [r.estimate, r.lower, r.upper, r.exact])
    .filter((v) => v !== null && v !== undefined);
  let lo = Math.min(...numbers), hi = Math.max(...numbers);
  if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;
  const x = (v) => left + ((v - lo) / (hi - lo)) * (width - left - right);
  for (let k = 0; k <= 4; k++) {  // a light grid with 5 ticks
    const v = lo + ((hi - lo) * k) / 4;
    plot.append(svg("line", { x1: x(v), x2: x(v), y1: top - 6, y2: height - 4, class: "odinlab-estimate-grid" }),
      svg("text", { x: x(v), y: top - 10, "text-anchor": "middle", class: "odinlab-estimate-tick" }, fmt(v)));
  }
  rows.forEach((r, i) => {
    const y = top + rowHeight * i + rowHeight / 2;
    const g = svg("g", { class: "odinlab-estimate-row" });
    Object.assign(g.dataset, {
      row: String(i), label: r.label, estimate: String(r.estimate), lower: String(r.lower), upper: String(r.upper),
      exact: String(r.exact), covered: String(r.covered),
    });
    g.append(svg("text", { x: left - 8, y: y + 4, "text-anchor": "end", class: "odinlab-estimate-label" }, r.label));
    if (r.lower !== null && r.upper !== null) {
      g.append(svg("line", { x1: x(r.lower), x2: x(r.upper), y1: y, y2: y, class: "odinlab-estimate-interval" }));
    }
    if (r.estimate !== null) g.append(svg("circle", { cx: x(r.estimate), cy: y, r: 4, class: "odinlab-estimate-dot" }));
    if (r.exact !== null) {
      g.append(svg("line", { x1: x(r.exact), x2: x(r.exact), y1: y - 7, y2: y + 7,
        class: `odinlab-estimate-exact${r.covered === false ? " outside" : ""}` }));
    }
    g.append(svg("title", {}, `${r.label}\nestimate ${fmt(r.estimate)} [${fmt(r.lower)}, ${fmt(r.upper)}]` +
      `\nexact ${fmt(r.exact)}${r.covered === false ? " (outside the interval)" : ""}\n${value}`));
    plot.append(g);
  });
  return plot;
}

function render({ model, el: host }) {
  const root = el("div", "odinlab-estimate");
  host.appendChild(root);

  function update() {
    const message = model.get("message");
    if (message) {
      root.replaceChildren(el("div", "odinlab-message", message));
      return;
    }
    const legend = el("div", "odinlab-estimate-legend");
    legend.append(el("span", "odinlab-estimate-key-dot", "● estimate"),
      el("span", "odinlab-estimate-key-bar", " ─ interval"), el("span", "odinlab-estimate-key-exact", " | exact"));
    root.replaceChildren(el("div", "odinlab-estimate-title", model.get("title")),
      el("div", "odinlab-estimate-subtitle", model.get("subtitle")), legend,
      draw(model.get("rows"), model.get("value")), el("div", "odinlab-estimate-summary", model.get("summary")));
  }

  const names = ["message", "title", "subtitle", "summary", "rows", "value"];
  for (const name of names) model.on(`change:${name}`, update);
  update();
  return () => { for (const name of names) model.off(`change:${name}`, update); };
}

export default { render };
