// odinlab's embedding scatter: an anywidget ESM over regl-scatterplot.
// Build: cd odinlab/widgets/js && npm ci && node build.mjs   (writes ../scatter.js)
//
// Geometry is not a trait: on render the view sends {type: 'ready'} and Python answers
// {type: 'points', n} with one buffer of uint16 x,y interleaved (0 = -1, 65535 = 1); without a kernel
// (a saved notebook) the view says "Run the cell to see the points".
// Traits (see scatter.py): colors (uint8 a point),
// sizes (uint8 a point or empty), legend ({kind, title, items, colors, min, max}), selection_mask
// (packbits little-endian over the points, empty = none), message, height, point_size, hovered,
// hover_images (ask the kernel for the hovered point's image: tooltip.src.js), overlay_data (marks
// above the points: overlay.src.js).
//
// Latency: regl-scatterplot publishes its events on a timer by default, so a box or lasso's 'select'
// waited for the next frame, which redraws every point (0.4-0.7 s at 100k points in software WebGL)
// before the mask could leave. With syncEvents the mask is sent from the mouse release's own handler,
// before that frame. The points are drawn straight into the visible canvas (renderer.src.js), not
// copied into it from a hidden window-sized one: without a GPU that copy held the main thread for the
// whole frame (75-240 ms at 100k points), and a selection's thumbnails in the gallery waited for it.
// A selection (from the kernel or the mouse) costs one frame: the select call sets the state and
// regl-scatterplot draws once at the next animation frame (no transition).
//
// DOM hooks for browser tests: .odinlab-scatter (root; data-points, data-selected, data-drawn,
// data-mode, data-recolors: recolors done, data-lasso-vertices; root.odinlabScatterplot: the
// regl-scatterplot instance; root.odinlabRenderer: its renderer (renderer.src.js);
// root.odinlabTimings.maskSentAt: performance.now() when the last selection left for the kernel),
// canvas.odinlab-scatter-canvas (WebGL, keeps its drawing buffer), canvas.odinlab-overlay-canvas,
// .odinlab-scatter-toolbar button[data-action], .odinlab-legend (.odinlab-legend-item[data-category],
// .odinlab-overlay[data-name][data-points]), .odinlab-scatter .odinlab-message, .odinlab-tooltip.
import createScatterplot from 'regl-scatterplot';
import { createOverlayLayer } from './overlay.src.js';
import { createCanvasRenderer } from './renderer.src.js';
import { createTooltip } from './tooltip.src.js';

const asBytes = (value) => {
  if (!value) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array(0);
};

const BITS = new Uint8Array(256); // set bits of each byte value
for (let v = 1; v < 256; v++) BITS[v] = (v & 1) + BITS[v >> 1];

// A plain Array (regl-scatterplot's select takes nothing else), sized once from the bit count:
// 1M points decode in ~10 ms where pushing took ~25.
export const maskToIndices = (mask, n) => {
  const bytes = asBytes(mask);
  const m = Math.min(bytes.length, Math.ceil(n / 8));
  let count = 0;
  for (let b = 0; b < m; b++) count += BITS[bytes[b]];
  const out = new Array(count);
  let k = 0;
  for (let b = 0; b < m; b++) {
    let byte = bytes[b];
    const base = b * 8;
    while (byte) {
      const i = base + 31 - Math.clz32(byte & -byte);
      if (i < n) out[k++] = i;
      byte &= byte - 1;
    }
  }
  out.length = k;
  return out;
};

export const indicesToMask = (indices, n) => {
  const mask = new Uint8Array(Math.ceil(n / 8));
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k];
    mask[i >> 3] |= 1 << (i & 7);
  }
  return mask;
};

const defaultPointSize = (n) => (n <= 5e3 ? 6 : n <= 5e4 ? 4 : n <= 3e5 ? 2.5 : n <= 1.5e6 ? 1.5 : 1);

const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

const BUTTONS = [
  ['panZoom', 'Pan / zoom', 'Drag to pan, wheel to zoom (Shift+drag: lasso)'],
  ['lasso', 'Lasso', 'Drag to draw a lasso around points'],
  ['box', 'Box', 'Drag a rectangle around points'],
  ['reset', 'Reset view', 'Show all points'],
  ['clear', 'Clear selection', 'Select nothing'],
];

const buildDom = (host) => {
  const root = el('div', 'odinlab-scatter');
  root.dataset.drawn = 'false';
  root.dataset.selected = '0';
  root.dataset.mode = 'panZoom';
  const dom = {
    root,
    message: el('div', 'odinlab-message'),
    toolbar: el('div', 'odinlab-scatter-toolbar'),
    plot: el('div', 'odinlab-scatter-plot'),
    canvas: el('canvas', 'odinlab-scatter-canvas'),
    legend: el('div', 'odinlab-legend'),
    count: el('span', 'odinlab-scatter-count'),
  };
  dom.buttons = BUTTONS.map(([action, label, title]) => {
    const button = el('button', 'odinlab-scatter-button', label);
    button.type = 'button';
    button.dataset.action = action;
    button.title = title;
    dom.toolbar.appendChild(button);
    return button;
  });
  dom.toolbar.appendChild(dom.count);
  const body = el('div', 'odinlab-scatter-body');
  dom.plot.append(dom.canvas);
  body.append(dom.plot, dom.legend);
  root.append(dom.message, dom.toolbar, body);
  host.appendChild(root);
  return dom;
};

// The legend: the color's categories (a click selects a category) or its scale, then one entry an overlay.
const renderLegend = (box, legend, overlays, onCategory) => {
  box.replaceChildren();
  const kind = legend.kind || 'none';
  box.dataset.kind = kind;
  box.style.display = kind === 'none' && !overlays.length ? 'none' : '';
  if (kind !== 'none' && legend.title) box.appendChild(el('div', 'odinlab-legend-title', legend.title));
  if (kind === 'continuous') {
    const bar = el('div', 'odinlab-legend-scale');
    bar.style.background = `linear-gradient(to right, ${legend.colors.join(', ')})`;
    const ends = el('div', 'odinlab-legend-ends');
    ends.append(el('span', '', String(legend.items[0].label)), el('span', '', String(legend.items[1].label)));
    box.append(bar, ends);
    if (legend.missing) {
      box.appendChild(el('div', 'odinlab-legend-note', `${legend.missing} missing (drawn at the low end)`));
    }
  } else if (kind === 'categorical') {
    legend.items.forEach((item, category) => {
      const row = el('div', 'odinlab-legend-item');
      row.dataset.category = String(category);
      row.title = 'Click to select these points';
      const swatch = el('span', 'odinlab-legend-swatch');
      swatch.style.background = item.color;
      row.append(swatch, el('span', 'odinlab-legend-label', item.label));
      if (item.count !== undefined) row.appendChild(el('span', 'odinlab-legend-count', item.count.toLocaleString()));
      row.addEventListener('click', () => onCategory(category));
      box.appendChild(row);
    });
  }
  if (overlays.length) box.appendChild(el('div', 'odinlab-legend-title odinlab-legend-overlays', 'Overlays'));
  for (const { name, n, colors } of overlays) {
    const row = el('div', 'odinlab-legend-item odinlab-overlay');
    row.dataset.name = name;
    row.dataset.points = String(n);
    row.title = 'Drawn above the points; hover a mark for its label';
    const swatch = el('span', 'odinlab-legend-swatch odinlab-overlay-swatch');
    swatch.style.background = colors.length > 1 ? `linear-gradient(to right, ${colors.join(', ')})` : colors[0];
    row.append(swatch, el('span', 'odinlab-legend-label', name),
      el('span', 'odinlab-legend-count', n.toLocaleString()));
    box.appendChild(row);
  }
};

// regl-scatterplot's data, properties and options for n points with color codes and the model's traits.
const encodings = (model, n, xs, ys, codes) => {
  const legend = model.get('legend') || {};
  const sizeBytes = asBytes(model.get('sizes'));
  const base = model.get('point_size') || defaultPointSize(n);
  const kind = legend.kind || 'none';
  const z = new Float32Array(n);
  if (kind === 'continuous') for (let i = 0; i < n; i++) z[i] = codes[i] / 255;
  else for (let i = 0; i < n; i++) z[i] = codes[i];
  const w = new Float32Array(n);
  const sized = sizeBytes.length === n && n > 0;
  if (sized) for (let i = 0; i < n; i++) w[i] = sizeBytes[i] / 255;
  const colors = legend.colors && legend.colors.length ? legend.colors : ['#4c78a8'];
  const properties = {
    colorBy: kind === 'none' ? null : 'valueA',
    pointColor: kind === 'none' ? colors[0] : colors,
    sizeBy: sized ? 'valueB' : null,
    pointSize: sized ? Array.from({ length: 8 }, (_, k) => base * (0.6 + k * 0.4)) : base,
    opacity: n > 2e5 ? 0.7 : n > 2e4 ? 0.85 : 1,
  };
  const options = {
    zDataType: kind === 'continuous' ? 'continuous' : 'categorical',
    wDataType: 'continuous',
  };
  return { data: { x: xs, y: ys, z, w }, properties, options };
};

// The text shown for point i before (or without) the kernel's caption.
const describe = (model, codes, i) => {
  const legend = model.get('legend') || {};
  const code = codes[i];
  if (legend.kind === 'continuous') {
    const value = legend.min + (code / 255) * (legend.max - legend.min);
    return `${legend.title || 'value'}: ${value.toPrecision(3)}`;
  }
  const item = (legend.items || [])[code];
  return item ? `${legend.title ? `${legend.title}: ` : ''}${item.label}` : `point ${i}`;
};

function render({ model, el: host }) {
  const dom = buildDom(host);
  const { root, plot, canvas } = dom;
  const overlay = createOverlayLayer(plot);
  const tooltip = createTooltip(plot, { model, describe: (i) => describe(model, codes, i) });

  let scatterplot = null;
  let renderer = null;
  let n = 0;
  let xs = new Float32Array(0);
  let ys = new Float32Array(0);
  let codes = new Uint8Array(0);
  let selected = [];
  let geometry = null; // Uint16Array of x,y from the kernel, null until it answers
  let size = [0, 0]; // the plot's content box the scatter was last sized to
  let settingMask = false;
  let chain = Promise.resolve();
  let drawQueued = false;
  let recolorQueued = false;
  const enqueue = (task) => {
    chain = chain.then(task).catch((error) => console.error('odinlab scatter:', error));
    return chain;
  };

  const setCount = () => {
    root.dataset.selected = String(selected.length);
    dom.count.textContent = selected.length
      ? `${selected.length.toLocaleString()} of ${n.toLocaleString()} selected`
      : `${n.toLocaleString()} points`;
  };

  const showMessage = (text) => {
    dom.message.textContent = text;
    root.classList.toggle('odinlab-has-message', Boolean(text));
  };

  const sendMask = () => {
    settingMask = true;
    try {
      const mask = selected.length ? indicesToMask(selected, n) : new Uint8Array(0);
      model.set('selection_mask', new DataView(mask.buffer));
      model.save_changes();
      root.odinlabTimings = { ...(root.odinlabTimings || {}), maskSentAt: performance.now() };
    } finally {
      settingMask = false;
    }
  };

  // Sized from the plot's content box (clientWidth: no border), and only on a change of a pixel or
  // more: the canvas is absolutely placed, so its size never feeds back into the plot's.
  const resize = () => {
    if (!scatterplot) return;
    const width = plot.clientWidth;
    const height = plot.clientHeight;
    if (width <= 0 || height <= 0) return;
    if (Math.abs(width - size[0]) < 1 && Math.abs(height - size[1]) < 1) return;
    size = [width, height];
    scatterplot.set({ width, height });
    overlay.resize(width, height);
    if (!cameraMoved) fitAll(); // a narrow plot would otherwise cut off the left and right of the points
    overlay.draw(scatterplot);
  };

  // regl-scatterplot shows y in [-1, 1] and as much of x as the plot's aspect allows; the points fill
  // [-1, 1] on their longer axis, so zoom to that square: every point visible, whatever the plot's shape.
  // Until the user pans or zooms, a resize fits again; "Reset view" fits and forgets the user's camera.
  let cameraMoved = false;
  const fitAll = () => {
    if (scatterplot && n > 0) scatterplot.zoomToArea({ x: -1, y: -1, width: 2, height: 2 }, { transition: false });
  };
  plot.addEventListener('wheel', () => { cameraMoved = true; }, { passive: true });
  plot.addEventListener('pointerdown', () => { if (root.dataset.mode === 'panZoom') cameraMoved = true; });

  const selectCategory = (category) => {
    if (!scatterplot) return;
    const members = [];
    for (let i = 0; i < n; i++) if (codes[i] === category) members.push(i);
    scatterplot.select(members); // publishes 'select', which sends the mask
  };

  const showLegend = () => renderLegend(dom.legend, model.get('legend') || {}, overlay.entries(), selectCategory);

  const subscribe = (sp) => {
    sp.subscribe('lassoEnd', ({ coordinates }) => {
      root.dataset.lassoVertices = String(coordinates ? coordinates.length : 0);
    });
    sp.subscribe('select', ({ points }) => {
      selected = points.slice();
      sendMask(); // first: nothing else runs before the selection leaves for the kernel
      setCount();
    });
    sp.subscribe('deselect', () => {
      selected = [];
      sendMask();
      setCount();
    });
    sp.subscribe('pointOver', (i) => {
      tooltip.pointOver(i);
      model.set('hovered', i);
      model.save_changes();
    });
    sp.subscribe('pointOut', () => {
      tooltip.pointOut();
      model.set('hovered', -1);
      model.save_changes();
    });
    sp.subscribe('drawing', () => overlay.draw(sp)); // the same frame as the points: overlays never lag
  };

  const ensureScatterplot = () => {
    if (scatterplot) return scatterplot;
    renderer = createCanvasRenderer(canvas);
    scatterplot = createScatterplot({
      canvas,
      renderer,
      width: plot.clientWidth || 400,
      height: plot.clientHeight || 400,
      backgroundColor: '#ffffff',
      pointColorHover: '#000000',
      opacityInactiveMax: 0.25,
      lassoColor: '#1f2937',
      lassoMinDelay: 10,
      lassoInitiator: false,
      deselectOnDblClick: true,
      deselectOnEscape: true,
      performanceMode: n > 2e6,
      syncEvents: true, // see the top of this file: the selection leaves before the next frame's redraw
      spatialIndexUseWorker: false, // a Blob worker can be refused by a page's CSP; the index of 1M points builds in ~0.2 s
    });
    // for browser tests and debugging: the regl-scatterplot instance (e.g. its lassoSelect)
    Object.defineProperty(root, 'odinlabScatterplot', { value: scatterplot, configurable: true });
    Object.defineProperty(root, 'odinlabRenderer', { value: renderer, configurable: true });
    subscribe(scatterplot);
    return scatterplot;
  };

  const decodeGeometry = (flat) => {
    xs = new Float32Array(n);
    ys = new Float32Array(n);
    const step = 2 / 65535;
    for (let i = 0; i < n; i++) {
      xs[i] = flat[2 * i] * step - 1;
      ys[i] = flat[2 * i + 1] * step - 1;
    }
  };

  const readCodes = () => {
    codes = asBytes(model.get('colors'));
    if (codes.length !== n) codes = new Uint8Array(n);
  };

  const drawAll = () => {
    if (drawQueued) return chain;
    drawQueued = true;
    return enqueue(async () => {
      drawQueued = false;
      const text = model.get('message');
      if (!text && !geometry) {
        showMessage('Run the cell to see the points (they come from the kernel, not the saved notebook).');
        root.dataset.drawn = 'false';
        return;
      }
      const flat = geometry || new Uint16Array(0);
      n = Math.floor(flat.length / 2);
      root.dataset.points = String(n);
      if (text || n === 0) {
        showMessage(text || 'No points to show.');
        root.dataset.drawn = 'false';
        if (scatterplot) await scatterplot.clear();
        return;
      }
      showMessage('');
      decodeGeometry(flat);
      readCodes();
      selected = maskToIndices(model.get('selection_mask'), n);
      const sp = ensureScatterplot();
      resize();
      showLegend();
      const { data, properties, options } = encodings(model, n, xs, ys, codes);
      sp.set(properties);
      await sp.draw(data, { ...options, select: selected.length ? selected : undefined });
      if (!cameraMoved) fitAll();
      setCount();
      root.dataset.drawn = 'true';
    });
  };

  const recolor = () => {
    if (recolorQueued || drawQueued) return;
    recolorQueued = true;
    enqueue(async () => {
      recolorQueued = false;
      if (!scatterplot || n === 0 || drawQueued) return;
      readCodes();
      showLegend();
      const { data, properties, options } = encodings(model, n, xs, ys, codes);
      scatterplot.set(properties);
      await scatterplot.draw(data, {
        ...options,
        spatialIndex: scatterplot.get('spatialIndex'),
        preventFilterReset: true,
        select: selected.length ? selected : undefined,
      });
      root.dataset.recolors = String(Number(root.dataset.recolors || 0) + 1);
    });
  };

  const applyMask = () => {
    if (settingMask) return;
    enqueue(async () => {
      selected = maskToIndices(model.get('selection_mask'), n);
      setCount();
      if (!scatterplot) return;
      if (selected.length) scatterplot.select(selected, { preventEvent: true });
      else scatterplot.deselect({ preventEvent: true });
    });
  };

  const applyOverlays = () => {
    overlay.set(model.get('overlay_data'));
    showLegend();
    if (scatterplot) scatterplot.redraw(); // its 'drawing' event draws the overlays in the same frame
  };

  const setMode = (mode) => {
    root.dataset.mode = mode;
    for (const b of dom.buttons) b.classList.toggle('odinlab-active', b.dataset.action === mode);
    if (!scatterplot) return;
    if (mode === 'panZoom') scatterplot.set({ mouseMode: 'panZoom' });
    else scatterplot.set({ mouseMode: 'lasso', lassoType: mode === 'box' ? 'rectangle' : 'freeform' });
  };

  dom.toolbar.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const action = button.dataset.action;
    if (action === 'reset') {
      cameraMoved = false;
      fitAll();
    }
    else if (action === 'clear') scatterplot?.deselect();
    else setMode(action);
  });

  plot.addEventListener('mousemove', (event) => {
    const box = canvas.getBoundingClientRect();
    const x = event.clientX - box.left;
    const y = event.clientY - box.top;
    tooltip.move(x, y);
    tooltip.overlayOver(overlay.hit(x, y));
  });
  plot.addEventListener('mouseleave', () => tooltip.leave());

  const applyHeight = () => {
    root.style.setProperty('--odinlab-scatter-height', `${model.get('height') || 460}px`);
    resize();
  };

  const observer = new ResizeObserver(() => resize());
  observer.observe(plot);

  const onCustom = (msg, buffers) => {
    if (msg && msg.type === 'hover') {
      tooltip.onAnswer(msg, buffers);
      return;
    }
    if (!msg || msg.type !== 'points') return;
    const bytes = asBytes(buffers && buffers[0]);
    // copy to an aligned buffer: a DataView of a websocket frame may start at an odd offset
    geometry = new Uint16Array(bytes.slice(0, Math.floor(bytes.byteLength / 2) * 2).buffer);
    drawAll();
  };
  const onMessage = () => drawAll();
  const handlers = {
    'msg:custom': onCustom,
    'change:message': onMessage,
    'change:colors': recolor,
    'change:legend': recolor,
    'change:sizes': recolor,
    'change:point_size': recolor,
    'change:selection_mask': applyMask,
    'change:height': applyHeight,
    'change:overlay_data': applyOverlays,
  };
  for (const [event, handler] of Object.entries(handlers)) model.on(event, handler);

  overlay.set(model.get('overlay_data'));
  applyHeight();
  setMode('panZoom');
  drawAll().then(() => setMode(root.dataset.mode));
  model.send({ type: 'ready' }); // ask the kernel for the geometry (each view, each render)

  return () => {
    observer.disconnect();
    for (const [event, handler] of Object.entries(handlers)) model.off(event, handler);
    tooltip.destroy();
    if (scatterplot) scatterplot.destroy();
    if (renderer) renderer.destroy(); // a scatterplot leaves a renderer it was given alone
  };
}

export default { render };
