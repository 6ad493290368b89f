// odinlab attribution viewer: one row per image, one column per (model, method).
// The kernel answers {kind: "page"} with the page's images (PNG buffers), then {kind: "cells", column: j}
// with column j's heat layers (RGBA PNGs: the colour map's colour, alpha = overlay()'s blending weight).
// The columns are asked for one after the other, so the kernel is busy for one column of one page at a
// time. The opacity slider only redraws canvases here (image, then the layer with globalAlpha = opacity):
// moving it sends nothing to the kernel.
// DOM hooks for tests: .odinlab-attribution (root; data-version, data-page, data-state = loading |
// computing | done | message, data-busy-ms = the longest kernel request of the page, data-total-ms,
// data-page-ms), select.odinlab-attr-models / .odinlab-attr-methods (multiple), select.odinlab-attr-target,
// input.odinlab-attr-opacity, progress.odinlab-attr-progress, th.odinlab-attr-col[data-column]
// [data-model-id][data-method][data-ms], .odinlab-attr-error, tr.odinlab-attr-row[data-index]
// [data-image-id] (.selected), canvas.odinlab-attr-image, td.odinlab-attr-cell[data-column][data-drawn]
// canvas.odinlab-attr-canvas, .odinlab-attr-pred, .odinlab-attr-pager button[data-step], .odinlab-message.

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function decode(buffer) {
  // a message buffer (DataView or ArrayBuffer) of PNG bytes, decoded without a Blob URL
  return createImageBitmap(new Blob([buffer], { type: "image/png" }),
    { colorSpaceConversion: "none", premultiplyAlpha: "default" });
}

function paint(canvas, image, heat, opacity) {
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.globalAlpha = 1;
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  if (heat) {
    context.globalAlpha = opacity;
    context.drawImage(heat, 0, 0, canvas.width, canvas.height);
    context.globalAlpha = 1;
  }
}

function chooser(cls, multiple) {
  const select = el("select", cls);
  select.multiple = multiple;
  if (multiple) select.size = 4;
  return select;
}

function fillChooser(select, choices, chosen) {
  const wanted = new Set(chosen);
  const values = [...choices, ...chosen.filter((c) => !choices.includes(c))]; // a bad choice stays visible
  select.replaceChildren(...values.map((value) => {
    const option = el("option", "", value);
    option.value = value;
    option.selected = wanted.has(value);
    return option;
  }));
}

function render({ model, el: host }) {
  const root = el("div", "odinlab-attribution");
  const bar = el("div", "odinlab-attr-toolbar");
  const models = chooser("odinlab-attr-models", true);
  const methods = chooser("odinlab-attr-methods", true);
  const target = chooser("odinlab-attr-target", false);
  const slider = el("input", "odinlab-attr-opacity");
  Object.assign(slider, { type: "range", min: "0", max: "1", step: "0.05" });
  const sliderText = el("span", "odinlab-attr-opacity-value");
  const labelled = (text, control, extra) => {
    const label = el("label", "odinlab-attr-control", text);
    label.append(control, ...(extra ? [extra] : []));
    return label;
  };
  bar.append(labelled("models ", models), labelled("methods ", methods), labelled("target ", target),
    labelled("opacity ", slider, sliderText));
  const message = el("div", "odinlab-message");
  const status = el("div", "odinlab-attr-status");
  const progress = el("progress", "odinlab-attr-progress");
  const progressText = el("span", "odinlab-attr-progress-text");
  status.append(progress, progressText);
  const table = el("table", "odinlab-attr-grid");
  const head = el("thead");
  const body = el("tbody");
  table.append(head, body);
  const pager = el("div", "odinlab-attr-pager");
  const previous = el("button", "", "◀ previous");
  const next = el("button", "", "next ▶");
  const pageText = el("span", "odinlab-attr-page-text");
  previous.dataset.step = "-1"; next.dataset.step = "1";
  pager.append(previous, pageText, next);
  root.append(bar, message, status, table, pager);
  host.appendChild(root);

  let opacity = model.get("opacity");
  let token = 0;           // bumped by every load: replies and decodes of an older load are dropped
  let rows = [];           // [{index, image_id, label_name, image, tr, cells: [{td, canvas, heat}]}]
  let scheduled = false;

  function repaint() {
    for (const row of rows) for (const cell of row.cells) {
      if (cell.heat) paint(cell.canvas, row.image, cell.heat, opacity);
    }
  }

  function setOpacity(value) {
    opacity = Math.min(1, Math.max(0, Number(value)));
    slider.value = String(opacity);
    sliderText.textContent = opacity.toFixed(2);
    repaint();
  }

  function toolbar() {
    fillChooser(models, model.get("model_choices"), model.get("models"));
    fillChooser(methods, model.get("method_choices"), model.get("methods"));
    fillChooser(target, model.get("target_choices"), [model.get("target")]);
  }

  function send(select, name) {
    const values = Array.from(select.selectedOptions, (option) => option.value);
    model.set(name, name === "target" ? values[0] || "prediction" : values);
    model.save_changes();
  }

  function header() {
    const tr = el("tr");
    tr.appendChild(el("th", "odinlab-attr-imagehead", "image"));
    model.get("columns").forEach((column, j) => {
      const th = el("th", "odinlab-attr-col");
      Object.assign(th.dataset, { column: String(j), modelId: column.model_id, method: column.method });
      th.append(el("div", "odinlab-attr-colname", column.method), el("div", "odinlab-attr-colmodel", column.model_id));
      if (column.error) th.appendChild(el("div", "odinlab-attr-error", column.error));
      tr.appendChild(th);
    });
    head.replaceChildren(tr);
  }

  function showProgress(done, total, text) {
    progress.max = Math.max(total, 1);
    progress.value = done;
    progressText.textContent = text;
  }

  function load() {
    token += 1;
    rows = [];
    body.replaceChildren();
    const text = model.get("message");
    message.textContent = text;
    message.style.display = text ? "" : "none";
    for (const part of [status, table, pager]) part.style.display = text ? "none" : "";
    root.dataset.version = String(model.get("version"));
    root.dataset.page = String(model.get("page_number"));
    delete root.dataset.busyMs; delete root.dataset.totalMs; delete root.dataset.pageMs;
    if (text) { root.dataset.state = "message"; return; }
    header();
    const size = model.get("page_size"), total = model.get("total"), page = model.get("page_number");
    const pages = Math.max(1, Math.ceil(total / size));
    const last = Math.min(total, (page + 1) * size);
    pageText.textContent = ` page ${page + 1} of ${pages} · images ${page * size + 1}–${last} of ${total} `;
    previous.disabled = page <= 0;
    next.disabled = page >= pages - 1;
    root.dataset.state = "loading";
    showProgress(0, model.get("columns").length, "loading the images…");
    model.send({ kind: "page", version: model.get("version"), page });
  }

  function schedule() {
    // the kernel changes version, page and columns in one message: one load for all of them
    if (scheduled) return;
    scheduled = true;
    setTimeout(() => { scheduled = false; load(); }, 0);
  }

  function askColumn(j) {
    const columns = model.get("columns");
    if (j >= columns.length) {
      root.dataset.state = "done";
      const { totalMs, busyMs } = root.dataset;
      showProgress(columns.length, columns.length,
        `${columns.length} columns · kernel busy ${totalMs} ms (longest request ${busyMs} ms)`);
      return;
    }
    root.dataset.state = "computing";
    const { method, model_id: modelId } = columns[j];
    showProgress(j, columns.length, `computing ${method} of ${modelId} (${j + 1} of ${columns.length})…`);
    model.send({ kind: "cells", version: model.get("version"), page: model.get("page_number"), column: j });
  }

  function busy(ms) {
    root.dataset.busyMs = String(Math.max(Number(root.dataset.busyMs || 0), ms));
    root.dataset.totalMs = String(Math.round(10 * (Number(root.dataset.totalMs || 0) + ms)) / 10);
  }

  function row(item, image) {
    const tr = el("tr", "odinlab-attr-row");
    Object.assign(tr.dataset, { index: String(item.index), imageId: item.image_id });
    const first = el("td", "odinlab-attr-imagecell");
    const canvas = el("canvas", "odinlab-attr-image");
    canvas.width = image.width; canvas.height = image.height;
    paint(canvas, image, null, 0);
    first.append(canvas, el("div", "odinlab-attr-caption", `${item.image_id} · label ${item.label_name ?? "none"}`));
    first.title = "click: select this image";
    first.addEventListener("click", () => model.send({ kind: "click", index: item.index }));
    tr.appendChild(first);
    const cells = model.get("columns").map((column, j) => {
      const td = el("td", "odinlab-attr-cell");
      td.dataset.column = String(j);
      td.dataset.drawn = "false";
      const cell = el("canvas", "odinlab-attr-canvas");
      cell.width = image.width; cell.height = image.height;
      paint(cell, image, null, 0);
      td.append(cell, el("div", "odinlab-attr-pred", column.error ? "—" : "…"));
      tr.appendChild(td);
      return { td, canvas: cell, heat: null };
    });
    return { ...item, image, tr, cells };
  }

  async function onPage(content, buffers, mine) {
    const images = await Promise.all(buffers.map(decode));
    if (mine !== token) return;
    rows = content.rows.map((item, i) => row(item, images[i]));
    body.replaceChildren(...rows.map((r) => r.tr));
    highlight();
    askColumn(0);
  }

  async function onCells(content, buffers, mine) {
    const j = content.column;
    const th = head.querySelector(`th.odinlab-attr-col[data-column="${j}"]`);
    if (th) th.dataset.ms = String(content.ms);
    if (content.error) {
      if (th && !th.querySelector(".odinlab-attr-error")) {
        th.appendChild(el("div", "odinlab-attr-error", content.error));
      }
      for (const r of rows) r.cells[j].td.querySelector(".odinlab-attr-pred").textContent = "—";
    } else {
      const layers = await Promise.all(buffers.map(decode));
      if (mine !== token) return;
      rows.forEach((r, i) => {
        const cell = r.cells[j];
        cell.heat = layers[i];
        paint(cell.canvas, r.image, cell.heat, opacity);
        cell.td.dataset.drawn = "true";
        const predicted = content.predicted[i];
        const caption = cell.td.querySelector(".odinlab-attr-pred");
        caption.textContent = `pred ${predicted ?? "?"}`;
        caption.classList.toggle("wrong", predicted !== r.label_name);
      });
    }
    askColumn(j + 1);
  }

  function onMessage(content, buffers) {
    if (!content || content.stale || (content.kind !== "page" && content.kind !== "cells")) return;
    if (content.version !== model.get("version") || content.page !== model.get("page_number")) return;
    busy(content.ms || 0);
    if (content.kind === "page") {
      root.dataset.pageMs = String(content.ms);
      onPage(content, buffers || [], token);
    } else {
      onCells(content, buffers || [], token);
    }
  }

  function highlight() {
    const chosen = model.get("chosen");
    for (const r of rows) r.tr.classList.toggle("selected", r.index === chosen);
  }

  slider.addEventListener("input", () => setOpacity(slider.value));
  models.addEventListener("change", () => send(models, "models"));
  methods.addEventListener("change", () => send(methods, "methods"));
  target.addEventListener("change", () => send(target, "target"));
  for (const button of [previous, next]) {
    button.addEventListener("click", () => {
      model.set("page_number", model.get("page_number") + Number(button.dataset.step));
      model.save_changes();
    });
  }
  const onOpacity = () => setOpacity(model.get("opacity"));
  const reloads = ["version", "page_number", "columns", "message"];
  const choices = ["model_choices", "method_choices", "target_choices", "models", "methods", "target"];
  for (const name of reloads) model.on(`change:${name}`, schedule);
  for (const name of choices) model.on(`change:${name}`, toolbar);
  model.on("change:chosen", highlight);
  model.on("change:opacity", onOpacity);
  model.on("msg:custom", onMessage);
  toolbar();
  setOpacity(opacity);
  load();
  return () => {
    token += 1;
    for (const name of reloads) model.off(`change:${name}`, schedule);
    for (const name of choices) model.off(`change:${name}`, toolbar);
    model.off("change:chosen", highlight);
    model.off("change:opacity", onOpacity);
    model.off("msg:custom", onMessage);
  };
}

export default { render };
