// Overlays of odinlab's scatter: marks above the points (a boundary sample, points between two classes),
// in the points' normalized data coordinates, drawn on a 2D canvas over regl-scatterplot's WebGL canvas.
// The canvas takes no pointer events, so pan, zoom, box and lasso act on the points alone: an overlay is
// never selected. It is redrawn in the same animation frame as the points (regl-scatterplot's synchronous
// 'drawing' event) whenever the camera, the size or the overlays change.
//
// One overlay as Python sends it (scatter.py, trait overlay_data): {name, n, xy: float32 x,y bytes,
// colors: [hex...], codes: uint8 a point into colors (empty: colors[0] for all), sizes: uint8 a point
// (empty: one size), labels: [text a point] or []}.
// DOM hooks: canvas.odinlab-overlay-canvas (data-overlays: overlays drawn, data-drawn-points: marks
// inside the view at the last draw).

const BASE_RADIUS = 5; // px, an overlay without sizes: a little larger than the points it marks
const MIN_RADIUS = 2.5;
const MAX_RADIUS = 7;
const HIT_SLACK = 2; // px around a mark that still counts as over it

const bytesOf = (value) => {
  if (!value) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array(0);
};

// copy: a buffer of a websocket frame may start at an offset a Float32Array cannot view
const floatsOf = (value) => {
  const bytes = bytesOf(value);
  return new Float32Array(bytes.slice(0, bytes.byteLength - (bytes.byteLength % 4)).buffer);
};

const decode = (overlay) => {
  const xy = floatsOf(overlay.xy);
  const n = Math.min(overlay.n || 0, Math.floor(xy.length / 2));
  const codes = bytesOf(overlay.codes);
  const sizes = bytesOf(overlay.sizes);
  const radii = new Float32Array(n).fill(BASE_RADIUS);
  if (sizes.length === n) {
    // area grows with the value (an inclusion probability reads as the mark's area)
    for (let i = 0; i < n; i++) radii[i] = MIN_RADIUS + (MAX_RADIUS - MIN_RADIUS) * Math.sqrt(sizes[i] / 255);
  }
  return {
    name: String(overlay.name),
    n,
    xy,
    colors: overlay.colors && overlay.colors.length ? overlay.colors : ['#111111'],
    codes: codes.length === n ? codes : null,
    radii,
    labels: Array.isArray(overlay.labels) ? overlay.labels : [],
    screen: new Float32Array(2 * n), // page-independent pixel positions inside the plot, from the last draw
  };
};

// Data -> pixels inside the canvas, as regl-scatterplot's getScreenPosition computes it:
// projection (1 / view aspect) · camera view · model (data aspect), then the viewport.
const projector = (scatterplot, width, height) => {
  const v = scatterplot.get('cameraView');
  const aspect = scatterplot.get('aspectRatio') || 1;
  const viewAspect = width / height;
  return (x, y, out, k) => {
    const ax = aspect * x;
    const cx = (v[0] * ax + v[4] * y + v[12]) / viewAspect;
    const cy = v[1] * ax + v[5] * y + v[13];
    out[k] = (width * (cx + 1)) / 2;
    out[k + 1] = height * (0.5 - cy / 2);
  };
};

export function createOverlayLayer(plot) {
  const canvas = document.createElement('canvas');
  canvas.className = 'odinlab-overlay-canvas';
  canvas.dataset.overlays = '0';
  canvas.dataset.drawnPoints = '0';
  plot.appendChild(canvas);
  let layers = [];
  let width = 0;
  let height = 0;
  let lastKey = '';

  const set = (overlays) => {
    layers = (overlays || []).map(decode).filter((layer) => layer.n > 0);
    lastKey = '';
  };

  const resize = (w, h) => {
    const ratio = window.devicePixelRatio || 1;
    width = w;
    height = h;
    canvas.width = Math.max(1, Math.floor(w * ratio));
    canvas.height = Math.max(1, Math.floor(h * ratio));
    canvas.style.width = `${w}px`;
    canvas.style.height = `${h}px`;
    lastKey = '';
  };

  const paint = (ctx, layer, project) => {
    let inside = 0;
    const { n, xy, screen, radii, codes, colors } = layer;
    for (let i = 0; i < n; i++) project(xy[2 * i], xy[2 * i + 1], screen, 2 * i);
    // one path a color: few fills, whatever the number of marks
    for (let c = 0; c < colors.length; c++) {
      ctx.beginPath();
      for (let i = 0; i < n; i++) {
        if (codes ? codes[i] !== c : c !== 0) continue;
        const x = screen[2 * i];
        const y = screen[2 * i + 1];
        const r = radii[i];
        if (x < -r || y < -r || x > width + r || y > height + r) continue;
        inside++;
        ctx.moveTo(x + r, y);
        ctx.arc(x, y, r, 0, 2 * Math.PI);
      }
      // rings with a light fill: the point under a mark keeps its color visible
      ctx.globalAlpha = 0.3;
      ctx.fillStyle = colors[c];
      ctx.fill();
      ctx.globalAlpha = 1;
      ctx.strokeStyle = colors[c];
      ctx.stroke();
    }
    return inside;
  };

  // Draw if the camera, the size or the overlays changed since the last draw (cheap to call every frame).
  const draw = (scatterplot) => {
    if (!scatterplot || width <= 0 || height <= 0) return;
    const view = scatterplot.get('cameraView');
    const key = `${Array.prototype.join.call(view, ',')}|${width}|${height}|${layers.length}`;
    if (key === lastKey) return;
    lastKey = key;
    const ctx = canvas.getContext('2d');
    const ratio = canvas.width / width;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.lineWidth = 1.5;
    const project = projector(scatterplot, width, height);
    let inside = 0;
    for (const layer of layers) inside += paint(ctx, layer, project);
    canvas.dataset.overlays = String(layers.length);
    canvas.dataset.drawnPoints = String(inside);
  };

  // The top mark under (x, y) (pixels inside the plot): {name, index, label}, or null.
  const hit = (x, y) => {
    if (!lastKey) return null; // not drawn since the overlays changed: no positions yet
    for (let l = layers.length - 1; l >= 0; l--) {
      const { n, screen, radii, labels, name } = layers[l];
      for (let i = n - 1; i >= 0; i--) {
        const dx = screen[2 * i] - x;
        const dy = screen[2 * i + 1] - y;
        const r = radii[i] + HIT_SLACK;
        if (dx * dx + dy * dy <= r * r) return { name, index: i, label: labels[i] };
      }
    }
    return null;
  };

  // Legend entries: name, number of marks, up to 5 of its colors.
  const entries = () => layers.map(({ name, n, colors }) => ({ name, n, colors: colors.slice(0, 5) }));

  return { set, resize, draw, hit, entries, canvas };
}
