// odinlab boundary pairs: cards of two images close in the embedding but predicted differently.
// The cards come as a small JSON trait; the PNGs (a then b, card by card) as buffers of one message.
// DOM hooks for tests: .odinlab-pairs (root), .odinlab-pair[data-index][data-image-id-a][data-image-id-b]
// [data-distance][data-shown] (.selected when chosen), .odinlab-pair-side[data-image-id][data-label][data-predicted]
// (.wrong when mispredicted), .odinlab-message, .odinlab-pairs-status[data-shown-total].

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

function render({ model, el: host }) {
  const root = el("div", "odinlab-pairs");
  const message = el("div", "odinlab-message");
  const title = el("div", "odinlab-pairs-title");
  const status = el("div", "odinlab-pairs-status");
  const grid = el("div", "odinlab-pairs-grid");
  root.append(message, title, status, grid);
  host.appendChild(root);
  const urls = [];
  let version = -1;

  function side(data) {
    const node = el("div", "odinlab-pair-side");
    const { image_id: imageId, label_name: label, predicted_name: predicted } = data;
    Object.assign(node.dataset, { imageId, label: label ?? "", predicted: predicted ?? "" });
    if (data.correct === false) node.classList.add("wrong");
    const size = model.get("thumb_size");
    const img = el("img", "odinlab-pair-img");
    img.width = size; img.height = size; img.alt = data.image_id;
    const caption = el("div", "odinlab-pair-caption");
    caption.append(el("span", "odinlab-pair-label", data.label_name ?? "?"), el("span", "", " → "),
      el("span", "odinlab-pair-pred", data.predicted_name ?? "?"));
    node.title = `${data.image_id}\nlabel ${data.label_name ?? "?"} · predicted ${data.predicted_name ?? "?"}`;
    node.append(img, caption);
    return node;
  }

  function card(data) {
    const node = el("div", "odinlab-pair");
    Object.assign(node.dataset, {
      index: String(data.index), imageIdA: data.a.image_id, imageIdB: data.b.image_id,
      distance: data.distance === null ? "" : String(data.distance),
    });
    const images = el("div", "odinlab-pair-images");
    images.append(side(data.a), side(data.b));
    const distance = el("div", "odinlab-pair-distance",
      data.distance === null ? "" : `distance ${Number(data.distance).toPrecision(3)}`);
    node.append(images, distance);
    node.addEventListener("click", () => model.send({ kind: "click", index: data.index }));
    return node;
  }

  function paint() {
    const chosen = model.get("chosen");
    const shown = bytesOf(model.get("shown"));
    const total = model.get("shown_total");
    for (const node of grid.children) {
      const i = Number(node.dataset.index);
      node.classList.toggle("selected", i === chosen);
      node.dataset.shown = shown ? String(shown[i] || 0) : "";
      node.classList.toggle("has-shown", !!(shown && shown[i]));
    }
    status.dataset.shownTotal = String(total);
    status.textContent = total === 0 ? "No images selected." : total > 0
      ? `${shown ? shown.reduce((a, b) => a + (b ? 1 : 0), 0) : 0} pairs hold selected images.`
      : "Click a pair to select both images.";
  }

  function onMessage(content, buffers) {
    placeThumbs(model, grid, ".odinlab-pair-img", urls, content, buffers);  // thumbs.js
  }

  function update() {
    const text = model.get("message");
    message.textContent = text;
    message.style.display = text ? "" : "none";
    for (const part of [title, status, grid]) part.style.display = text ? "none" : "";
    title.textContent = model.get("title");
    if (model.get("version") !== version) {
      version = model.get("version");
      for (const url of urls.splice(0)) URL.revokeObjectURL(url);
      grid.replaceChildren(...model.get("cards").map(card));
      if (!text && model.get("cards").length) model.send({ kind: "thumbs" });
    }
    paint();
  }

  model.on("msg:custom", onMessage);
  for (const name of ["message", "title", "cards", "version"]) model.on(`change:${name}`, update);
  for (const name of ["chosen", "shown", "shown_total"]) model.on(`change:${name}`, paint);
  update();
  return () => {
    model.off("msg:custom", onMessage);
    for (const url of urls.splice(0)) URL.revokeObjectURL(url);
  };
}

export default { render };
