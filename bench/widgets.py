"""Benchmark: the explorer's scatter in JupyterLab against the scatter widgets a user would pick instead.

What is measured, in one run, in JupyterLab driven by Playwright in headless Debian Chromium (software
WebGL, so every timing is a CPU timing):

* Data: ``--sizes`` (default 10,000, 100,000 and 1,000,000) random 2-D points (normal, seed 0) with a
  10-class color, as a polars frame built in the notebook's first cell (not timed).
* Libraries (``--libraries``): odinlab's ``ScatterView.from_frame``; plotly ``go.FigureWidget`` with one
  ``Scattergl`` trace colored by class; jupyter-scatter's ``Scatter(..., color_by=...)``; embedding-atlas
  0.22's ``EmbeddingAtlasWidget`` (table and charts hidden: the embedding view only). Each library and size
  gets a fresh JupyterLab server, notebook, kernel and browser page, so nothing is cached between them.
* ``drawn``: wall time from running the one cell that builds the widget from the frame to its scatter drawn
  (a canvas of the cell's output has painted pixels: a readback of every canvas, polled every 0.1 s).
  A library that never draws is reported "not drawn in N s" (``--timeout``).
* ``bytes/point``: the payload of every kernel websocket frame the browser received between running the
  cell and drawn, less the widget's JavaScript and CSS bundle (``_esm``/``_css``, which travel in the same
  frames and are reported apart), divided by the number of points.
* ``saved``: JupyterLab saves the notebook with widget state (``@jupyter-widgets/jupyterlab-manager``
  ``saveState: true``, then ``docmanager:save``); the size of the ``.ipynb``.
* odinlab only, ``--selection-size`` images (default 100,000): a store of that many generated 16×16 images
  (``odinlab.datasets.shapes``) with a small CNN's predictions, shown as the explorer's pair (``ScatterView``
  and ``GalleryView`` linked by a ``SelectionHub``). Then the time from a selection to the gallery's first
  page of thumbnails loaded in the browser: set from Python (``hub.select(ids)``, a cell run; twice, with
  different images) and made in the browser (a box drag on the scatter).

The machine must have /usr/bin/chromium (``apt-get install chromium``) and the libraries of
bench/requirements-widgets.txt. Run from the repository root (about 10-15 minutes with the defaults):

    python bench/widgets.py
    python bench/widgets.py --sizes 10000,100000 --libraries odinlab,plotly   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "bench"))
import lab  # noqa: E402  (the browser-test harness: JupyterLab server, Chromium, notebook helpers)
from common import build_gallery_store  # noqa: E402

SIZES = "10000,100000,1000000"
LIBRARIES = ("odinlab", "plotly", "jupyter-scatter", "embedding-atlas")
POLL_S = 0.1
# A scatter counts as drawn once this many pixels of one of its canvases are painted (not transparent
# and not the canvas's background color): more than axes or a frame, fewer than the points light.
MIN_PAINTED = 300

# The notebook's first cell: the points, as a user would hold them (not timed). ``cls`` is the class
# index (0..9), ``cls_name`` the same as a categorical column (what a user colors by).
SETUP = """\
import json, time
import numpy as np
import polars as pl
{imports}
rng = np.random.default_rng(0)
N = {n}
cls = rng.integers(0, 10, N)
frame = pl.DataFrame({{
    "image_id": pl.int_range(N, eager=True).cast(pl.String),
    "x": rng.normal(size=N) + cls % 5,
    "y": rng.normal(size=N) + cls // 5 * 2,
    "cls": cls.astype(np.int8),
}}).with_columns(cls_name=pl.format("class {{}}", "cls").cast(pl.Categorical))
"""

# Printed after the measurement: how many bytes of JavaScript and CSS the widget carries.
BUNDLE = """\
def _text_bytes(value):
    if isinstance(value, (str, bytes)):
        return len(value.encode() if isinstance(value, str) else value)
    return Path(value).stat().st_size if value else 0
from pathlib import Path
print(json.dumps({"bundle": _text_bytes(getattr(widget, "_esm", "")) + _text_bytes(getattr(widget, "_css", ""))}))
"""

TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf"]


@dataclass
class Library:
    """How one library builds its scatter from ``frame`` (the cell ends by showing ``widget``)."""

    name: str
    imports: str
    cell: str
    note: str = ""


def libraries() -> dict[str, Library]:
    steps = ", ".join(f"[{i / 10}, {c!r}], [{(i + 1) / 10}, {c!r}]" for i, c in enumerate(TAB10))
    return {lib.name: lib for lib in [
        Library("odinlab", "from odinlab.widgets import ScatterView",
                'widget = ScatterView.from_frame(frame, color="cls_name")\nwidget'),
        Library("plotly", "import plotly.graph_objects as go",
                "widget = go.FigureWidget(go.Scattergl(\n"
                '    x=frame["x"].to_numpy(), y=frame["y"].to_numpy(), mode="markers",\n'
                '    marker=dict(size=3, color=frame["cls"].to_numpy(), cmin=0, cmax=10,\n'
                f"                colorscale=[{steps}])))\nwidget"),
        Library("jupyter-scatter", "import jscatter",
                'widget = jscatter.Scatter("x", "y", data=frame, color_by="cls_name").show()\nwidget'),
        Library("embedding-atlas", "from embedding_atlas.widget import EmbeddingAtlasWidget",
                'widget = EmbeddingAtlasWidget(frame, x="x", y="y", show_table=False, show_charts=False)\n'
                "widget",
                note="no color option in its Python API (the user picks a column in the view)"),
    ]}


@dataclass
class Result:
    library: str
    n: int
    drawn_s: float | None = None
    timeout_s: float = 0.0
    received: int = 0
    bundle: int = 0
    saved: int | None = None
    errors: list[str] = field(default_factory=list)  # what stopped the measurement
    console: list[str] = field(default_factory=list)  # errors the page logged (reported, not fatal)

    @property
    def bytes_per_point(self) -> float | None:
        return None if self.drawn_s is None else max(self.received - self.bundle, 0) / self.n


# -- measuring in the browser ----------------------------------------------------------------------------

class FrameBytes:
    """Sums the payloads of the kernel websocket frames the page receives while ``counting``."""

    def __init__(self, page):
        self.counting = False
        self.total = 0
        page.on("websocket", self._watch)

    def _watch(self, ws) -> None:
        if "/api/kernels/" in ws.url:
            ws.on("framereceived", self._add)

    def _add(self, payload) -> None:
        if self.counting:
            self.total += len(payload.encode() if isinstance(payload, str) else payload)


# lab.lit_pixels reads the first canvas that matches a selector; the competitors draw into one of
# several canvases (plotly) or inside a shadow root (Embedding Atlas), so this counts, over every canvas
# of one cell's output, the pixels that differ from the canvas's corner (its background), and keeps the
# largest count. The copy is at most 400×400 pixels, so a poll stays cheap at any canvas size.
PAINTED_JS = """
(index) => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
  const canvases = [];
  const collect = (node) => {
    for (const child of node.querySelectorAll('*')) {
      if (child.tagName === 'CANVAS') canvases.push(child);
      if (child.shadowRoot) collect(child.shadowRoot);
    }
  };
  collect(cell.node);
  let best = 0;
  for (const canvas of canvases) {
    if (!canvas.width || !canvas.height) continue;
    const w = Math.min(canvas.width, 400), h = Math.min(canvas.height, 400);
    const copy = document.createElement('canvas');
    copy.width = w; copy.height = h;
    const ctx = copy.getContext('2d', {willReadFrequently: true});
    ctx.drawImage(canvas, 0, 0, w, h);
    const px = ctx.getImageData(0, 0, w, h).data;
    const [r, g, b, a] = [px[0], px[1], px[2], px[3]];
    let painted = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i + 3] && (px[i] !== r || px[i + 1] !== g || px[i + 2] !== b || px[i + 3] !== a)) painted++;
    }
    best = Math.max(best, painted);
  }
  return best;
}
"""

# WebGL canvases are read back with drawImage, which sees nothing once a frame is presented unless the
# context keeps its drawing buffer (plotly's and regl-scatterplot's do, Embedding Atlas's does not):
# every page asks for it, whatever the library, so the readback sees what each one drew.
KEEP_DRAWING_BUFFER_JS = """
(() => {
  const getContext = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (type, attributes) {
    if (/webgl/.test(String(type))) attributes = Object.assign({}, attributes, {preserveDrawingBuffer: true});
    return getContext.call(this, type, attributes);
  };
})();
"""

RUN_CELL_JS = """
(index) => {
  const panel = window.jupyterapp.shell.currentWidget;
  panel.content.activeCellIndex = index;
  window.jupyterapp.commands.execute('notebook:run-cell');
}
"""


def wait_cell_ran(page, index: int, timeout: float) -> None:
    """Wait until cell ``index`` has run (lab.wait_cells_done waits for every cell of the notebook, and
    these notebooks run theirs one at a time)."""
    page.wait_for_function("""(index) => {
      const cell = window.jupyterapp.shell.currentWidget.content.model.cells.get(index);
      return Boolean(cell && cell.executionCount !== null && cell.executionCount > 0);
    }""", arg=index, timeout=timeout * 1000)


def enable_save_state(server) -> None:
    """Turn on saving widget state with the notebook (off by default in JupyterLab)."""
    url = f"http://127.0.0.1:{server.port}/lab/api/settings/@jupyter-widgets/jupyterlab-manager:plugin"
    body = json.dumps({"raw": json.dumps({"saveState": True})}).encode()
    request = urllib.request.Request(url, data=body, method="PUT", headers={
        "Authorization": f"token {server.token}", "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()


def save_notebook(page, path: Path, timeout: float = 120.0) -> int:
    """Save through JupyterLab (with widget state) and return the file's size in bytes."""
    before = path.stat().st_mtime_ns
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    deadline = time.perf_counter() + timeout
    while path.stat().st_mtime_ns == before and time.perf_counter() < deadline:
        time.sleep(0.2)
    size = -1
    while size != path.stat().st_size:  # let a large write finish
        size = path.stat().st_size
        time.sleep(0.3)
    return size


def wait_drawn(page, cell: int, started: float, timeout: float) -> float | None:
    """Seconds from ``started`` to a painted canvas in cell ``cell``'s output, or None."""
    while time.perf_counter() - started < timeout:
        if page.evaluate(PAINTED_JS, cell) >= MIN_PAINTED:
            return time.perf_counter() - started
        time.sleep(POLL_S)
    return None


def measure_scatter(browser, library: Library, n: int, timeout: float, workdir: Path,
                    shots: Path | None = None) -> Result:
    """One library at one size: a fresh folder, server, kernel and page."""
    result = Result(library.name, n, timeout_s=timeout)
    root = workdir / f"{library.name}-{n}"
    root.mkdir()
    name = "scatter.ipynb"
    lab.write_notebook(root / name, [SETUP.format(imports=library.imports, n=n), library.cell])
    with lab.JupyterServer(root) as server:
        enable_save_state(server)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.add_init_script(KEEP_DRAWING_BUFFER_JS)
        errors = lab.ConsoleErrors(page)
        frames = FrameBytes(page)
        try:
            lab.open_notebook(page, server, name)
            lab.wait_kernel_idle(page, timeout=120)
            page.evaluate(RUN_CELL_JS, 0)
            wait_cell_ran(page, 0, timeout=180)
            lab.wait_kernel_idle(page, timeout=60)
            frames.counting = True
            started = time.perf_counter()
            page.evaluate(RUN_CELL_JS, 1)
            result.drawn_s = wait_drawn(page, 1, started, timeout)
            frames.counting = False
            result.received = frames.total
            if shots is not None:  # what "drawn" looked like, to check the criterion by eye
                page.screenshot(path=str(shots / f"{library.name}-{n}.png"))
            wait_cell_ran(page, 1, timeout=timeout)
            out = lab.run_cell_text(page, BUNDLE)
            result.bundle = json.loads(out.strip().splitlines()[-1])["bundle"]
            result.saved = save_notebook(page, root / name)
        except Exception as error:  # one library failing must not stop the others
            result.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
        finally:
            # without the " (url:line)" that lab.ConsoleErrors appends: the same message at every size
            result.console = list(dict.fromkeys(re.sub(r" \([^()]*:\d*\)$", "", str(e))[:160]
                                                for e in errors.errors))
            page.close()
    return result


# -- selection -> gallery (odinlab only) ------------------------------------------------------------------

GALLERY_SETUP = """\
import numpy as np
import polars as pl
import ipywidgets
import odinlab
from odinlab.widgets import GalleryView, ScatterView
from odinlab.widgets.links import SelectionHub
store = odinlab.open_store({store!r})
ids = store.images["image_id"]
rng = np.random.default_rng(0)
frame = pl.DataFrame({{"image_id": ids, "x": rng.normal(size=len(ids)), "y": rng.normal(size=len(ids)),
                      "label": store.images["label"]}})
first, second = ids[::50].to_list(), ids[25::50].to_list()
"""

GALLERY_CELL = """\
scatter = ScatterView.from_frame(frame, color="label")
gallery = GalleryView(store, "cnn@1")
hub = SelectionHub(store, model="cnn@1")
hub.add(scatter); hub.add(gallery)
ipywidgets.GridBox([scatter, gallery], layout=ipywidgets.Layout(  # the explorer's columns
    grid_template_columns="minmax(0, 3fr) minmax(0, 2fr)", grid_gap="8px", width="100%"))
"""

# Times a selection inside the page (no polling over the Playwright connection, which is slower than
# what it measures): from ``start`` (now, after running cell ``cell``; or the next pointerup, a box drag's
# end) to the first animation frame where the gallery's first thumbnail is loaded and is ``want`` (an
# image id), or differs from ``avoid``. The seconds land in ``window.odinlabBench`` (null: timed out).
WATCH_GALLERY_JS = """
({cell, want, avoid, start, timeoutMs}) => {
  const state = window.odinlabBench = {seconds: undefined, t0: null, scatter: null, thumbs: null};
  const scatterRoot = document.querySelector('.odinlab-scatter');
  const selectedBefore = scatterRoot ? scatterRoot.dataset.selected : null;
  const first = () => {
    const thumb = document.querySelector('.odinlab-gallery .odinlab-thumb');
    const img = thumb && thumb.querySelector('img');
    return img && img.complete && img.naturalWidth > 0 ? thumb.dataset.imageId : null;
  };
  const check = () => {
    const shown = first();
    if (state.t0 !== null) {  // diagnostics: when the scatter showed a new selection, when new thumbnails appeared
      const now = (performance.now() - state.t0) / 1000;
      if (state.scatter === null && scatterRoot && scatterRoot.dataset.selected !== selectedBefore) state.scatter = now;
      const thumb = document.querySelector('.odinlab-gallery .odinlab-thumb');
      const id = thumb ? thumb.dataset.imageId : null;
      if (state.thumbs === null && id !== null && (want ? id === want : id !== avoid)) state.thumbs = now;
    }
    if (state.t0 !== null && shown !== null && (want ? shown === want : shown !== avoid)) {
      state.seconds = (performance.now() - state.t0) / 1000;
      return;
    }
    if (state.t0 !== null && performance.now() - state.t0 > timeoutMs) { state.seconds = null; return; }
    requestAnimationFrame(check);
  };
  if (start === 'pointerup') {
    window.addEventListener('pointerup', () => { state.t0 = performance.now(); }, {capture: true, once: true});
  } else {
    state.t0 = performance.now();
    const panel = window.jupyterapp.shell.currentWidget;
    panel.content.activeCellIndex = cell;
    window.jupyterapp.commands.execute('notebook:run-cell');
  }
  requestAnimationFrame(check);
}
"""

FIRST_THUMB_JS = """
() => {
  const thumb = document.querySelector('.odinlab-gallery .odinlab-thumb');
  const img = thumb && thumb.querySelector('img');
  return img && img.complete && img.naturalWidth > 0 ? thumb.dataset.imageId : null;
}
"""


def expected_first_thumbs(path: Path) -> tuple[str, str]:
    """The first gallery image of each Python selection, computed here with the same classes."""
    import odinlab
    from odinlab.widgets import GalleryView

    store = odinlab.open_store(str(path))
    ids = store.images["image_id"]
    gallery = GalleryView(store, "cnn@1")
    firsts = []
    for chosen in (ids[::50].to_list(), ids[25::50].to_list()):
        gallery.show_selection(chosen)
        firsts.append(gallery.ids[0])
    return firsts[0], firsts[1]


def time_gallery(page, timeout: float, *, cell: int | None = None, want: str | None = None,
                 avoid: str | None = None, action=None) -> float | None:
    """Seconds from running ``cell`` (or from the pointerup of ``action()``) to the gallery's first
    thumbnail loaded and being ``want`` (or not ``avoid``); None when that took over ``timeout``."""
    start = "pointerup" if action is not None else "now"
    page.evaluate(WATCH_GALLERY_JS, {"cell": cell, "want": want, "avoid": avoid, "start": start,
                                     "timeoutMs": timeout * 1000})
    if action is not None:
        action()
    page.wait_for_function("() => window.odinlabBench.seconds !== undefined", timeout=(timeout + 30) * 1000)
    state = page.evaluate("() => window.odinlabBench")
    print(f"  selection: scatter showed it at {state['scatter']} s, thumbnails in the DOM at {state['thumbs']} s, "
          f"loaded at {state['seconds']} s", flush=True)
    return state["seconds"]


def box_select(page) -> None:
    """A drag over a tenth of the scatter's canvas, right of the middle (box mode already on)."""
    box = page.locator("canvas.odinlab-scatter-canvas").bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.45
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(1, 9):
        page.mouse.move(x0 + box["width"] * 0.1 * step / 8, y0 + box["height"] * 0.1 * step / 8)
    page.mouse.up()


EMPTY_CELL_JS = """
async (cell) => {
  const t0 = performance.now();
  const panel = window.jupyterapp.shell.currentWidget;
  panel.content.activeCellIndex = cell;
  await window.jupyterapp.commands.execute('notebook:run-cell');
  const prompt = () => panel.content.widgets[cell].node.querySelector('.jp-InputPrompt').textContent;
  while (!/\\[\\d+\\]/.test(prompt())) await new Promise(requestAnimationFrame);
  return (performance.now() - t0) / 1000;
}
"""


def time_empty_cell(page, timeout: float) -> float:
    """Seconds from running a cell holding ``pass`` to its prompt showing it ran."""
    index = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.widgets.length") - 1
    return page.evaluate(EMPTY_CELL_JS, index)


def measure_selection(browser, n: int, timeout: float, workdir: Path) -> dict:
    """Selection -> the gallery's first thumbnails, at ``n`` images (from Python twice, then a box)."""
    root = workdir / f"selection-{n}"
    root.mkdir()
    start = time.perf_counter()
    build_gallery_store(root / "store", n)
    out = {"n": n, "store_s": time.perf_counter() - start, "errors": []}
    firsts = expected_first_thumbs(root / "store")
    name = "selection.ipynb"
    lab.write_notebook(root / name, [GALLERY_SETUP.format(store=str(root / "store")), GALLERY_CELL,
                                     "hub.select(first)", "hub.select(second)", "pass"])
    with lab.JupyterServer(root) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = lab.ConsoleErrors(page)
        try:
            lab.open_notebook(page, server, name)
            lab.wait_kernel_idle(page, timeout=120)
            for cell in (0, 1):
                page.evaluate(RUN_CELL_JS, cell)
                wait_cell_ran(page, cell, timeout=180)
            page.wait_for_selector('.odinlab-scatter[data-drawn="true"]', timeout=timeout * 1000)
            page.wait_for_function(FIRST_THUMB_JS, timeout=timeout * 1000)
            for cell, key, first in ((2, "python_first_s", firsts[0]), (3, "python_second_s", firsts[1])):
                out[key] = time_gallery(page, timeout, cell=cell, want=first)
                wait_cell_ran(page, cell, timeout=timeout)
            # a cell that does nothing, timed the same way: what JupyterLab and the kernel cost by themselves
            out["empty_cell_s"] = time_empty_cell(page, timeout)
            before = page.evaluate(FIRST_THUMB_JS)
            # box mode first: the toolbar click is a pointerup too, and the watch starts at the next one
            page.click('.odinlab-scatter-toolbar button[data-action="box"]')
            out["box_s"] = time_gallery(page, timeout, avoid=before, action=lambda: box_select(page))
            # check the box's gallery against the selection the kernel holds
            check = lab.run_cell_text(page, "print(len(hub.ids), gallery.total, gallery.ids[0])")
            out["box_check"] = check.strip()
        except Exception as error:
            out["errors"].append(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
        finally:
            out["errors"] += [str(e)[:200] for e in errors.errors]
            page.close()
    return out


# -- the table -------------------------------------------------------------------------------------------

def fmt_drawn(r: Result) -> str:
    if r.errors and r.drawn_s is None:
        return "failed"
    return f"{r.drawn_s:.1f} s" if r.drawn_s is not None else f"not drawn in {r.timeout_s:.0f} s"


def fmt_bpp(r: Result) -> str:
    return "-" if r.bytes_per_point is None else f"{r.bytes_per_point:.1f}"


def fmt_mb(n_bytes: int | None) -> str:
    return "-" if n_bytes is None else f"{n_bytes / 1e6:.2f} MB"


def print_table(results: list[Result], sizes: list[int]) -> None:
    print("\n| library | points | drawn | bytes/point (without JS) | JS+CSS bundle | saved notebook |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r.library} | {r.n:,} | {fmt_drawn(r)} | {fmt_bpp(r)} | {fmt_mb(r.bundle or None)} "
              f"| {fmt_mb(r.saved)} |")
    for r in results:
        for error in r.errors:
            print(f"- {r.library} at {r.n:,} failed: {error}")
    logged: dict[str, list[str]] = {}
    for r in results:
        logged.setdefault(r.library, [])
        logged[r.library] += [m for m in r.console if m not in logged[r.library]]
    for library, messages in logged.items():
        if messages:
            print(f"- {library} logged console errors: {'; '.join(messages[:3])}")
    for name, lib in libraries().items():
        if lib.note and any(r.library == name for r in results):
            print(f"- {name}: {lib.note}")


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or ours <= 0:
        return "-"
    return f"{theirs / ours:.1f}x"


def print_ratios(results: list[Result], sizes: list[int]) -> None:
    ours = {r.n: r for r in results if r.library == "odinlab"}
    others = [r for r in results if r.library != "odinlab" and r.n in ours]
    if not others:
        return
    print("\nodinlab against each (their number / odinlab's: above 1x, odinlab is faster or smaller)\n")
    print("| library | points | drawn | bytes/point | saved notebook |")
    print("| --- | --- | --- | --- | --- |")
    for r in others:
        o = ours[r.n]
        drawn = ratio(o.drawn_s, r.drawn_s) if r.drawn_s is not None else "odinlab drew, it did not"
        print(f"| {r.library} | {r.n:,} | {drawn} | {ratio(o.bytes_per_point, r.bytes_per_point)} "
              f"| {ratio(o.saved, r.saved)} |")


def print_selection(sel: dict) -> None:
    def s(key):
        return "-" if sel.get(key) is None else f"{sel[key]:.2f} s"

    print(f"\nSelection -> gallery's first thumbnails, odinlab, {sel['n']:,} images "
          f"(store built in {sel['store_s']:.0f} s, not counted):\n")
    print("| selection | to first thumbnails |")
    print("| --- | --- |")
    print(f"| from Python, hub.select(2% of the images), first | {s('python_first_s')} |")
    print(f"| from Python, another 2%, second | {s('python_second_s')} |")
    print(f"| box drag on the scatter (browser), from the mouse's release | {s('box_s')} |")
    print(f"| (for scale: a cell holding `pass`, run to its prompt) | {s('empty_cell_s')} |")
    if sel.get("box_check"):
        print(f"- after the box: selected, gallery total, gallery's first id = {sel['box_check']}")
    for error in sel["errors"]:
        print(f"- {error}")


def wins(results: list[Result]) -> tuple[int, int]:
    """How many (library, size, measure) comparisons odinlab wins, of how many were made."""
    ours = {r.n: r for r in results if r.library == "odinlab"}
    won = made = 0
    for r in results:
        o = ours.get(r.n)
        if r.library == "odinlab" or o is None:
            continue
        for mine, theirs in ((o.drawn_s, r.drawn_s), (o.bytes_per_point, r.bytes_per_point), (o.saved, r.saved)):
            if mine is not None:
                made += 1
                won += theirs is None or mine < theirs
    return won, made


def print_headline(results: list[Result], sel: dict | None, sizes: list[int]) -> None:
    ours = {r.n: r for r in results if r.library == "odinlab"}
    big = max(sizes)
    o = ours.get(big)
    parts = []
    if o is not None:
        parts.append(f"odinlab at {big:,} points: drawn {fmt_drawn(o)} (target < 5 s), "
                     f"{fmt_bpp(o)} bytes/point (target <= 12), saved {fmt_mb(o.saved)} (target < 5 MB)")
        others = [r for r in results if r.library != "odinlab" and r.n == big and r.drawn_s is not None]
        if others and o.drawn_s:
            best = min(others, key=lambda r: r.drawn_s)
            parts.append(f"the fastest other, {best.library}, drew in {best.drawn_s:.1f} s "
                         f"({ratio(o.drawn_s, best.drawn_s)} odinlab's time)")
        won, made = wins(results)
        if made:
            parts.append(f"odinlab better in {won} of {made} comparisons (drawn, bytes/point, saved)")
    if sel is not None and sel.get("python_first_s") is not None:
        parts.append(f"selection -> gallery {sel['python_first_s']:.2f} s at {sel['n']:,} (target < 0.5 s)")
    if parts:
        print("\nHeadline: " + "; ".join(parts) + ".")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=SIZES, help="comma-separated numbers of points")
    parser.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated, of " + ", ".join(LIBRARIES))
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds before a scatter is 'not drawn'")
    parser.add_argument("--selection-size", type=int, default=100_000,
                        help="images in the selection -> gallery measurement (0: skip it)")
    parser.add_argument("--screenshots", default=None, help="a folder for a screenshot of each scatter when drawn")
    parser.add_argument("--workdir", default=None, help="where to put notebooks and stores (default: $TMPDIR)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    known = libraries()
    chosen = [name.strip() for name in args.libraries.split(",")]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise SystemExit(f"Unknown libraries {unknown}; choose from {', '.join(LIBRARIES)}.")
    from playwright.sync_api import sync_playwright

    shots = Path(args.screenshots) if args.screenshots else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="odinlab-bench-widgets-", dir=args.workdir))
    results: list[Result] = []
    selection = None
    try:
        with sync_playwright() as playwright:
            browser = lab.launch_browser(playwright)
            try:
                for n in sizes:
                    for name in chosen:
                        result = measure_scatter(browser, known[name], n, args.timeout, workdir, shots)
                        results.append(result)
                        print(f"{name} {n:,}: drawn {fmt_drawn(result)}, {fmt_bpp(result)} bytes/point, "
                              f"bundle {fmt_mb(result.bundle or None)}, saved {fmt_mb(result.saved)}"
                              + (f", errors: {result.errors}" if result.errors else "")
                              + (f", console: {result.console[:2]}" if result.console else ""), flush=True)
                if args.selection_size:
                    selection = measure_selection(browser, args.selection_size, args.timeout, workdir)
            finally:
                browser.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, sizes)
    print_ratios(results, sizes)
    if selection is not None:
        print_selection(selection)
    print_headline(results, selection, sizes)


if __name__ == "__main__":
    main()
