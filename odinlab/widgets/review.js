// odinlab label review queue. DOM hooks: .odinlab-review (root: data-image-id, data-decided,
// data-remaining, data-version, data-busy), .odinlab-review-image, .odinlab-review-given[data-class],
// .odinlab-review-suggested[data-class], .odinlab-review-topk-row[data-class],
// button.odinlab-review-action[data-action=accept|keep|change|skip|undo], select.odinlab-review-class,
// .odinlab-review-neighbour[data-image-id], .odinlab-review-counter, .odinlab-review-status,
// .odinlab-review-history tr[data-correction-id][data-undone], .odinlab-review-note, .odinlab-message.
// Keys while the queue has the focus: a accept, k keep, s skip, u undo, a digit changes to that class.

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function pngUrl(value, urls) {
  if (!value || value.byteLength === 0) return null;
  const bytes = value instanceof DataView ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength) : value;
  const url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  urls.push(url);
  return url;
}

const KEYS = { a: "accept", k: "keep", s: "skip", u: "undo" };
const p3 = (p) => (p === null || p === undefined ? "–" : Number(p).toFixed(3));

function render({ model, el: host }) {
  const root = el("div", "odinlab-review");
  root.tabIndex = 0;
  // Lumino (JupyterLab) skips its shortcuts for keys typed in here: "a" must not insert a cell
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  host.appendChild(root);
  let urls = [];
  let busy = false;

  function lastActive() {
    const found = (model.get("history") || []).find((d) => !d.undone_by && d.action !== "undo");
    return found ? found.correction_id : null;
  }

  function act(action, extra = {}) {
    if (busy || model.get("message")) return;
    if (action === "undo" ? !lastActive() : !(model.get("item") || {}).image_id) return;
    busy = true;  // until the kernel answers (a new version): no second decision on the same click
    root.dataset.busy = "true";
    for (const control of root.querySelectorAll("button, select")) control.disabled = true;
    model.send({ kind: "act", action, image_id: (model.get("item") || {}).image_id ?? null, last: lastActive(),
                 ...extra });
    root.focus({ preventScroll: true });
  }

  function button(action, text, title) {
    const b = el("button", "odinlab-review-action", text);
    b.type = "button";
    b.dataset.action = action;
    b.title = title;
    b.addEventListener("click", () => act(action, action === "change"
      ? { label: Number(root.querySelector("select.odinlab-review-class").value) } : {}));
    return b;
  }

  function labels(item) {
    const box = el("div", "odinlab-review-labels");
    const given = el("div", "odinlab-review-given", `given ${item.label_name} · p ${p3(item.p_label)}`);
    given.dataset.class = String(item.label);
    const suggested = el("div", "odinlab-review-suggested",
                         `suggested ${item.suggested_name} · p ${p3(item.p_suggested)}`);
    suggested.dataset.class = String(item.suggested);
    box.append(given, el("span", "odinlab-review-arrow", "→"), suggested);
    const facts = [`#${item.rank}`, `label quality ${p3(item.label_quality)} (${item.method})`];
    if (item.flagged) facts.push("flagged by confident learning");
    if (item.out_of_sample === false) facts.push("in-sample probabilities");
    const about = el("div", "odinlab-review-facts", facts.join(" · "));
    return [box, about];
  }

  function topk(item) {
    const box = el("div", "odinlab-review-topk");
    for (const t of item.top || []) {
      const row = el("div", "odinlab-review-topk-row");
      row.dataset.class = String(t.class);
      if (t.class === item.label) row.classList.add("is-label");
      if (t.class === item.suggested) row.classList.add("is-suggested");
      const bar = el("span", "odinlab-review-bar");
      const fill = el("span", "odinlab-review-fill");
      fill.style.width = `${(100 * t.p).toFixed(1)}%`;
      bar.appendChild(fill);
      row.append(el("span", "odinlab-review-topk-name", t.name), bar, el("span", "odinlab-review-topk-p", p3(t.p)));
      box.appendChild(row);
    }
    return box;
  }

  function controls(item) {
    const classes = model.get("classes") || [];
    const box = el("div", "odinlab-review-buttons");
    const select = el("select", "odinlab-review-class");
    classes.forEach((name, i) => {
      const option = el("option", "", i < 10 && classes.length <= 10 ? `${name} (${i})` : name);
      option.value = String(i);
      select.appendChild(option);
    });
    select.value = String(item.suggested);
    box.append(
      button("accept", `Accept ${item.suggested_name} (a)`, "take the suggested label"),
      button("keep", `Keep ${item.label_name} (k)`, "the given label is right"),
      select,
      button("change", "Change", "give the class chosen on the left (or press its digit)"),
      button("skip", "Skip (s)", "decide later; nothing is written"),
      button("undo", "Undo (u)", "undo this queue's latest decision"));
    return box;
  }

  function neighbours(item) {
    const box = el("div", "odinlab-review-neighbours");
    const found = item.neighbours || [];
    if (!found.length) {
      box.appendChild(el("div", "odinlab-review-evidence", item.evidence || ""));
      return box;
    }
    box.appendChild(el("div", "odinlab-review-evidence", "nearest in the embedding:"));
    const images = model.get("neighbour_images") || [];
    const strip = el("div", "odinlab-review-strip");
    found.forEach((n, i) => {
      const node = el("div", "odinlab-review-neighbour");
      node.dataset.imageId = n.image_id;
      if (n.label === item.label) node.classList.add("same-as-given");
      if (n.label === item.suggested) node.classList.add("same-as-suggested");
      const img = el("img");
      img.src = pngUrl(images[i], urls) || "";
      img.alt = n.image_id;
      node.title = `${n.image_id} · label ${n.label_name ?? "?"} · distance ${Number(n.distance).toFixed(3)}`;
      node.append(img, el("div", "odinlab-review-neighbour-label", n.label_name ?? "?"));
      strip.appendChild(node);
    });
    box.appendChild(strip);
    return box;
  }

  function history() {
    const rows = model.get("history") || [];
    const box = el("div", "odinlab-review-history");
    if (!rows.length) return box;
    const table = el("table");
    const head = el("tr");
    for (const name of ["decision", "image", "action", "label", "undone by"]) head.appendChild(el("th", "", name));
    table.appendChild(head);
    for (const d of rows) {
      const tr = el("tr");
      tr.dataset.correctionId = d.correction_id;
      tr.dataset.undone = d.undone_by ? "true" : "false";
      tr.append(el("td", "", d.correction_id), el("td", "", d.image_id), el("td", "", d.action),
                el("td", "", `${d.old_name ?? "–"} → ${d.new_name ?? "–"}`), el("td", "", d.undone_by ?? ""));
      table.appendChild(tr);
    }
    box.append(el("div", "odinlab-review-history-title", "this session's decisions (latest first)"), table);
    return box;
  }

  function draw() {
    for (const url of urls) URL.revokeObjectURL(url);
    urls = [];
    busy = false;
    root.replaceChildren();
    const item = model.get("item") || {};
    const counts = model.get("counts") || {};
    root.dataset.imageId = item.image_id || "";
    root.dataset.decided = String(counts.decided ?? 0);
    root.dataset.remaining = String(counts.remaining ?? 0);
    root.dataset.version = String(model.get("version"));
    root.dataset.busy = "false";
    const message = model.get("message");
    if (message) { root.appendChild(el("div", "odinlab-message", message)); return; }

    const header = el("div", "odinlab-review-header");
    header.appendChild(el("div", "odinlab-review-title", model.get("title")));
    const where = counts.restricted ? " in the selection" : "";
    header.appendChild(el("div", "odinlab-review-counter",
      `${counts.decided} decided · ${counts.remaining} remaining${where} · ${counts.session} this session`));
    root.appendChild(header);
    if (model.get("note")) root.appendChild(el("div", "odinlab-review-note", model.get("note")));

    if (item.image_id) {
      const body = el("div", "odinlab-review-body");
      const img = el("img", "odinlab-review-image");
      img.src = pngUrl(model.get("image"), urls) || "";
      img.alt = item.image_id;
      img.width = model.get("size");
      const side = el("div", "odinlab-review-side");
      side.appendChild(el("div", "odinlab-review-id", item.image_id));
      side.append(...labels(item), topk(item), controls(item), neighbours(item));
      body.append(img, side);
      root.appendChild(body);
    } else {
      const text = counts.total ? "Every image of the queue is decided. Undo reopens the last one."
        : "No image of the queue is in the selection.";
      root.appendChild(el("div", "odinlab-review-done", text));
      const box = el("div", "odinlab-review-buttons");
      box.appendChild(button("undo", "Undo (u)", "undo this queue's latest decision"));
      root.appendChild(box);
    }
    const undo = root.querySelector("button[data-action=undo]");
    if (undo) undo.disabled = !lastActive();
    root.appendChild(el("div", "odinlab-review-status", model.get("status")));
    root.appendChild(history());
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.target.tagName === "SELECT") return;
    const classes = model.get("classes") || [];
    if (KEYS[event.key]) {
      act(KEYS[event.key]);
    } else if (/^[0-9]$/.test(event.key) && Number(event.key) < classes.length && classes.length <= 10) {
      act("change", { label: Number(event.key) });
    } else {
      return;
    }
    event.preventDefault();
    event.stopPropagation();
  }

  // one redraw per kernel update, however many traits it changed
  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => { scheduled = false; draw(); });
  }

  const names = ["message", "note", "title", "item", "image", "neighbour_images", "classes", "counts", "history",
                 "status", "size", "version"];
  for (const name of names) model.on(`change:${name}`, schedule);
  root.addEventListener("keydown", onKey);
  draw();
  return () => {
    for (const name of names) model.off(`change:${name}`, schedule);
    root.removeEventListener("keydown", onKey);
    for (const url of urls) URL.revokeObjectURL(url);
  };
}

export default { render };
