// odinlab confusion matrix. A click sends only its coordinates; the kernel resolves the images.
// DOM hooks: .odinlab-confusion (root), td.odinlab-cell[data-label][data-predicted][data-count],
// th.odinlab-row-header[data-label], th.odinlab-col-header[data-predicted], .odinlab-cell.selected,
// .odinlab-cell.has-selection (holds some of a selection made elsewhere), .odinlab-message.

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof DataView) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof Uint8Array) return value;
  return new Uint8Array(value);
}

function offsetsOf(value) {
  const bytes = bytesOf(value);
  const copy = new Uint8Array(bytes); // aligned copy
  const wide = new BigInt64Array(copy.buffer, 0, copy.byteLength >> 3);
  return Array.from(wide, Number);
}

function selectedPerCell(mask, offsets) {
  const bytes = bytesOf(mask);
  const out = [];
  for (let c = 0; c + 1 < offsets.length; c++) {
    let k = 0;
    for (let i = offsets[c]; i < offsets[c + 1]; i++) {
      const b = i >> 3;
      if (b < bytes.length && ((bytes[b] >> (i & 7)) & 1)) k++;
    }
    out.push(k);
  }
  return out;
}

function render({ model, el: host }) {
  const root = el("div", "odinlab-confusion");
  host.appendChild(root);

  function send(target, label, predicted) {
    model.send({ kind: "click", target, label, predicted });
  }

  function draw() {
    root.replaceChildren();
    const text = model.get("message");
    if (text) { root.appendChild(el("div", "odinlab-message", text)); return; }
    const classes = model.get("classes");
    const n = classes.length;
    const offsets = offsetsOf(model.get("offsets"));
    if (offsets.length !== n * n + 1) { root.appendChild(el("div", "odinlab-message", "no images selected")); return; }
    const counts = [];
    for (let c = 0; c < n * n; c++) counts.push(offsets[c + 1] - offsets[c]);
    const rowSums = Array.from({ length: n }, (_, i) => counts.slice(i * n, i * n + n).reduce((a, b) => a + b, 0));
    const colSums = Array.from({ length: n }, (_, j) => classes.reduce((s, _c, i) => s + counts[i * n + j], 0));
    const total = rowSums.reduce((a, b) => a + b, 0);
    const rates = model.get("rates");
    const marked = selectedPerCell(model.get("selection_mask"), offsets);
    const selected = model.get("selected") || {};

    const title = el("div", "odinlab-confusion-title",
      `${model.get("model_name")} · ${total} images · rows: label, columns: predicted · rates by ${rates}`);
    root.appendChild(title);
    const table = el("table", "odinlab-confusion-table");
    const head = el("tr");
    head.appendChild(el("th", "odinlab-corner", "label \\ predicted"));
    classes.forEach((name, j) => {
      const th = el("th", "odinlab-col-header", name);
      th.dataset.predicted = String(j);
      th.title = `predicted ${name}: ${colSums[j]} images (click to select)`;
      if (selected.kind === "column" && selected.predicted === j) th.classList.add("selected");
      th.addEventListener("click", () => send("column", null, j));
      head.appendChild(th);
    });
    head.appendChild(el("th", "odinlab-total", "total"));
    table.appendChild(head);
    classes.forEach((name, i) => {
      const tr = el("tr");
      const th = el("th", "odinlab-row-header", name);
      th.dataset.label = String(i);
      th.title = `label ${name}: ${rowSums[i]} images (click to select)`;
      if (selected.kind === "row" && selected.label === i) th.classList.add("selected");
      th.addEventListener("click", () => send("row", i, null));
      tr.appendChild(th);
      for (let j = 0; j < n; j++) {
        const c = i * n + j;
        const count = counts[c];
        const denominator = rates === "row" ? rowSums[i] : rates === "column" ? colSums[j] : total;
        const rate = denominator ? count / denominator : 0;
        const td = el("td", "odinlab-cell" + (i === j ? " diagonal" : count ? " off" : ""));
        td.dataset.label = String(i);
        td.dataset.predicted = String(j);
        td.dataset.count = String(count);
        const shade = i === j ? `rgba(31, 119, 180, ${0.08 + 0.7 * rate})` : `rgba(214, 39, 40, ${count ? 0.08 + 0.7 * rate : 0})`;
        td.style.background = shade;
        td.appendChild(el("div", "odinlab-count", String(count)));
        td.appendChild(el("div", "odinlab-rate", `${(100 * rate).toFixed(1)}%`));
        if (marked[c]) {
          td.classList.add("has-selection");
          td.appendChild(el("div", "odinlab-marked", marked[c] === count ? "selected" : `${marked[c]} selected`));
        }
        if ((selected.kind === "cell" && selected.label === i && selected.predicted === j) ||
            (selected.kind === "row" && selected.label === i) || (selected.kind === "column" && selected.predicted === j)) {
          td.classList.add("selected");
        }
        td.title = `label ${name}, predicted ${classes[j]}: ${count} images (${(100 * rate).toFixed(1)}% of the ${rates})`;
        td.addEventListener("click", () => send("cell", i, j));
        tr.appendChild(td);
      }
      tr.appendChild(el("td", "odinlab-total", String(rowSums[i])));
      table.appendChild(tr);
    });
    const foot = el("tr");
    foot.appendChild(el("th", "odinlab-total", "total"));
    colSums.forEach((s) => foot.appendChild(el("td", "odinlab-total", String(s))));
    foot.appendChild(el("td", "odinlab-total", String(total)));
    table.appendChild(foot);
    root.appendChild(table);
  }

  for (const name of ["message", "classes", "offsets", "selection_mask", "selected", "rates", "model_name"]) {
    model.on(`change:${name}`, draw);
  }
  draw();
  return () => {
    for (const name of ["message", "classes", "offsets", "selection_mask", "selected", "rates", "model_name"]) {
      model.off(`change:${name}`, draw);
    }
  };
}

export default { render };
