// The tooltip of odinlab's scatter: the text of the point under the mouse, the image and caption the
// kernel's hover provider answers for it (scatter.py set_hover), or the label of an overlay's mark.
//
// The kernel is asked {type: 'hover', index} once the mouse has rested HOVER_DELAY_MS on a point: a
// sweep across thousands of points asks only for where it stops. An answer for a point no longer under
// the mouse is dropped. Images are shown from object URLs of Blobs, each revoked when replaced.
// DOM hooks: .odinlab-tooltip (data-index: the point shown, data-state: text | image | error | overlay),
// img.odinlab-tooltip-image, .odinlab-tooltip-text.

const HOVER_DELAY_MS = 60;
const OFFSET_PX = 12;

const bytesOf = (value) => {
  if (!value) return new Uint8Array(0);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array(0);
};

export function createTooltip(plot, { model, describe }) {
  const tooltip = document.createElement('div');
  tooltip.className = 'odinlab-tooltip';
  const image = document.createElement('img');
  image.className = 'odinlab-tooltip-image';
  image.alt = '';
  const text = document.createElement('div');
  text.className = 'odinlab-tooltip-text';
  tooltip.append(image, text);
  plot.appendChild(tooltip);
  image.addEventListener('load', () => place()); // the tooltip grew: keep it inside the plot

  let point = -1; // the point under the mouse, -1 for none
  let mark = null; // the overlay mark under the mouse: {name, index, label}
  let answer = null; // {index, url, caption, error} from the kernel for `point`
  let timer = null;
  let mouse = [0, 0];

  function place() {
    // beside the mouse, flipped to stay inside the plot (it clips what overflows)
    const w = tooltip.offsetWidth;
    const h = tooltip.offsetHeight;
    let left = mouse[0] + OFFSET_PX;
    let top = mouse[1] + OFFSET_PX;
    if (left + w > plot.clientWidth) left = Math.max(0, mouse[0] - OFFSET_PX - w);
    if (top + h > plot.clientHeight) top = Math.max(0, mouse[1] - OFFSET_PX - h);
    tooltip.style.left = `${left}px`;
    tooltip.style.top = `${top}px`;
  }

  const show = () => {
    let state = '';
    if (mark) {
      state = 'overlay';
      text.textContent = mark.label ? `${mark.name}: ${mark.label}` : mark.name;
    } else if (point >= 0 && answer && answer.index === point) {
      state = answer.error || !answer.url ? 'error' : 'image';
      text.textContent = answer.caption;
    } else if (point >= 0) {
      state = 'text';
      text.textContent = describe(point);
    }
    const withImage = state === 'image';
    if (withImage && image.getAttribute('src') !== answer.url) image.src = answer.url;
    image.style.display = withImage ? 'block' : 'none';
    tooltip.dataset.state = state;
    tooltip.dataset.index = String(mark ? -1 : point);
    tooltip.style.display = state ? 'block' : 'none';
    if (state) place();
  };

  const forget = () => {
    if (answer && answer.url) URL.revokeObjectURL(answer.url);
    answer = null;
  };

  const pointOver = (i) => {
    point = i;
    clearTimeout(timer);
    if (!(answer && answer.index === i)) forget();
    if (model.get('hover_images')) {
      timer = setTimeout(() => {
        if (point === i) model.send({ type: 'hover', index: i });
      }, HOVER_DELAY_MS);
    }
    show();
  };

  const pointOut = () => {
    point = -1;
    clearTimeout(timer);
    show();
  };

  const overlayOver = (hit) => {
    const same = hit && mark && hit.name === mark.name && hit.index === mark.index;
    if (same || (!hit && !mark)) return;
    mark = hit;
    show();
  };

  const onAnswer = (msg, buffers) => {
    if (msg.index !== point) return; // the mouse has moved on: only the latest point matters
    forget();
    const bytes = bytesOf(buffers && buffers[0]);
    const url = bytes.length && !msg.error
      ? URL.createObjectURL(new Blob([bytes], { type: msg.mime || 'image/png' }))
      : null;
    answer = { index: msg.index, url, caption: String(msg.caption || ''), error: Boolean(msg.error) };
    show();
  };

  const move = (x, y) => {
    mouse = [x, y];
    if (tooltip.style.display === 'block') place();
  };

  const leave = () => {
    point = -1;
    mark = null;
    clearTimeout(timer);
    show();
  };

  const destroy = () => {
    clearTimeout(timer);
    forget();
  };

  return { pointOver, pointOut, overlayOver, onAnswer, move, leave, destroy, element: tooltip };
}
