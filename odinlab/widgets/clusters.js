// odinlab error clusters: one card per cluster (medoid thumbnail, size, dominant true → predicted pair).
// The cards come as a small JSON trait; the medoid PNGs come as buffers of one message ({kind: "thumbs"}).
// DOM hooks for tests: .odinlab-clusters (root), .odinlab-cluster[data-index][data-cluster][data-image-id]
// [data-size][data-label][data-predicted][data-shown] (.selected when chosen), .odinlab-message,
// .odinlab-clusters-status[data-shown-total].

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function counts(shown) {
  // shown: uint32 little-endian, one a card (empty: no selection shown)
  if (!shown || !shown.byteLength) return null;
  const view = shown instanceof DataView ? shown
    : new DataView(shown.buffer || shown, shown.byteOffset || 0, shown.byteLength);
  const out = [];
  for (let i = 0; i + 4 <= view.byteLength; i += 4) out.push(view.getUint32(i, true));
  return out;
}

function render({ model, el: host }) {
  const root = el("div", "odinlab-clusters");
  const message = el("div", "odinlab-message");
  const title = el("div", "odinlab-clusters-title");
  const status = el("div", "odinlab-clusters-status");
  const grid = el("div", "odinlab-clusters-grid");
  root.append(message, title, status, grid);
  host.appendChild(root);
  const urls = [];
  let version = -1;

  function card(data) {
    const node = el("div", "odinlab-cluster");
    Object.assign(node.dataset, {
      index: String(data.index), cluster: String(data.cluster), imageId: data.image_id, size: String(data.size),
      label: data.label_name ?? "", predicted: data.predicted_name ?? "",
    });
    const size = model.get("thumb_size");
    const img = el("img", "odinlab-cluster-img");
    img.width = size; img.height = size; img.alt = data.image_id;
    const count = el("div", "odinlab-cluster-size", `${data.size} images`);
    const pair = el("div", "odinlab-cluster-pair");
    pair.append(el("span", "odinlab-cluster-label", data.label_name ?? "?"), el("span", "", " → "),
      el("span", "odinlab-cluster-predicted", data.predicted_name ?? "?"));
    const hasShare = data.pair_share !== null && data.pair_share !== undefined;
    const share = el("div", "odinlab-cluster-share", hasShare ? `top pair: ${Math.round(100 * data.pair_share)}%` : "");
    const mark = el("div", "odinlab-cluster-shown");
    const extra = Object.entries(data.extra || {}).map(([k, v]) => `\n${k}: ${v}`).join("");
    node.title = `cluster ${data.cluster}: ${data.size} mistakes; top pair ${data.label_name} → ${data.predicted_name}` +
      `\nmedoid ${data.image_id}${extra}\nclick: select its images`;
    node.append(img, count, pair, share, mark);
    node.addEventListener("click", () => model.send({ kind: "click", index: data.index }));
    return node;
  }

  function paint() {
    const chosen = model.get("chosen");
    const shown = counts(model.get("shown"));
    const total = model.get("shown_total");
    for (const node of grid.children) {
      const i = Number(node.dataset.index);
      node.classList.toggle("selected", i === chosen);
      const n = shown ? shown[i] || 0 : null;
      node.dataset.shown = n === null ? "" : String(n);
      node.classList.toggle("has-shown", !!n);
      node.querySelector(".odinlab-cluster-shown").textContent = n ? `${n} selected` : "";
    }
    status.dataset.shownTotal = String(total);
    status.textContent = total === 0 ? "No images selected." : total > 0
      ? `${shown ? shown.reduce((a, b) => a + b, 0) : 0} of the ${total} selected images are in these clusters.`
      : "Click a cluster to select its images.";
  }

  function onMessage(content, buffers) {
    placeThumbs(model, grid, ".odinlab-cluster-img", urls, content, buffers);  // thumbs.js
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
