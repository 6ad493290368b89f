// A regl-scatterplot renderer that draws into the plot's own canvas instead of a hidden one.
//
// Why: regl-scatterplot's default renderer (renderer.js) draws every frame into a hidden WebGL canvas
// the size of the whole window, then copies the plot's part into the visible 2D canvas with drawImage.
// Without a GPU (software WebGL: headless browsers, VMs, remote desktops) that copy is a synchronous
// read-back: the main thread waits for the GPU process to finish the frame, 75-240 ms at 100,000 points
// in a 1400x1000 window, and kernel messages, the gallery's images and the mouse wait with it. Drawn into
// the visible canvas, the frame is composited by the browser; the main thread only issues the commands
// (~10 ms for the same frame), and the buffer is the plot's size, not the window's.
//
// The pipeline is regl-scatterplot's own (1.16, src/renderer.js): points into a float framebuffer, then
// one gamma pass onto the canvas, so the pixels are the same (checked with a read-back of both).
// It implements the documented Renderer API (canvas, regl, gamma, isSupported, isDestroyed, render,
// resize, refresh, onFrame, destroy). A scatterplot does not destroy a renderer it was given: the
// owner calls destroy() after the scatterplot's.
import { checkSupport, createRegl } from 'regl-scatterplot';

const CLEAR = { color: [0, 0, 0, 0], depth: 1 };
const DEFAULT_GAMMA = 1; // regl-scatterplot's DEFAULT_GAMMA

const COMPOSITE_VERT = `
precision highp float;
attribute vec2 xy;
void main () {
  gl_Position = vec4(xy, 0, 1);
}`;

// from https://observablehq.com/@rreusser/selecting-the-right-opacity-for-2d-point-clouds, as in renderer.js
const COMPOSITE_FRAG = `
precision highp float;
uniform vec2 srcRes;
uniform sampler2D src;
uniform float gamma;
vec3 approxLinearToSRGB (vec3 rgb, float gamma) {
  return pow(clamp(rgb, vec3(0), vec3(1)), vec3(1.0 / gamma));
}
void main () {
  vec4 color = texture2D(src, gl_FragCoord.xy / srcRes);
  gl_FragColor = vec4(approxLinearToSRGB(color.rgb, gamma), color.a);
}`;

// The canvas's WebGL context, made here first so that regl-scatterplot's createRegl gets this one
// (getContext returns the existing context whatever attributes a later call asks for): no multisampling
// (the points are drawn into the framebuffer, never multisampled; only the one composite triangle would
// be) and a kept drawing buffer, as regl-scatterplot asks for, so a read-back (a test, a screenshot
// helper) sees the last frame.
const contextFor = (canvas) => {
  const gl = canvas.getContext('webgl', { antialias: false, preserveDrawingBuffer: true, alpha: true });
  if (!gl) throw new Error('WebGL is not available in this browser (canvas.getContext("webgl") returned null)');
  return gl;
};

/**
 * A Renderer for createScatterplot({ canvas, renderer }) that draws straight into `canvas`.
 *
 * Example:
 *   const renderer = createCanvasRenderer(canvas);
 *   const scatterplot = createScatterplot({ canvas, renderer, width, height });
 *   // ... on unmount:
 *   scatterplot.destroy(); renderer.destroy();
 */
export function createCanvasRenderer(canvas, { gamma = DEFAULT_GAMMA } = {}) {
  contextFor(canvas);
  const regl = createRegl(canvas);
  const isSupported = checkSupport(regl);
  let destroyed = false;
  const size = [Math.max(1, canvas.width), Math.max(1, canvas.height)];
  const fbo = regl.framebuffer({ width: size[0], height: size[1], colorFormat: 'rgba', colorType: 'float' });

  const composite = regl({
    vert: COMPOSITE_VERT,
    frag: COMPOSITE_FRAG,
    attributes: { xy: [-4, -4, 4, -4, 0, 4] },
    uniforms: { src: () => fbo, srcRes: () => size, gamma: () => gamma },
    count: 3,
    depth: { enable: false },
    blend: {
      enable: true,
      func: { srcRGB: 'one', srcAlpha: 'one', dstRGB: 'one minus src alpha', dstAlpha: 'one minus src alpha' },
    },
  });

  // The scatterplot sets canvas.width/height itself (its width and height times devicePixelRatio):
  // the framebuffer follows the canvas at the next frame, whoever resized it.
  const fitFramebuffer = () => {
    const width = Math.max(1, canvas.width);
    const height = Math.max(1, canvas.height);
    if (width === size[0] && height === size[1]) return;
    size[0] = width;
    size[1] = height;
    fbo.resize(width, height);
    regl.poll(); // the default framebuffer's viewport: the canvas's new size
  };

  const render = (draw) => {
    fitFramebuffer();
    regl.clear(CLEAR);
    fbo.use(() => {
      regl.clear(CLEAR);
      draw();
    });
    composite();
  };

  const drawFns = new Set();
  const frame = regl.frame(() => {
    for (const draw of drawFns) draw();
  });

  return {
    get canvas() { return canvas; },
    get regl() { return regl; },
    get gamma() { return gamma; },
    set gamma(value) { gamma = +value; },
    get isSupported() { return isSupported; },
    get isDestroyed() { return destroyed; },
    render,
    // (width, height) in CSS pixels, as regl-scatterplot's renderer takes them
    resize(width, height) {
      canvas.width = Math.max(1, Math.floor(width * window.devicePixelRatio));
      canvas.height = Math.max(1, Math.floor(height * window.devicePixelRatio));
      fitFramebuffer();
    },
    refresh: () => regl.poll(),
    onFrame(draw) {
      drawFns.add(draw);
      return () => drawFns.delete(draw);
    },
    destroy() {
      if (destroyed) return;
      destroyed = true;
      frame.cancel();
      regl.destroy();
    },
  };
}
