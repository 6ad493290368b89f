// odinlab's embedding scatter: an anywidget ESM over regl-scatterplot.
// Build: cd odinlab/widgets/js && npm ci && node build.mjs   (writes ../scatter.js)
//
// Geometry is not a trait: on render the view sends {type: 'ready'} and Python answers
// {type: 'points', n} with one buffer of uint16 x,y interleaved (0 = -1, 65535 = 1); without a kernel
// (a saved notebook) the view says "Run the cell to see the points".
// Traits (see scatter.py): colors (uint8 a point),
// sizes (uint8 a point or empty), legend ({kind, title, items, colors, min, max}), selection_mask
// (packbits little-endian over the points, empty = none), message, height, point_size, hovered.
//
// DOM hooks for browser tests: .odinlab-scatter (root; data-points, data-selected, data-drawn,
// data-mode, data-recolors: recolors done, data-lasso-vertices; root.odinlabScatterplot: the
// regl-scatterplot instance), canvas.odinlab-scatter-canvas, .odinlab-scatter-toolbar button[data-action],
// .odinlab-legend (.odinlab-legend-item[data-category]), .odinlab-message, .odinlab-tooltip.
import createScatterplot from 'regl-scatterplot';

const asBytes = (value) => {
  if (!value) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array(0);
};

export const maskToIndices = (mask, n) => {
  const bytes = asBytes(mask);
  const out = [];
  const m = Math.min(bytes.length, Math.ceil(n / 8));
  for (let b = 0; b < m; b++) {
    let byte = bytes[b];
    while (byte) {
      const bit = 31 - Math.clz32(byte & -byte);
      const i = b * 8 + bit;
      if (i < n) out.push(i);
      byte &= byte - 1;
    }
  }
  return out;
};

export const indicesToMask = (indices, n) => {
  const mask = new Uint8Array(Math.ceil(n / 8));
  for (const i of indices) mask[i >> 3] |= 1 << (i & 7);
  return mask;
};

const defaultPointSize = (n) => (n <= 5e3 ? 6 : n <= 5e4 ? 4 : n <= 3e5 ? 2.5 : n <= 1.5e6 ? 1.5 : 1);

const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};

function render({ model, el: host }) {
  const root = el('div', 'odinlab-scatter');
  root.dataset.drawn = 'false';
  root.dataset.selected = '0';
  root.dataset.mode = 'panZoom';
  const message = el('div', 'odinlab-message');
  const toolbar = el('div', 'odinlab-scatter-toolbar');
  const body = el('div', 'odinlab-scatter-body');
  const plot = el('div', 'odinlab-scatter-plot');
  const canvas = el('canvas', 'odinlab-scatter-canvas');
  const tooltip = el('div', 'odinlab-tooltip');
  const legendBox = el('div', 'odinlab-legend');
  plot.append(canvas, tooltip);
  body.append(plot, legendBox);
  root.append(message, toolbar, body);
  host.appendChild(root);

  const buttons = [
    ['panZoom', 'Pan / zoom', 'Drag to pan, wheel to zoom (Shift+drag: lasso)'],
    ['lasso', 'Lasso', 'Drag to draw a lasso around points'],
    ['box', 'Box', 'Drag a rectangle around points'],
    ['reset', 'Reset view', 'Show all points'],
    ['clear', 'Clear selection', 'Select nothing'],
  ].map(([action, label, title]) => {
    const button = el('button', 'odinlab-scatter-button', label);
    button.type = 'button';
    button.dataset.action = action;
    button.title = title;
    toolbar.appendChild(button);
    return button;
  });
  const count = el('span', 'odinlab-scatter-count');
  toolbar.appendChild(count);

  let scatterplot = null;
  let n = 0;
  let xs = new Float32Array(0);
  let ys = new Float32Array(0);
  let codes = new Uint8Array(0);
  let selected = [];
  let geometry = null; // Uint16Array of x,y from the kernel, null until it answers
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
    count.textContent = selected.length
      ? `${selected.length.toLocaleString()} of ${n.toLocaleString()} selected`
      : `${n.toLocaleString()} points`;
  };

  const showMessage = (text) => {
    message.textContent = text;
    root.classList.toggle('odinlab-has-message', Boolean(text));
  };

  const sendMask = () => {
    settingMask = true;
    try {
      const mask = selected.length ? indicesToMask(selected, n) : new Uint8Array(0);
      model.set('selection_mask', new DataView(mask.buffer));
      model.save_changes();
    } finally {
      settingMask = false;
    }
  };

  const resize = () => {
    if (!scatterplot) return;
    const { width, height } = plot.getBoundingClientRect();
    if (width > 0 && height > 0) scatterplot.set({ width, height });
  };

  const ensureScatterplot = () => {
    if (scatterplot) return scatterplot;
    const { width, height } = plot.getBoundingClientRect();
    scatterplot = createScatterplot({
      canvas,
      width: width || 400,
      height: height || 400,
      backgroundColor: '#ffffff',
      pointColorHover: '#000000',
      opacityInactiveMax: 0.25,
      lassoColor: '#1f2937',
      lassoMinDelay: 10,
      lassoInitiator: false,
      deselectOnDblClick: true,
      deselectOnEscape: true,
      performanceMode: n > 2e6,
      spatialIndexUseWorker: false, // a Blob worker can be refused by a page's CSP; the index of 1M points builds in ~0.2 s
    });
    // for browser tests and debugging: the regl-scatterplot instance (e.g. its lassoSelect)
    Object.defineProperty(root, 'odinlabScatterplot', { value: scatterplot, configurable: true });
    scatterplot.subscribe('lassoEnd', ({ coordinates }) => {
      root.dataset.lassoVertices = String(coordinates ? coordinates.length : 0);
    });
    scatterplot.subscribe('select', ({ points }) => {
      selected = Array.from(points);
      setCount();
      sendMask();
    });
    scatterplot.subscribe('deselect', () => {
      selected = [];
      setCount();
      sendMask();
    });
    scatterplot.subscribe('pointOver', (i) => {
      tooltip.textContent = describe(i);
      tooltip.style.display = 'block';
      model.set('hovered', i);
      model.save_changes();
    });
    scatterplot.subscribe('pointOut', () => {
      tooltip.style.display = 'none';
      model.set('hovered', -1);
      model.save_changes();
    });
    return scatterplot;
  };

  const describe = (i) => {
    const legend = model.get('legend') || {};
    const code = codes[i];
    if (legend.kind === 'continuous') {
      const value = legend.min + (code / 255) * (legend.max - legend.min);
      return `${legend.title || 'value'}: ${value.toPrecision(3)}`;
    }
    const item = (legend.items || [])[code];
    return item ? `${legend.title ? `${legend.title}: ` : ''}${item.label}` : `point ${i}`;
  };

  const encodings = () => {
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

  const renderLegend = () => {
    const legend = model.get('legend') || {};
    legendBox.replaceChildren();
    legendBox.dataset.kind = legend.kind || 'none';
    if (!legend.kind || legend.kind === 'none') {
      legendBox.style.display = 'none';
      return;
    }
    legendBox.style.display = '';
    if (legend.title) legendBox.appendChild(el('div', 'odinlab-legend-title', legend.title));
    if (legend.kind === 'continuous') {
      const bar = el('div', 'odinlab-legend-scale');
      bar.style.background = `linear-gradient(to right, ${legend.colors.join(', ')})`;
      const ends = el('div', 'odinlab-legend-ends');
      ends.append(el('span', '', String(legend.items[0].label)), el('span', '', String(legend.items[1].label)));
      legendBox.append(bar, ends);
      if (legend.missing) legendBox.appendChild(el('div', 'odinlab-legend-note', `${legend.missing} missing (drawn at the low end)`));
      return;
    }
    legend.items.forEach((item, category) => {
      const row = el('div', 'odinlab-legend-item');
      row.dataset.category = String(category);
      row.title = 'Click to select these points';
      const swatch = el('span', 'odinlab-legend-swatch');
      swatch.style.background = item.color;
      row.append(swatch, el('span', 'odinlab-legend-label', item.label));
      if (item.count !== undefined) row.appendChild(el('span', 'odinlab-legend-count', item.count.toLocaleString()));
      row.addEventListener('click', () => {
        if (!scatterplot) return;
        const members = [];
        for (let i = 0; i < n; i++) if (codes[i] === category) members.push(i);
        scatterplot.select(members); // publishes 'select', which sends the mask
      });
      legendBox.appendChild(row);
    });
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
      xs = new Float32Array(n);
      ys = new Float32Array(n);
      const step = 2 / 65535;
      for (let i = 0; i < n; i++) {
        xs[i] = flat[2 * i] * step - 1;
        ys[i] = flat[2 * i + 1] * step - 1;
      }
      codes = asBytes(model.get('colors'));
      if (codes.length !== n) codes = new Uint8Array(n);
      selected = maskToIndices(model.get('selection_mask'), n);
      const sp = ensureScatterplot();
      resize();
      renderLegend();
      const { data, properties, options } = encodings();
      sp.set(properties);
      await sp.draw(data, { ...options, select: selected.length ? selected : undefined });
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
      codes = asBytes(model.get('colors'));
      if (codes.length !== n) codes = new Uint8Array(n);
      renderLegend();
      const { data, properties, options } = encodings();
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

  const setMode = (mode) => {
    root.dataset.mode = mode;
    for (const b of buttons) b.classList.toggle('odinlab-active', b.dataset.action === mode);
    if (!scatterplot) return;
    if (mode === 'panZoom') scatterplot.set({ mouseMode: 'panZoom' });
    else scatterplot.set({ mouseMode: 'lasso', lassoType: mode === 'box' ? 'rectangle' : 'freeform' });
  };

  toolbar.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    if (!button) return;
    const action = button.dataset.action;
    if (action === 'reset') scatterplot?.reset();
    else if (action === 'clear') scatterplot?.deselect();
    else setMode(action);
  });

  plot.addEventListener('mousemove', (event) => {
    const box = plot.getBoundingClientRect();
    tooltip.style.left = `${event.clientX - box.left + 12}px`;
    tooltip.style.top = `${event.clientY - box.top + 12}px`;
  });
  plot.addEventListener('mouseleave', () => {
    tooltip.style.display = 'none';
  });

  const applyHeight = () => {
    root.style.setProperty('--odinlab-scatter-height', `${model.get('height') || 460}px`);
    resize();
  };

  const observer = new ResizeObserver(() => resize());
  observer.observe(plot);

  const onCustom = (msg, buffers) => {
    if (!msg || msg.type !== 'points') return;
    const bytes = asBytes(buffers && buffers[0]);
    // copy to an aligned buffer: a DataView of a websocket frame may start at an odd offset
    geometry = new Uint16Array(bytes.slice(0, Math.floor(bytes.byteLength / 2) * 2).buffer);
    drawAll();
  };
  const onMessage = () => drawAll();
  model.on('msg:custom', onCustom);
  model.on('change:message', onMessage);
  model.on('change:colors', recolor);
  model.on('change:legend', recolor);
  model.on('change:sizes', recolor);
  model.on('change:point_size', recolor);
  model.on('change:selection_mask', applyMask);
  model.on('change:height', applyHeight);

  applyHeight();
  setMode('panZoom');
  drawAll().then(() => setMode(root.dataset.mode));
  model.send({ type: 'ready' }); // ask the kernel for the geometry (each view, each render)

  return () => {
    observer.disconnect();
    model.off('msg:custom', onCustom);
    model.off('change:message', onMessage);
    model.off('change:colors', recolor);
    model.off('change:legend', recolor);
    model.off('change:sizes', recolor);
    model.off('change:point_size', recolor);
    model.off('change:selection_mask', applyMask);
    model.off('change:height', applyHeight);
    if (scatterplot) scatterplot.destroy();
  };
}

export default { render };
