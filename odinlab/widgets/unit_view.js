// odinlab unit view: a unit's activation-maximization image, its top and least-activating real images
// (PNGs as buffers of one {kind: "thumbs"} message, top then least), the values it tracks best, and a
// button that selects its top images.
// DOM hooks for tests: .odinlab-unit (root, data-unit, data-selected), .odinlab-message,
// img.odinlab-unit-maximized, button.odinlab-unit-maximize, .odinlab-unit-max-status[data-state],
// .odinlab-unit-thumb[data-kind="top"|"low"][data-image-id][data-index] (.shown when in a selection shown
// from elsewhere), .odinlab-unit-score[data-by][data-value], button.odinlab-unit-select (.selected),
// input.odinlab-unit-input, button.odinlab-unit-step[data-step].

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function bytesOf(value) {
  if (!value || !value.byteLength) return null;
  return value instanceof DataView ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
    : value instanceof Uint8Array ? value : new Uint8Array(value.buffer || value);
}

function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toPrecision(digits);
}

function render({ model, el: host }) {
  const root = el("div", "odinlab-unit");
  host.appendChild(root);
  const message = el("div", "odinlab-message");
  const header = el("div", "odinlab-unit-header");
  const body = el("div", "odinlab-unit-body");
  const status = el("div", "odinlab-unit-status");
  root.append(message, header, body, status);
  let urls = [];
  let maxUrl = null;  // the optimized image's, dropped when it is redrawn
  let version = -1;

  function button(cls, text, onClick) {
    const b = el("button", cls, text);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  function goTo(unit) {
    const n = model.get("n_units");
    if (Number.isInteger(unit) && unit >= 0 && unit < n) model.send({ kind: "unit", unit });
  }

  function drawHeader() {
    const unit = model.get("unit"), n = model.get("n_units");
    const input = el("input", "odinlab-unit-input");
    Object.assign(input, { type: "number", min: 0, max: n - 1, value: String(unit) });
    input.addEventListener("change", () => goTo(Number(input.value)));
    const prev = button("odinlab-unit-step", "◀", () => goTo(unit - 1));
    const next = button("odinlab-unit-step", "▶", () => goTo(unit + 1));
    prev.dataset.step = "-1"; next.dataset.step = "1";
    prev.disabled = unit <= 0; next.disabled = unit >= n - 1;
    const select = button("odinlab-unit-select", "select top images", () => model.send({ kind: "select" }));
    select.disabled = !model.get("top").length;
    header.replaceChildren(el("span", "odinlab-unit-title", model.get("title")), prev, input,
      el("span", "", `of ${n}`), next, select);
    paint();
  }

  function drawMaximization() {
    const box = el("div", "odinlab-unit-max");
    box.appendChild(el("div", "odinlab-unit-heading", "maximizes it"));
    const size = model.get("image_size");
    const state = model.get("max_status");
    const bytes = bytesOf(model.get("maximized"));
    if (bytes) {
      if (maxUrl) URL.revokeObjectURL(maxUrl);
      maxUrl = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
      const img = el("img", "odinlab-unit-maximized");
      img.src = maxUrl; img.width = size; img.height = size; img.alt = "activation maximization";
      box.append(img, el("div", "odinlab-unit-caption", `reaches ${fmt(model.get("max_value"))}`));
    } else {
      const empty = el("div", "odinlab-unit-max-empty");
      empty.style.width = `${size}px`; empty.style.height = `${size}px`;
      box.appendChild(empty);
    }
    const text = state === "computing" ? "computing…" : state;
    const line = el("div", "odinlab-unit-max-status", text);
    line.dataset.state = state === "" ? "done" : state === "computing" ? "computing"
      : state === "not computed yet" ? "idle" : "error";
    box.appendChild(line);
    if (!bytes) {
      const b = button("odinlab-unit-maximize", "maximize", () => model.send({ kind: "maximize" }));
      b.disabled = state === "computing";
      box.appendChild(b);
    }
    return box;
  }

  function strip(kind, rows, offset, heading) {
    const box = el("div", "odinlab-unit-strip");
    box.appendChild(el("div", "odinlab-unit-heading", heading));
    const row = el("div", "odinlab-unit-thumbs");
    const size = model.get("thumb_size");
    rows.forEach((r, i) => {
      const node = el("div", "odinlab-unit-thumb");
      Object.assign(node.dataset, { kind, imageId: r.image_id, index: String(offset + i) });
      const img = el("img", "odinlab-unit-img");
      img.width = size; img.height = size; img.alt = r.image_id;
      node.title = `#${r.rank} ${r.image_id}: label ${r.label_name}, activation ${fmt(r.activation)}`;
      node.append(img, el("div", "odinlab-unit-caption", `${r.label_name ?? "?"} · ${fmt(r.activation, 2)}`));
      row.appendChild(node);
    });
    box.appendChild(row);
    return box;
  }

  function scoresTable() {
    const box = el("div", "odinlab-unit-scores");
    box.appendChild(el("div", "odinlab-unit-heading", "tracks best"));
    const table = el("table");
    for (const s of model.get("scores")) {
      const tr = el("tr", "odinlab-unit-score");
      Object.assign(tr.dataset, { by: s.by, value: s.value ?? "" });
      const how = s.auc !== null ? `AUC ${fmt(s.auc, 2)} (${s.auc >= 0.5 ? "fires for it" : "silent for it"})`
        : `ρ ${fmt(s.rho, 2)}`;
      const bar = el("span", "odinlab-unit-bar");
      const fill = el("span", "odinlab-unit-fill");
      fill.style.width = `${Math.round(100 * s.score)}%`;
      bar.appendChild(fill);
      const what = s.value === null ? s.by : `${s.by} = ${s.value}`;
      tr.append(el("td", "", what), el("td", "", how), el("td", "", ""));
      tr.lastChild.appendChild(bar);
      table.appendChild(tr);
    }
    box.appendChild(table);
    if (model.get("scores_note")) box.appendChild(el("div", "odinlab-unit-note", model.get("scores_note")));
    return box;
  }

  function drawBody() {
    for (const url of urls.splice(0)) URL.revokeObjectURL(url);
    const top = model.get("top"), low = model.get("low");
    const images = el("div", "odinlab-unit-images");
    if (model.get("dead")) images.appendChild(el("div", "odinlab-message", model.get("dead")));
    else images.append(strip("top", top, 0, "most active"), strip("low", low, top.length, "least active"));
    body.replaceChildren(drawMaximization(), images, scoresTable());
    if (!model.get("message") && top.length + low.length) model.send({ kind: "thumbs" });
  }

  function paint() {
    root.dataset.unit = String(model.get("unit"));
    root.dataset.selected = String(model.get("selected"));
    const select = header.querySelector(".odinlab-unit-select");
    if (select) {
      select.classList.toggle("selected", model.get("selected"));
      select.textContent = model.get("selected") ? "top images selected ✓" : "select top images";
    }
    const shown = bytesOf(model.get("shown"));
    const n = model.get("top").length;
    for (const node of body.querySelectorAll(".odinlab-unit-thumb")) {
      const i = Number(node.dataset.index);
      const on = !!(shown && shown[i >> 3] & (1 << (i & 7)));
      node.classList.toggle("shown", on);
      node.classList.toggle("selected", model.get("selected") && i < n);
    }
    const total = model.get("shown_total");
    const marked = body.querySelectorAll(".odinlab-unit-thumb.shown").length;
    status.textContent = total < 0 ? "" : `${marked} of these images are in the selection of ${total}.`;
  }

  function onMessage(content, buffers) {
    placeThumbs(model, body, ".odinlab-unit-img", urls, content, buffers);  // thumbs.js
  }

  function update() {
    const text = model.get("message");
    message.textContent = text;
    message.style.display = text ? "" : "none";
    for (const part of [header, body, status]) part.style.display = text ? "none" : "";
    if (text) return;
    drawHeader();
    if (model.get("version") !== version) {
      version = model.get("version");
      drawBody();
    }
    paint();
  }

  function redrawMaximization() {
    const old = body.querySelector(".odinlab-unit-max");
    if (old) old.replaceWith(drawMaximization());
  }

  const names = ["message", "title", "unit", "n_units", "version"];
  for (const name of names) model.on(`change:${name}`, update);
  for (const name of ["maximized", "max_status", "max_value"]) model.on(`change:${name}`, redrawMaximization);
  for (const name of ["selected", "shown", "shown_total", "top"]) model.on(`change:${name}`, paint);
  model.on("msg:custom", onMessage);
  update();
  return () => {
    for (const name of names) model.off(`change:${name}`, update);
    for (const name of ["maximized", "max_status", "max_value"]) model.off(`change:${name}`, redrawMaximization);
    for (const name of ["selected", "shown", "shown_total", "top"]) model.off(`change:${name}`, paint);
    model.off("msg:custom", onMessage);
    for (const url of urls.splice(0)) URL.revokeObjectURL(url);
    if (maxUrl) URL.revokeObjectURL(maxUrl);
  };
}

export default { render };
