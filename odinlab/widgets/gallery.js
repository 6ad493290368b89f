// odinlab gallery: thumbnails asked for a page at a time ({page: k}), answered with PNG buffers.
// When the items change the kernel sends the first page unasked, right after the new version
// (model "pushed" === "version"): the grid waits for it instead of asking (one round trip less).
// Until that page arrives the grid keeps the previous thumbnails, dimmed and inert (data-stale), and
// the page replaces them in one go: an emptied grid would shrink the gallery and resize its neighbours
// twice a selection (a scatter beside it redraws 100k points each time) and flash blank.
// DOM hooks for tests: .odinlab-gallery (root), .odinlab-gallery-grid[data-stale] (the previous
// version's thumbnails, waiting to be replaced), .odinlab-thumb[data-image-id][data-index],
// .odinlab-thumb.wrong (a mistake), .odinlab-thumb.selected, .odinlab-message, .odinlab-gallery-count.

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function bitSet(mask, i) {
  // mask: DataView or ArrayBuffer or Uint8Array of packbits(bitorder="little")
  if (!mask) return false;
  const bytes = mask instanceof DataView ? new Uint8Array(mask.buffer, mask.byteOffset, mask.byteLength)
    : mask instanceof Uint8Array ? mask : new Uint8Array(mask);
  const b = i >> 3;
  return b < bytes.length && ((bytes[b] >> (i & 7)) & 1) === 1;
}

// PNG bytes (a DataView, ArrayBuffer or typed array of a message's buffer) as a data: URL. Not a Blob
// URL: each URL.createObjectURL registers its blob with the browser process, a synchronous round trip;
// a page of 48 thumbnails took 25-90 ms of the main thread and loaded in 55-160 ms that way, against
// 1-2 ms and 13-32 ms as data: URLs (headless Chromium on a 2-core machine). Nothing to revoke either.
function pngUrl(png) {
  const bytes = png instanceof ArrayBuffer ? new Uint8Array(png)
    : new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return `data:image/png;base64,${btoa(text)}`;
}

function fmt(x, digits = 2) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function render({ model, el: host }) {
  const root = el("div", "odinlab-gallery");
  host.appendChild(root);
  const message = el("div", "odinlab-message");
  const note = el("div", "odinlab-note");
  const bar = el("div", "odinlab-gallery-bar");
  const count = el("span", "odinlab-gallery-count");
  const sortLabel = el("label", "odinlab-gallery-sortlabel", "sort by ");
  const sort = el("select", "odinlab-gallery-sort");
  const direction = el("button", "odinlab-gallery-direction");
  direction.type = "button";
  sortLabel.appendChild(sort);
  bar.append(count, sortLabel, direction);
  const grid = el("div", "odinlab-gallery-grid");
  const sentinel = el("div", "odinlab-gallery-more");
  root.append(message, note, bar, grid, sentinel);

  let version = -1;          // the items' version the grid shows
  let requested = new Set(); // pages asked for in this version
  let loaded = 0;            // pages appended, in order
  const pending = new Map(); // page -> {items, buffers} that arrived out of order
  let early = null;          // a page of a version this view has not seen yet: {content, buffers}
  let live = false;          // false until the first update(): a push sent before this view existed never comes
  let stale = false;         // the grid shows the previous version's thumbnails until its first page comes
  const PUSH_WAIT_MS = 3000; // ask anyway if a pushed page has not come by then

  function forgetPages() {
    requested = new Set();
    loaded = 0;
    pending.clear();
  }

  function setStale(value) {
    stale = value;
    if (value) grid.dataset.stale = "true";
    else delete grid.dataset.stale;
  }

  function clearGrid() {
    grid.replaceChildren();
    setStale(false);
    forgetPages();
  }

  // A new version: keep the thumbnails on screen until the new first page replaces them (see the top).
  function retireGrid() {
    forgetPages();
    setStale(grid.children.length > 0);
  }

  function pages() {
    return Math.ceil(model.get("total") / Math.max(1, model.get("page_size")));
  }

  function ask(k) {
    if (k >= pages() || requested.has(k)) return;
    requested.add(k);
    model.send({ page: k });
  }

  function paintSelection() {
    if (stale) return; // the mask is over the new items, not these
    const mask = model.get("selection_mask");
    const clicked = model.get("clicked");
    for (const node of grid.children) {
      node.classList.toggle("selected", bitSet(mask, Number(node.dataset.index)));
      node.classList.toggle("clicked", node.dataset.imageId === clicked);
    }
  }

  function item(data, png) {
    const node = el("div", "odinlab-thumb");
    node.dataset.imageId = data.image_id;
    node.dataset.index = String(data.index);
    if (data.correct === false) node.classList.add("wrong");
    if (data.correct === true) node.classList.add("right");
    const img = el("img", "odinlab-thumb-img");
    const size = model.get("thumb_size");
    img.width = size; img.height = size;
    img.alt = data.image_id;
    if (png) img.src = pngUrl(png);
    const caption = el("div", "odinlab-thumb-caption");
    const label = el("span", "odinlab-thumb-label", data.label_name ?? "?");
    const arrow = el("span", "odinlab-thumb-arrow", " → ");
    const pred = el("span", "odinlab-thumb-pred", data.predicted_name ?? "–");
    const conf = el("span", "odinlab-thumb-conf", ` ${fmt(data.confidence)}`);
    caption.append(label, arrow, pred, conf);
    node.title = `${data.image_id}\nlabel ${data.label_name ?? "?"} · predicted ${data.predicted_name ?? "–"}` +
      `\nconfidence ${fmt(data.confidence, 3)} · margin ${fmt(data.margin, 3)} · loss ${fmt(data.loss, 3)}`;
    node.append(img, caption);
    node.addEventListener("click", (event) => {
      if (stale) return; // a previous version's thumbnail: its index means another image now
      model.send({ kind: "click", index: data.index, extend: event.ctrlKey || event.metaKey || event.shiftKey });
    });
    return node;
  }

  function append(content, buffers) {
    const nodes = content.items.map((data, i) => item(data, buffers[i]));
    if (stale) { // one swap: the old thumbnails go as the new ones come
      grid.replaceChildren(...nodes);
      root.scrollTop = 0; // new items: from their first
      setStale(false);
    } else {
      grid.append(...nodes);
    }
    loaded += 1;
  }

  function onMessage(content, buffers) {
    if (!content || content.kind !== "page") return;
    if (content.version > version) { early = { content, buffers }; return; } // its version comes next
    if (content.version !== version || content.page < loaded) return;
    pending.set(content.page, { content, buffers: buffers || [] });
    while (pending.has(loaded)) {
      const next = pending.get(loaded);
      pending.delete(loaded);
      append(next.content, next.buffers);
    }
    paintSelection();
    maybeMore();
  }

  function maybeMore() {
    // ask for the next page once the end of the grid is in sight
    // (the root scrolls itself: the sentinel counts as near when close to the root's bottom edge)
    const bottom = Math.min(root.getBoundingClientRect().bottom, window.innerHeight || Infinity);
    const visible = sentinel.getBoundingClientRect().top < bottom + 300;
    if (visible && loaded === requested.size) ask(loaded);
  }

  function update() {
    const text = model.get("message");
    message.textContent = text;
    message.style.display = text ? "" : "none";
    for (const part of [bar, grid, sentinel]) part.style.display = text ? "none" : "";
    note.textContent = model.get("note");
    note.style.display = model.get("note") ? "" : "none";
    count.textContent = `${model.get("total")} images`;
    const columns = model.get("sort_columns");
    if (sort.options.length !== columns.length) {
      sort.replaceChildren(...columns.map((c) => { const o = el("option", "", c); o.value = c; return o; }));
    }
    sort.value = model.get("sort_by");
    direction.textContent = model.get("descending") ? "↓ high first" : "↑ low first";
    if (model.get("version") !== version) {
      version = model.get("version");
      if (text) clearGrid();
      else {
        retireGrid();
        firstPage();
      }
    }
    live = true;
  }

  function firstPage() {
    const arrived = early && early.content.version === version ? early : null;
    early = null;
    if (arrived) {
      requested.add(arrived.content.page);
      onMessage(arrived.content, arrived.buffers);
    } else if (live && model.get("pushed") === version) {
      requested.add(0); // on its way: the kernel sent it right after this version
      const waiting = version;
      setTimeout(() => {
        if (version === waiting && loaded === 0 && !pending.has(0)) { requested.delete(0); ask(0); }
      }, PUSH_WAIT_MS);
    } else {
      ask(0);
    }
  }

  sort.addEventListener("change", () => { model.set("sort_by", sort.value); model.save_changes(); });
  direction.addEventListener("click", () => { model.set("descending", !model.get("descending")); model.save_changes(); });

  const observer = typeof IntersectionObserver !== "undefined"
    ? new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) maybeMore(); },
      { root, rootMargin: "300px" })
    : null;
  if (observer) observer.observe(sentinel);
  const onScroll = () => maybeMore();
  root.addEventListener("scroll", onScroll);

  model.on("msg:custom", onMessage);
  model.on("change:message", update);
  model.on("change:note", update);
  model.on("change:total", update);
  model.on("change:version", update);
  model.on("change:sort_by", update);
  model.on("change:descending", update);
  model.on("change:sort_columns", update);
  model.on("change:selection_mask", paintSelection);
  model.on("change:clicked", paintSelection);
  update();

  return () => {
    if (observer) observer.disconnect();
    root.removeEventListener("scroll", onScroll);
    model.off("msg:custom", onMessage);
  };
}

export default { render };
