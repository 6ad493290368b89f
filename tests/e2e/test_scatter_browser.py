"""The embedding scatter alone in a real JupyterLab 4, in headless Chromium: hover images, overlays,
its size in a grid, and how fast a box selection of 100,000 points reaches the kernel.

One server, one browser and one notebook for the module. The notebook shows two scatters: 300
random points inside a CSS grid (a hover provider that draws a PNG, or raises for ids ending in 7;
an overlay of three marks on its three outermost points and an overlay of a 3x3 grid of marks over
the cloud's middle), and 100,000 random points that record in the kernel when a selection arrives.
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
N_SMALL = 300
N_BIG = 100_000
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
]


@pytest.fixture(scope="module")
def page(chromium, tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e-scatter")
    lab.write_notebook(folder / NOTEBOOK, CELLS)
    with lab.JupyterServer(folder, app="lab") as server:
        page = chromium.new_page(viewport=VIEWPORT)
        try:
            page.odinlab_errors = lab.ConsoleErrors(page)
            lab.open_and_run(page, server, NOTEBOOK, len(CELLS), timeout=120)
            for root in (SMALL, BIG):
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


def test_no_error_reached_the_browser_console(page):
    page.odinlab_errors.assert_none()
