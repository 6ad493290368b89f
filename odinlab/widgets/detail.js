// odinlab image detail. DOM hooks: .odinlab-detail (root, data-image-id), .odinlab-detail-image,
// .odinlab-detail-model[data-model-id], .odinlab-topk-row[data-class], .odinlab-detail-meta,
// button.odinlab-request[data-request="attribution"|"neighbours"], .odinlab-detail-overlay,
// .odinlab-neighbour[data-image-id], .odinlab-message, .odinlab-detail-status.

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

function render({ model, el: host }) {
  const root = el("div", "odinlab-detail");
  host.appendChild(root);
  let urls = [];
  let neighbourStrip = null;

  function draw() {
    for (const url of urls) URL.revokeObjectURL(url);
    urls = [];
    root.replaceChildren();
    root.dataset.imageId = model.get("image_id");
    const text = model.get("message");
    if (text) { root.appendChild(el("div", "odinlab-message", text)); return; }
    const info = model.get("info") || {};
    const size = model.get("size");

    const pictures = el("div", "odinlab-detail-pictures");
    const img = el("img", "odinlab-detail-image");
    img.src = pngUrl(model.get("image"), urls) || "";
    img.alt = info.image_id || "";
    img.width = size;
    pictures.appendChild(img);
    const overlayUrl = pngUrl(model.get("overlay"), urls);
    if (overlayUrl) {
      const ov = el("img", "odinlab-detail-overlay");
      ov.src = overlayUrl; ov.width = size; ov.alt = "attribution";
      pictures.appendChild(ov);
    }
    const side = el("div", "odinlab-detail-side");
    side.appendChild(el("div", "odinlab-detail-title", `${info.image_id} · label ${info.label_name ?? "none"}`));
    for (const m of info.models || []) {
      const box = el("div", "odinlab-detail-model");
      box.dataset.modelId = m.model_id;
      if (m.missing) {
        box.appendChild(el("div", "odinlab-detail-model-name", m.model_id));
        box.appendChild(el("div", "odinlab-message", m.missing));
      } else {
        const head = el("div", "odinlab-detail-model-name",
          `${m.model_id}: ${m.predicted_name} ${m.correct === false ? "✗" : m.correct === true ? "✓" : ""}` +
          ` · loss ${m.loss === null ? "–" : m.loss.toFixed(3)} · margin ${m.margin.toFixed(3)}`);
        if (m.correct === false) box.classList.add("wrong");
        box.appendChild(head);
        for (const t of m.top) {
          const row = el("div", "odinlab-topk-row");
          row.dataset.class = String(t.class);
          if (t.class === info.label) row.classList.add("is-label");
          const name = el("span", "odinlab-topk-name", t.name);
          const bar = el("span", "odinlab-topk-bar");
          const fill = el("span", "odinlab-topk-fill");
          fill.style.width = `${(100 * t.p).toFixed(1)}%`;
          bar.appendChild(fill);
          const p = el("span", "odinlab-topk-p", t.p.toFixed(3));
          row.append(name, bar, p);
          box.appendChild(row);
        }
      }
      side.appendChild(box);
    }
    const meta = el("table", "odinlab-detail-meta");
    for (const [key, value] of Object.entries(info.metadata || {})) {
      const tr = el("tr");
      tr.append(el("th", "", key), el("td", "", value === null ? "–" : String(value)));
      meta.appendChild(tr);
    }
    side.appendChild(meta);
    const buttons = el("div", "odinlab-detail-buttons");
    for (const [kind, label] of [["attribution", "attribution"], ["neighbours", "nearest neighbours"]]) {
      const b = el("button", "odinlab-request", label);
      b.type = "button";
      b.dataset.request = kind;
      b.addEventListener("click", () => model.send({ kind: "request", request: kind }));
      buttons.appendChild(b);
    }
    side.appendChild(buttons);
    side.appendChild(el("div", "odinlab-detail-status", model.get("status")));
    neighbourStrip = el("div", "odinlab-detail-neighbours");
    side.appendChild(neighbourStrip);
    const top = el("div", "odinlab-detail-body");
    top.append(pictures, side);
    root.appendChild(top);
    const neighbours = model.get("neighbours") || [];
    if (neighbours.length) model.send({ kind: "neighbour_thumbs" });
  }

  function onMessage(content, buffers) {
    if (!content || content.kind !== "neighbour_thumbs" || !neighbourStrip) return;
    if (content.image_id !== model.get("image_id")) return;
    neighbourStrip.replaceChildren();
    const neighbours = model.get("neighbours") || [];
    content.ids.forEach((id, i) => {
      const node = el("div", "odinlab-neighbour");
      node.dataset.imageId = id;
      const img = el("img");
      img.src = pngUrl(buffers[i], urls) || "";
      img.alt = id;
      const meta = neighbours[i] || {};
      node.title = `${id} · label ${meta.label_name ?? "?"}` + (meta.distance !== undefined ? ` · distance ${meta.distance.toFixed(3)}` : "");
      node.appendChild(img);
      node.appendChild(el("div", "odinlab-neighbour-label", meta.label_name ?? ""));
      node.addEventListener("click", () => model.send({ kind: "open_neighbour", index: i }));
      neighbourStrip.appendChild(node);
    });
  }

  const names = ["message", "image_id", "image", "overlay", "info", "neighbours", "status", "size"];
  for (const name of names) model.on(`change:${name}`, draw);
  model.on("msg:custom", onMessage);
  draw();
  return () => {
    for (const name of names) model.off(`change:${name}`, draw);
    model.off("msg:custom", onMessage);
    for (const url of urls) URL.revokeObjectURL(url);
  };
}

export default { render };
