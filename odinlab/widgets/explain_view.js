// odinlab "explain this selection": a button, an optional region (top, left, height, width), and the answer
// (the Explanation's own HTML, made in the kernel from escaped frames).
// DOM hooks for tests: .odinlab-explain (root), button.odinlab-explain-run, input.odinlab-explain-region[data-part],
// .odinlab-explain-status, .odinlab-explain-result, .odinlab-message.

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function render({ model, el: root }) {
  const box = el("div", "odinlab-explain");
  const bar = el("div", "odinlab-explain-bar");
  const run = el("button", "odinlab-explain-run", "Explain this selection");
  const parts = ["top", "left", "height", "width"].map((part) => {
    const input = el("input", "odinlab-explain-region");
    Object.assign(input, { type: "number", min: "0", placeholder: part, title: `region ${part} (pixels)` });
    input.dataset.part = part;
    return input;
  });
  const region = el("span", "odinlab-explain-regionbox");
  region.append(el("span", "", "region:"), ...parts);
  const status = el("span", "odinlab-explain-status");
  const message = el("div", "odinlab-message");
  const result = el("div", "odinlab-explain-result");
  bar.append(run, region, status);
  box.append(bar, message, result);
  root.append(box);

  run.addEventListener("click", () => {
    const values = parts.map((p) => p.value.trim());
    const given = values.every((v) => v !== "") ? values.map(Number) : null;
    status.textContent = "explaining…";
    model.send({ kind: "explain", region: given });
  });
  const sync = () => {
    status.textContent = model.get("status");
    message.textContent = model.get("message");
    message.style.display = model.get("message") ? "" : "none";
    run.disabled = model.get("count") === 0;
    result.innerHTML = model.get("html");  // built in the kernel from escaped tables and inline PNGs
  };
  for (const name of ["status", "message", "count", "html"]) model.on(`change:${name}`, sync);
  sync();
}

export default { render };
