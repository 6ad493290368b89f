"""The embedding scatter in a real JupyterLab 4, in headless Chromium: hover images, overlays, its
size in a grid, points drawn where they are after a zoom and a resize, how fast a box selection of
100,000 points reaches the kernel, and what a selection from Python costs the page beside a gallery.

One server, one browser and one notebook for the module. The notebook shows three scatters: 300
random points inside a CSS grid (a hover provider that draws a PNG, or raises for ids ending in 7;
an overlay of three marks on its three outermost points and an overlay of a 3x3 grid of marks over
the cloud's middle); 100,000 random points that record in the kernel when a selection arrives; and
a scatter of a small store's 600 images beside their gallery in an HBox, linked by a SelectionHub.
"""

import time

import numpy as np
import pytest

import lab

pytestmark = pytest.mark.timeout(300)

VIEWPORT = {"width": 1200, "height": 900}
SECONDS = 1000  # Playwright counts milliseconds
SMALL = ".odinlab-h1-small .odinlab-scatter"
BIG = ".odinlab-h1-big .odinlab-scatter"
LINKED = ".odinlab-h3-linked .odinlab-scatter"
GALLERY = ".odinlab-h3-gallery .odinlab-gallery"
N_SMALL = 300
N_BIG = 100_000
N_STORE = 600
MARK_COLOR = "#ff00ff"
GRID_COLOR = "#00c000"
NOTEBOOK = "scatter.ipynb"
CELLS = [
    # the small scatter, in a grid whose first column may grow with its content (1fr, not minmax(0, 1fr))
    f"""import io, json, time
import numpy as np
import ipywidgets as widgets
from PIL import Image
from odinlab.widgets.scatter import ScatterView

rng = np.random.default_rng(0)
x, y = rng.normal(size={N_SMALL}), rng.normal(size={N_SMALL})
ids = [f"p{{i:03d}}" for i in range({N_SMALL})]
small = ScatterView(x, y, ids, color=rng.integers(0, 5, {N_SMALL}), legend=list("abcde"), height=360)

def thumbnail(image_id):
    i = int(image_id[1:])
    if i % 10 == 7:
        raise ValueError(f"no thumbnail for {{image_id}}\\nthe second line")
    pixels = np.full((24, 24, 3), (i % 256, 80, 160), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue(), f"caption of {{image_id}}"

small.set_hover(thumbnail)
twins = [int(i) for i in np.argsort(np.hypot(x, y))[-3:]]  # the farthest from the grid overlay
small.set_overlay("marks", x[twins], y[twins], color="{MARK_COLOR}", labels=[f"twin of {{ids[i]}}" for i in twins])
gx, gy = np.meshgrid([-0.5, 0.0, 0.5], [-0.5, 0.0, 0.5])
small.set_overlay("grid", gx.ravel(), gy.ravel(), color="{GRID_COLOR}", size=np.arange(9.0))
small.add_class("odinlab-h1-small")
widgets.GridBox([small, widgets.HTML("<p>a neighbour in the grid</p>")],
                layout=widgets.Layout(grid_template_columns="2fr 1fr", width="100%"))""",
    f"""rng = np.random.default_rng(1)
big = ScatterView(rng.normal(size={N_BIG}), rng.normal(size={N_BIG}), [f"b{{i}}" for i in range({N_BIG})],
                  color=rng.integers(0, 10, {N_BIG}), height=400)
arrivals = []
big.observe(lambda change: arrivals.append([time.time(), len(big.selected_indices)]), names=["selection_mask"])
big.add_class("odinlab-h1-big")
big""",
    # a scatter and a gallery side by side, as a user would lay them out (bench/widgets.py does too)
    """import odinlab, polars as pl
from odinlab.widgets import GalleryView
from odinlab.widgets.links import SelectionHub
store = odinlab.open_store("store")
gids = store.images["image_id"]
rng = np.random.default_rng(2)
gframe = pl.DataFrame({"image_id": gids, "x": rng.normal(size=len(gids)), "y": rng.normal(size=len(gids)),
                       "label": store.images["label"]})
linked = ScatterView.from_frame(gframe, color="label", height=300)
gallery = GalleryView(store, "cnn@1")
hub = SelectionHub(store, model="cnn@1")
hub.add(linked); hub.add(gallery)
linked.add_class("odinlab-h3-linked"); gallery.add_class("odinlab-h3-gallery")
widgets.HBox([linked, gallery])""",
]


def build_store(folder) -> None:
    """A store of N_STORE generated images and a small untrained CNN's predictions (~1.5 s)."""
    import torch

    import odinlab
    from odinlab.nets import SmallCNN

    torch.manual_seed(0)
    data = odinlab.datasets.shapes(n=N_STORE, size=16, seed=0)
    store = odinlab.open_store(str(folder / "store"), create=True)
    store.ingest(data)
    net = SmallCNN(3, len(data.classes), width=4)
    store.register_model(net, "cnn")
    store.materialize(net, progress=False)


@pytest.fixture(scope="module")
def page(chromium, tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e-scatter")
    build_store(folder)
    lab.write_notebook(folder / NOTEBOOK, CELLS)
    with lab.JupyterServer(folder, app="lab") as server:
        page = chromium.new_page(viewport=VIEWPORT)
        try:
            page.odinlab_errors = lab.ConsoleErrors(page)
            lab.open_and_run(page, server, NOTEBOOK, len(CELLS), timeout=120)
            for root in (SMALL, BIG, LINKED):
                page.wait_for_selector(f"{root}[data-drawn=true]", timeout=60 * SECONDS)
            yield page
        finally:
            page.close()


# -- helpers ---------------------------------------------------------------------------------------------



def show(page, root: str) -> None:
    """Scroll the scatter into the middle of the window and wait until its canvas holds still."""
    page.evaluate("(s) => document.querySelector(s).scrollIntoView({block: 'center'})", root)
    page.wait_for_function("""(s) => {
      const r = document.querySelector(s + ' canvas.odinlab-scatter-canvas').getBoundingClientRect();
      const key = [r.left, r.top, r.width, r.height].join(',');
      window.__h1Stable = window.__h1Stable && window.__h1Stable.key === key
        ? {key, frames: window.__h1Stable.frames + 1} : {key, frames: 0};
      return window.__h1Stable.frames >= 5;
    }""", arg=root, polling="raf", timeout=10 * SECONDS)


def screen_positions(page, root: str, n: int) -> np.ndarray:
    """Page pixels of points 0..n-1, from regl-scatterplot's getScreenPosition."""
    return np.array(page.evaluate("""([s, n]) => {
      const root = document.querySelector(s);
      const plot = root.odinlabScatterplot;
      const r = root.querySelector('canvas.odinlab-scatter-canvas').getBoundingClientRect();
      return Array.from({length: n}, (_, i) => {
        const [x, y] = plot.getScreenPosition(i);
        return [r.left + x, r.top + y];
      });
    }""", [root, n]))


def canvas_box(page, root: str) -> tuple[float, float, float, float]:
    r = page.evaluate("(s) => document.querySelector(s + ' canvas.odinlab-scatter-canvas').getBoundingClientRect()"
                      ".toJSON()", root)
    return r["left"], r["top"], r["right"], r["bottom"]


def drag_box(page, root: str, box) -> None:
    """A box drag in the scatter's box mode, from the box's top-left to its bottom-right corner."""
    page.click(f"{root} button[data-action=box]")
    page.wait_for_selector(f"{root}[data-mode=box]")
    x0, y0, x1, y1 = box
    page.mouse.move(x0 - 3, y0 - 3)
    page.mouse.down()
    # regl-scatterplot starts a box at the first move after the press and throttles moves by 10 ms
    page.mouse.move(x0, y0)
    page.wait_for_timeout(30)
    page.mouse.move(x1, y1, steps=6)
    page.wait_for_timeout(60)  # its debounce: a release right after the last move drops the last corner


def release_and_time(page) -> float:
    """Release the mouse; the time.time() just before."""
    started = time.time()
    page.mouse.up()
    return started


def under_the_mouse(page, root: str, positions: np.ndarray) -> np.ndarray:
    """Whether a mouse at each position would reach the scatter's canvas (nothing of JupyterLab over it)."""
    return np.array(page.evaluate("""([s, positions]) => {
      const canvas = document.querySelector(s + ' canvas.odinlab-scatter-canvas');
      return positions.map(([x, y]) => document.elementFromPoint(x, y) === canvas);
    }""", [root, positions.tolist()]))


def isolated_points(positions: np.ndarray, box, avoid: np.ndarray, spacing: float = 16) -> list[int]:
    """Points at least ``spacing`` px from every other point and from ``avoid``, 20 px inside ``box``."""
    left, top, right, bottom = box
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    far = d.min(axis=1) > spacing
    if len(avoid):
        far &= np.linalg.norm(positions[:, None] - avoid[None], axis=-1).min(axis=1) > spacing
    inside = ((positions[:, 0] > left + 20) & (positions[:, 0] < right - 20)
              & (positions[:, 1] > top + 20) & (positions[:, 1] < bottom - 20))
    return [int(i) for i in np.flatnonzero(far & inside)]


def hover(page, position) -> None:
    """Move the mouse onto a point from outside the canvas (regl-scatterplot needs the canvas entered)."""
    page.mouse.move(5, 5)
    page.mouse.move(*position, steps=4)


# -- the tests -------------------------------------------------------------------------------------------

def test_overlays_have_a_legend_entry_each_and_are_drawn(page):
    entries = page.evaluate("""(s) => Array.from(document.querySelectorAll(s + ' .odinlab-overlay'),
      (e) => [e.dataset.name, e.dataset.points])""", SMALL)
    assert entries == [["marks", "3"], ["grid", "9"]]
    layer = page.locator(f"{SMALL} canvas.odinlab-overlay-canvas")
    assert layer.get_attribute("data-overlays") == "2" and layer.get_attribute("data-drawn-points") == "12"


def test_an_overlay_is_drawn_on_the_points_at_its_data_coordinates(page):
    indices = lab.python_json(page, "twins")  # first: running a cell scrolls the notebook to it
    show(page, SMALL)
    twins = screen_positions(page, SMALL, N_SMALL)[indices]
    pixels = np.array(lab.pixels_of_color(page, f"{SMALL} canvas.odinlab-overlay-canvas", MARK_COLOR))
    # each mark is a ring in its color around a light fill: its outline's pixels are centred on the point
    assert len(pixels) >= 3 * 8, f"only {len(pixels)} pixels of the marks' color on the overlay layer"
    nearest = np.linalg.norm(pixels[:, None] - twins[None], axis=-1)
    assert nearest.min(axis=1).max() < 6, "a mark is drawn away from every point it should sit on"
    for k, i in enumerate(indices):
        mine = pixels[nearest.argmin(axis=1) == k]
        assert len(mine) >= 8, f"no mark on point {i}"
        centre = (mine.min(axis=0) + mine.max(axis=0)) / 2  # of the ring's outline (anti-aliasing thins it unevenly)
        assert np.linalg.norm(centre - twins[k]) < 1.5, f"the mark of point {i} is off its point"


def test_a_box_over_an_overlay_selects_only_the_real_points_inside(page):
    show(page, SMALL)
    positions = screen_positions(page, SMALL, N_SMALL)
    marks = np.array(lab.pixels_of_color(page, f"{SMALL} canvas.odinlab-overlay-canvas", GRID_COLOR))
    assert len(marks), "the grid overlay is not drawn"
    # the grid's marks plus a margin chosen so that no point lies within 3 px of the box's edges
    for pad in range(8, 40):
        box = (*(marks.min(axis=0) - pad).round(), *(marks.max(axis=0) + pad).round())
        x0, y0, x1, y1 = box
        inside = (positions[:, 0] > x0) & (positions[:, 0] < x1) & (positions[:, 1] > y0) & (positions[:, 1] < y1)
        edge = np.minimum.reduce([np.abs(positions[:, 0] - x0), np.abs(positions[:, 0] - x1),
                                  np.abs(positions[:, 1] - y0), np.abs(positions[:, 1] - y1)])
        near = ((positions[:, 0] > x0 - 3) & (positions[:, 0] < x1 + 3) & (positions[:, 1] > y0 - 3)
                & (positions[:, 1] < y1 + 3) & (edge < 3))
        if inside.any() and not near.any():
            break
    expected = sorted(int(i) for i in np.flatnonzero(inside))
    drag_box(page, SMALL, box)
    page.mouse.up()
    page.wait_for_selector(f"{SMALL}[data-selected='{len(expected)}']", timeout=10 * SECONDS)
    assert lab.python_json(page, "small.selected_indices.tolist()") == expected
    page.click(f"{SMALL} button[data-action=clear]")
    page.click(f"{SMALL} button[data-action=panZoom]")
    page.wait_for_selector(f"{SMALL}[data-selected='0']")


def _hover_targets(page):
    show(page, SMALL)
    positions = screen_positions(page, SMALL, N_SMALL)
    overlay = np.array(lab.pixels_of_color(page, f"{SMALL} canvas.odinlab-overlay-canvas", MARK_COLOR)
                       + lab.pixels_of_color(page, f"{SMALL} canvas.odinlab-overlay-canvas", GRID_COLOR))
    candidates = isolated_points(positions, canvas_box(page, SMALL), overlay)
    reachable = under_the_mouse(page, SMALL, positions[candidates])
    return positions, [i for i, ok in zip(candidates, reachable) if ok]


def test_hover_shows_the_providers_image_and_caption(page, artifacts):
    positions, candidates = _hover_targets(page)
    i = next(i for i in candidates if i % 10 != 7)
    hover(page, positions[i])
    tooltip = f"{SMALL} .odinlab-tooltip[data-state=image][data-index='{i}']"
    page.wait_for_selector(tooltip, timeout=10 * SECONDS)
    page.wait_for_function("""(s) => {
      const img = document.querySelector(s + ' img.odinlab-tooltip-image');
      return img && img.complete && img.naturalWidth === 24 && img.src.startsWith('blob:');
    }""", arg=tooltip, timeout=10 * SECONDS)
    assert page.locator(f"{tooltip} .odinlab-tooltip-text").text_content() == f"caption of p{i:03d}"
    path = artifacts / "scatter-hover.png"  # the scatter with its overlays, legend and a hover image
    page.screenshot(path=str(path), clip=page.locator(SMALL).bounding_box())
    assert path.stat().st_size > 10_000
    assert lab.python_json(page, "small.hovered") == i  # (running a cell scrolls the page: last)
    page.mouse.move(5, 5)
    page.wait_for_selector(f"{SMALL} .odinlab-tooltip", state="hidden")


def test_a_provider_error_shows_the_id_and_its_first_line_and_the_view_goes_on(page):
    positions, candidates = _hover_targets(page)
    broken = next(i for i in candidates if i % 10 == 7)
    hover(page, positions[broken])
    tooltip = f"{SMALL} .odinlab-tooltip[data-state=error][data-index='{broken}']"
    page.wait_for_selector(tooltip, timeout=10 * SECONDS)
    text = page.locator(f"{tooltip} .odinlab-tooltip-text").text_content()
    assert text == f"p{broken:03d}: ValueError: no thumbnail for p{broken:03d}"
    assert not page.locator(f"{tooltip} img.odinlab-tooltip-image").is_visible()
    healthy = next(i for i in candidates if i % 10 != 7)  # the next hover still gets its image
    hover(page, positions[healthy])
    page.wait_for_selector(f"{SMALL} .odinlab-tooltip[data-state=image][data-index='{healthy}']", timeout=10 * SECONDS)
    page.mouse.move(5, 5)


def _widths(page):
    return page.evaluate("""(s) => {
      const root = document.querySelector(s);
      return {canvas: root.querySelector('canvas.odinlab-scatter-canvas').getBoundingClientRect().width,
              plot: root.querySelector('.odinlab-scatter-plot').clientWidth,
              cell: root.closest('.widget-gridbox').getBoundingClientRect().width};
    }""", SMALL)


def test_the_canvas_keeps_its_size_in_a_grid_and_shrinks_with_it(page):
    show(page, SMALL)
    samples = [_widths(page)]
    for _ in range(2):
        page.wait_for_timeout(1000)
        samples.append(_widths(page))
    assert len({s["canvas"] for s in samples}) == 1, f"the canvas keeps changing width: {samples}"
    first = samples[0]
    assert first["canvas"] == first["plot"] and first["canvas"] < first["cell"], first
    page.set_viewport_size({"width": 800, "height": VIEWPORT["height"]})
    try:
        page.wait_for_function("""([s, before]) => {
          const root = document.querySelector(s);
          const canvas = root.querySelector('canvas.odinlab-scatter-canvas').getBoundingClientRect().width;
          return canvas < before - 100 && canvas === root.querySelector('.odinlab-scatter-plot').clientWidth;
        }""", arg=[SMALL, first["canvas"]], timeout=10 * SECONDS)
    finally:
        page.set_viewport_size(VIEWPORT)
    page.wait_for_function("""([s, before]) => document.querySelector(s + ' canvas.odinlab-scatter-canvas')
      .getBoundingClientRect().width === before""", arg=[SMALL, first["canvas"]], timeout=10 * SECONDS)


def test_a_box_selection_of_100k_points_reaches_the_kernel_within_a_second(page):
    show(page, BIG)
    left, top, right, bottom = canvas_box(page, BIG)
    width, height = right - left, bottom - top
    box = (left + 0.3 * width, top + 0.3 * height, left + 0.7 * width, top + 0.7 * height)
    page.evaluate("""(s) => {
      const root = document.querySelector(s);
      root.h1Release = null;
      if (!root.h1Watched) {
        root.h1Watched = true;  // the release's own time stamp (when the browser got it)
        window.addEventListener('mouseup', (event) => { root.h1Release = event.timeStamp; }, true);
      }
    }""", BIG)
    drag_box(page, BIG, box)
    released = release_and_time(page)
    page.wait_for_function(f"() => Number(document.querySelector('{BIG}').dataset.selected) > 1000",
                           timeout=30 * SECONDS)
    in_page = page.evaluate("(s) => { const r = document.querySelector(s); "
                            "return r.odinlabTimings.maskSentAt - r.h1Release; }", BIG)
    arrived, count = lab.python_json(page, "arrivals[-1]")
    assert count == int(page.locator(BIG).get_attribute("data-selected"))
    took = arrived - released
    print(f"100k box: release -> mask sent {in_page:.0f} ms in the page, release -> kernel {took * 1000:.0f} ms "
          f"({count} points selected)")
    assert took < 1.0, (f"the selection of {count} points reached the kernel {took:.2f} s after the release "
                        f"(the page sent it {in_page:.0f} ms after the release)")
    page.click(f"{BIG} button[data-action=panZoom]")


# Whether each position (page pixels) is on a painted pixel of the points' canvas (read back: its WebGL
# context keeps its drawing buffer), and the share of the canvas painted.
PAINTED_AT = """([s, positions]) => {
  const canvas = document.querySelector(s + ' canvas.odinlab-scatter-canvas');
  const box = canvas.getBoundingClientRect();
  const copy = document.createElement('canvas');
  copy.width = canvas.width; copy.height = canvas.height;
  const context = copy.getContext('2d');
  context.drawImage(canvas, 0, 0);
  const data = context.getImageData(0, 0, copy.width, copy.height).data;
  const sx = copy.width / box.width, sy = copy.height / box.height;
  let painted = 0;
  for (let k = 3; k < data.length; k += 4) painted += data[k] > 0;
  const at = positions.map(([x, y]) => {
    const i = Math.floor((x - box.left) * sx), j = Math.floor((y - box.top) * sy);
    return data[4 * (j * copy.width + i) + 3] > 0;
  });
  return {at, share: painted / (copy.width * copy.height)};
}"""


def settle(page, root: str) -> None:
    """Wait until the scatter has drawn no frame for 300 ms: the last change is on the canvas."""
    page.evaluate("""(s) => {
      const root = document.querySelector(s);
      if (root.h3LastDraw === undefined) {
        root.h3LastDraw = performance.now();
        root.odinlabScatterplot.subscribe('drawing', () => { root.h3LastDraw = performance.now(); });
      }
    }""", root)
    page.wait_for_timeout(50)
    page.wait_for_function("(s) => performance.now() - document.querySelector(s).h3LastDraw > 300", arg=root,
                           timeout=10 * SECONDS)


def assert_drawn_where_placed(page, root: str, n: int) -> np.ndarray:
    """Every point inside the canvas is painted at the position the scatter gives it (the position that
    box selection, hover and overlays use); returns the positions."""
    settle(page, root)
    positions = screen_positions(page, root, n)
    left, top, right, bottom = canvas_box(page, root)
    inside = ((positions[:, 0] > left + 4) & (positions[:, 0] < right - 4)
              & (positions[:, 1] > top + 4) & (positions[:, 1] < bottom - 4))
    found = page.evaluate(PAINTED_AT, [root, positions[inside].tolist()])
    missed = int(inside.sum()) - sum(found["at"])
    assert inside.sum() >= 20 and missed == 0, f"{missed} of {int(inside.sum())} points are not drawn where placed"
    assert found["share"] < 0.3, f"{found['share']:.0%} of the canvas is painted: not points"
    return positions


def test_points_are_drawn_where_they_are_placed_after_a_zoom_and_a_resize(page):
    show(page, SMALL)
    page.mouse.move(5, 5)
    before = assert_drawn_where_placed(page, SMALL, N_SMALL)
    left, top, right, bottom = canvas_box(page, SMALL)
    page.mouse.move((left + right) / 2, (top + bottom) / 2)
    page.mouse.wheel(0, -300)  # zoom in around the middle
    page.mouse.move(5, 5)
    zoomed = assert_drawn_where_placed(page, SMALL, N_SMALL)
    assert np.ptp(zoomed[:, 0]) > 1.2 * np.ptp(before[:, 0]), "the wheel did not zoom in"
    width = right - left
    page.set_viewport_size({"width": 800, "height": VIEWPORT["height"]})
    try:
        page.wait_for_function("""([s, before]) => {
          const root = document.querySelector(s);
          const canvas = root.querySelector('canvas.odinlab-scatter-canvas').getBoundingClientRect().width;
          return canvas < before - 100 && canvas === root.querySelector('.odinlab-scatter-plot').clientWidth;
        }""", arg=[SMALL, width], timeout=10 * SECONDS)
        show(page, SMALL)
        assert_drawn_where_placed(page, SMALL, N_SMALL)
    finally:
        page.set_viewport_size(VIEWPORT)
    page.wait_for_function("""([s, before]) => document.querySelector(s + ' canvas.odinlab-scatter-canvas')
      .getBoundingClientRect().width === before""", arg=[SMALL, width], timeout=10 * SECONDS)
    page.click(f"{SMALL} button[data-action=reset]")
    show(page, SMALL)
    assert_drawn_where_placed(page, SMALL, N_SMALL)


# Records, from now on, the scatter's frames, its plot's widths and the gallery grid's child counts
# after each change and its changes that removed and added thumbnails at once.
WATCH_LINKED = """([s, g]) => {
  const root = document.querySelector(s);
  const plot = root.querySelector('.odinlab-scatter-plot');
  const grid = document.querySelector(g + ' .odinlab-gallery-grid');
  const seen = window.h3Linked = {drawings: 0, widths: [], counts: [], swaps: 0};
  if (!root.h3Counted) {
    root.h3Counted = true;
    root.odinlabScatterplot.subscribe('drawing', () => { window.h3Linked.drawings++; });
  }
  new ResizeObserver(() => seen.widths.push(plot.clientWidth)).observe(plot);
  new MutationObserver((records) => {
    for (const r of records) if (r.removedNodes.length && r.addedNodes.length) seen.swaps++;
    seen.counts.push(grid.children.length);
  }).observe(grid, {childList: true});
}"""


def test_a_selection_from_python_swaps_the_gallery_in_one_go_and_redraws_the_scatter_beside_it_once(page):
    lab.run_cell_text(page, "pass")  # the notebook as it will be laid out with one more cell
    show(page, LINKED)
    page.mouse.move(5, 5)  # no hover: a hovered point would be a frame of its own
    settle(page, LINKED)
    page.evaluate(WATCH_LINKED, [LINKED, GALLERY])
    chosen = len(range(0, N_STORE, 7))
    lab.run_cell_text(page, "hub.select(gids[::7].to_list()); None")
    page.wait_for_function("""([g, count]) => {
      const root = document.querySelector(g);
      const img = root.querySelector('.odinlab-thumb img');
      return root.querySelector('.odinlab-gallery-count').textContent.trim() === count
        && root.querySelector('.odinlab-gallery-grid[data-stale]') === null
        && img && img.complete && img.naturalWidth > 0;
    }""", arg=[GALLERY, f"{chosen} images"], timeout=30 * SECONDS)
    page.wait_for_selector(f"{LINKED}[data-selected='{chosen}']", timeout=10 * SECONDS)
    settle(page, LINKED)
    seen = page.evaluate("() => window.h3Linked")
    # the old thumbnails stay until the new page replaces them: never an empty grid, no width change
    assert seen["counts"] and min(seen["counts"]) > 0 and seen["swaps"] == 1, seen
    assert len(set(seen["widths"])) <= 1, f"the scatter changed width: {seen['widths']}"
    assert seen["drawings"] == 1, f"the selection cost the scatter {seen['drawings']} frames, not one"


def test_no_error_reached_the_browser_console(page):
    page.odinlab_errors.assert_none()
