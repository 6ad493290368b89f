"""The explorer in a real JupyterLab 4, driven in headless Chromium like a person would use it.

One server, one browser and one notebook for the module: the notebook opens a store on disk and
shows ``odinlab.explore(store, "cnn", layer="head.fc1", images="test", color="correct")``. Each
test selects something in one view (a box or a lasso on the scatter, a confusion cell or header,
a thumbnail, a selection made in Python) and checks the other views and Python against answers
computed here, independently of the widgets, from the explorer's frame (the same cached
embedding and stored predictions the kernel reads).
"""

import struct
from dataclasses import dataclass

import numpy as np
import pytest
from explorer_notebook import CELLS, NOTEBOOK, serve_folder

import lab

pytestmark = pytest.mark.timeout(600)

VIEWPORT = {"width": 1500, "height": 1100}
SCATTER = ".odinlab-scatter"
CANVAS = "canvas.odinlab-scatter-canvas"
GALLERY = ".odinlab-gallery"
PAGE_SIZE = 48  # the gallery's first page (GalleryView's default page_size)
SECONDS = 1000  # Playwright counts milliseconds
MARGIN_PX = 2   # a drawn box keeps this far from every point: a pixel's rounding cannot change the answer


@dataclass
class Session:
    """What the tests share: the page, its console errors, and the explorer built in this process."""

    page: object
    errors: lab.ConsoleErrors
    explorer: object

    @property
    def frame(self):
        return self.explorer.frame


@pytest.fixture(scope="module")
def session(chromium, explorer_store, tmp_path_factory):
    folder = serve_folder(explorer_store[0], tmp_path_factory.mktemp("e2e-lab"))
    with lab.JupyterServer(folder, app="lab") as server:
        page = chromium.new_page(viewport=VIEWPORT)
        try:
            errors = lab.ConsoleErrors(page)
            lab.open_and_run(page, server, NOTEBOOK, len(CELLS), timeout=240)
            page.wait_for_selector(f"{SCATTER}[data-drawn=true]", timeout=90 * SECONDS)
            yield Session(page, errors, explorer_store[1])
        finally:
            page.close()


# -- reading the page and the kernel ------------------------------------------------------------------



def gallery_state(page) -> dict:
    """The gallery as shown: its count text and the ids of its first page, in order."""
    return page.evaluate("""([selector, size]) => {
      const root = document.querySelector(selector);
      if (!root) return null;
      const thumbs = Array.from(root.querySelectorAll('.odinlab-thumb[data-image-id]'))
        .filter((t) => Number(t.dataset.index) < size);
      return {count: root.querySelector('.odinlab-gallery-count').textContent.trim(),
              ids: thumbs.map((t) => t.dataset.imageId)};
    }""", [GALLERY, PAGE_SIZE])


def first_page(session: Session, ids) -> set[str]:
    """The ids the gallery's first page must show for a selection: the hardest (highest loss) first."""
    frame = session.frame
    chosen = frame.filter(frame["image_id"].is_in(list(ids))).sort("loss", descending=True, nulls_last=True)
    return set(chosen["image_id"].head(PAGE_SIZE).to_list())


def wait_gallery(session: Session, ids, timeout: float = 30) -> dict:
    """Wait until the gallery shows exactly the selection ``ids`` (count and first page); its state."""
    expected = sorted(first_page(session, ids))
    count = f"{len(set(ids))} images"
    try:
        session.page.wait_for_function("""([selector, size, count, expected]) => {
          const root = document.querySelector(selector);
          if (!root || root.querySelector('.odinlab-gallery-count').textContent.trim() !== count) return false;
          const shown = Array.from(root.querySelectorAll('.odinlab-thumb[data-image-id]'))
            .filter((t) => Number(t.dataset.index) < size).map((t) => t.dataset.imageId).sort();
          return shown.length === expected.length && shown.every((id, i) => id === expected[i]);
        }""", arg=[GALLERY, PAGE_SIZE, count, expected], timeout=timeout * SECONDS)
    except Exception as error:
        state = gallery_state(session.page)
        raise AssertionError(f"The gallery should show {count} ({expected[:8]}...), but shows {state}") from error
    return gallery_state(session.page)


def clear_selection(session: Session) -> None:
    """Select nothing (from Python) and wait until the scatter and the gallery show every image again."""
    lab.run_cell_text(session.page, "ex.select(None)")
    session.page.wait_for_selector(f"{SCATTER}[data-selected='0']", timeout=30 * SECONDS)
    wait_gallery(session, session.frame["image_id"].to_list())


def kernel_selection(session: Session) -> set[str]:
    return set(lab.python_json(session.page, "ex.selection"))


# -- the scatter's geometry ------------------------------------------------------------------------------

def scatter_geometry(page) -> dict:
    """Where the scatter's canvas is on the page and how regl-scatterplot maps data to it.

    Waits until the canvas keeps its size for a few frames (a drag on a canvas that is still
    being resized would land on moving points).
    """
    page.evaluate("(s) => document.querySelector(s).scrollIntoView({block: 'center'})", CANVAS)
    try:
        page.wait_for_function("""(selector) => {
          const canvas = document.querySelector(selector);
          const r = canvas.getBoundingClientRect();
          const key = [r.left, r.top, r.width, r.height].join(',');
          window.__odinlabStable = window.__odinlabStable && window.__odinlabStable.key === key
            ? {key, frames: window.__odinlabStable.frames + 1} : {key, frames: 0};
          return window.__odinlabStable.frames >= 10;
        }""", arg=CANVAS, polling="raf", timeout=10 * SECONDS)
    except Exception as error:
        sizes = [page.evaluate(f"() => document.querySelector('{CANVAS}').getBoundingClientRect().width")]
        page.wait_for_timeout(500)
        sizes.append(page.evaluate(f"() => document.querySelector('{CANVAS}').getBoundingClientRect().width"))
        raise AssertionError(f"The scatter's canvas never stops resizing (its width went {sizes[0]} -> {sizes[1]} "
                             "px in 0.5 s): a ResizeObserver loop in scatter.js") from error
    return page.evaluate("""([selector, canvasSelector]) => {
      const root = document.querySelector(selector);
      const plot = root.odinlabScatterplot;
      const r = root.querySelector(canvasSelector).getBoundingClientRect();
      return {left: r.left, top: r.top, width: plot.get('width'), height: plot.get('height'),
              view: Array.from(plot.get('cameraView')), aspect: plot.get('aspectRatio')};
    }""", [SCATTER, CANVAS])


def data_points(session: Session) -> tuple[list[str], np.ndarray]:
    """The scatter's point ids and where the scatter put them (regl-scatterplot's data space).

    The positions are the embedding's x, y from this process, mapped by the one scale and shift
    that best matches the points the browser holds; the match must be exact up to float rounding
    (so the browser draws the embedding point for point, in the ids' order, with its shape kept).
    """
    ids = session.explorer.views["scatter"].ids
    frame = session.frame
    order = {image_id: i for i, image_id in enumerate(frame["image_id"].to_list())}
    rows = [order[i] for i in ids]
    ours = np.column_stack([frame["x"].to_numpy()[rows], frame["y"].to_numpy()[rows]]).astype(np.float64)
    theirs = np.array(session.page.evaluate(
        "([s, n]) => document.querySelector(s).odinlabScatterplot.get('points').slice(0, n).map((p) => [p[0], p[1]])",
        [SCATTER, len(ids)]), dtype=np.float64)
    assert theirs.shape == ours.shape, f"the browser holds {theirs.shape[0]} points, the explorer {len(ids)}"
    fits = [np.polyfit(ours[:, k], theirs[:, k], 1) for k in (0, 1)]
    mapped = np.column_stack([np.polyval(fits[k], ours[:, k]) for k in (0, 1)])
    error = np.abs(mapped - theirs).max()
    assert error < 1e-3, f"the browser's points are not the embedding's (off by up to {error:.4f} of the view)"
    assert abs(fits[0][0] / fits[1][0] - 1) < 1e-3, "the scatter stretched one axis: the embedding's shape is lost"
    return ids, mapped


def to_page(points: np.ndarray, geometry: dict) -> np.ndarray:
    """Data coordinates -> page pixels: regl-scatterplot's projection · camera view · model, then the viewport."""
    projection = np.diag([geometry["height"] / geometry["width"], 1.0, 1.0, 1.0])
    view = np.array(geometry["view"], dtype=np.float64).reshape(4, 4).T  # gl-matrix is column-major
    model = np.diag([geometry["aspect"], 1.0, 1.0, 1.0])
    homogeneous = np.column_stack([points, np.zeros(len(points)), np.ones(len(points))])
    clip = homogeneous @ (projection @ view @ model).T
    x = geometry["width"] * (clip[:, 0] + 1) / 2 + geometry["left"]
    y = geometry["height"] * (0.5 - clip[:, 1] / 2) + geometry["top"]
    return np.column_stack([x, y])


def distance_to_box(pixels: np.ndarray, box) -> np.ndarray:
    """Each point's distance to the box's outline (inside or outside)."""
    x0, y0, x1, y1 = box
    x, y = pixels[:, 0], pixels[:, 1]
    inside = (x > x0) & (x < x1) & (y > y0) & (y < y1)
    to_inner_edge = np.minimum.reduce([x - x0, x1 - x, y - y0, y1 - y])
    dx = np.maximum.reduce([x0 - x, np.zeros_like(x), x - x1])
    dy = np.maximum.reduce([y0 - y, np.zeros_like(y), y - y1])
    return np.where(inside, to_inner_edge, np.hypot(dx, dy)), inside


def choose_box(pixels: np.ndarray, geometry: dict, seed: int = 0):
    """A box inside the canvas holding 6 to 40 points, as far as possible from every point's position."""
    rng = np.random.default_rng(seed)
    left, top = geometry["left"], geometry["top"]
    width, height = geometry["width"], geometry["height"]
    best, best_margin = None, -1.0
    for _ in range(4000):
        w, h = rng.uniform(0.15, 0.45) * width, rng.uniform(0.15, 0.45) * height
        x0, y0 = left + rng.uniform(10, width - w - 10), top + rng.uniform(10, height - h - 10)
        box = tuple(float(round(v)) for v in (x0, y0, x0 + w, y0 + h))  # the mouse moves by whole pixels
        distance, inside = distance_to_box(pixels, box)
        if 6 <= inside.sum() <= 40 and distance.min() > best_margin:
            best, best_margin = box, distance.min()
    if best is None or best_margin < MARGIN_PX:
        raise AssertionError(f"No box with 6-40 points keeps {MARGIN_PX} px from every point (best {best_margin:.1f})")
    return best


def drag(page, path, steps: int = 6) -> list | None:
    """Press at the path's first point, move through the others, release at the last; returns the lasso
    polygon the scatter reported (its 'lassoEnd' coordinates, data space), None if it reported none."""
    page.evaluate("""(selector) => {
      const root = document.querySelector(selector);
      root.odinlabLastLasso = null;
      if (!root.odinlabLassoWatched) {
        root.odinlabLassoWatched = true;
        root.odinlabScatterplot.subscribe('lassoEnd', ({coordinates}) => { root.odinlabLastLasso = coordinates; });
      }
    }""", SCATTER)
    x, y = path[0]
    page.mouse.move(x - 3, y - 3)
    page.mouse.down()
    # regl-scatterplot starts a lasso or box at the first move after the press, and takes moves
    # through a 10 ms throttle: press just beside the start, move onto it, let the throttle pass
    page.mouse.move(x, y)
    page.wait_for_timeout(30)
    for point in path[1:]:
        page.mouse.move(*point, steps=steps)
    page.wait_for_timeout(60)  # and its debounce: a release right after the last move would drop the last corner
    page.mouse.up()
    try:
        page.wait_for_function(f"() => document.querySelector('{SCATTER}').odinlabLastLasso", timeout=10 * SECONDS)
    except Exception:
        return None
    return page.evaluate(f"() => document.querySelector('{SCATTER}').odinlabLastLasso")


def wait_scatter_selected(page, n: int, context: str = "", timeout: float = 30) -> None:
    try:
        page.wait_for_selector(f"{SCATTER}[data-selected='{n}']", timeout=timeout * SECONDS)
    except Exception as error:
        shown = page.evaluate(f"() => document.querySelector('{SCATTER}').dataset.selected")
        raise AssertionError(f"The scatter should show {n} points selected, but shows {shown}. {context}") from error


# -- the tests -------------------------------------------------------------------------------------------

def test_the_scatter_is_drawn_with_every_point(session):
    page = session.page
    root = page.locator(SCATTER)
    assert root.get_attribute("data-drawn") == "true"
    assert int(root.get_attribute("data-points")) == session.frame.height
    page.evaluate("(s) => document.querySelector(s).scrollIntoView({block: 'center'})", CANVAS)
    lit = lab.lit_pixels(page, CANVAS)
    assert lit > 500, f"the scatter's canvas has only {lit} drawn pixels"


def test_the_scatter_keeps_its_size_in_the_explorer(session):
    geometry = scatter_geometry(session.page)  # fails if the canvas keeps resizing itself
    assert 100 < geometry["width"] < VIEWPORT["width"] and 100 < geometry["height"] < VIEWPORT["height"]


def test_the_scatter_holds_the_embedding_point_for_point(session):
    ids, points = data_points(session)  # asserts the match
    assert len(ids) == session.frame.height and np.abs(points).max() <= 1.0


def test_the_kernel_reads_the_same_points_as_this_process(session):
    # the expected answers below come from this process's explorer: the kernel must hold the same embedding
    theirs = lab.python_json(session.page, "[ex.frame['image_id'].to_list(), ex.frame['x'].round(5).to_list()]")
    assert theirs == [session.frame["image_id"].to_list(), session.frame["x"].round(5).to_list()]


def box_select(session: Session, seed: int = 0) -> set[str]:
    """Draw a box on the scatter (in box mode) and return the ids of the points inside, computed here."""
    page = session.page
    clear_selection(session)
    page.click(f"{SCATTER} button[data-action=box]")
    page.wait_for_selector(f"{SCATTER}[data-mode=box]")
    geometry = scatter_geometry(page)
    ids, points = data_points(session)
    pixels = to_page(points, geometry)
    x0, y0, x1, y1 = choose_box(pixels, geometry, seed=seed)
    _, inside = distance_to_box(pixels, (x0, y0, x1, y1))
    expected = {ids[i] for i in np.flatnonzero(inside)}
    drawn = drag(page, [(x0, y0), (x1, y1)])
    wait_scatter_selected(page, len(expected), f"the box {(x0, y0, x1, y1)} reached the scatter as {drawn}")
    return expected


def test_a_box_selection_fills_the_gallery_with_the_points_inside(session):
    page = session.page
    expected = box_select(session)
    state = wait_gallery(session, expected)
    assert state["count"] == f"{len(expected)} images"
    assert kernel_selection(session) == expected
    losses = dict(zip(session.frame["image_id"], session.frame["loss"]))
    shown = [losses[i] for i in state["ids"]]
    assert shown == sorted(shown, reverse=True), "the gallery shows the hardest images first"
    page.click(f"{SCATTER} button[data-action=panZoom]")


def point_in_polygon(pixels: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule, one row per point."""
    x, y = pixels[:, 0:1], pixels[:, 1:2]
    ax, ay = polygon[:, 0], polygon[:, 1]
    bx, by = np.roll(ax, -1), np.roll(ay, -1)
    crosses = ((ay > y) != (by > y)) & (x < (bx - ax) * (y - ay) / np.where(by == ay, 1e-12, by - ay) + ax)
    return crosses.sum(axis=1) % 2 == 1


def distance_to_polygon(pixels: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    a, b = polygon, np.roll(polygon, -1, axis=0)
    ab = b - a
    t = np.clip(((pixels[:, None, :] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    nearest = a + t[..., None] * ab
    return np.linalg.norm(pixels[:, None, :] - nearest, axis=-1).min(axis=1)


def lasso_select(session: Session):
    """Draw a hexagon lasso around the middle of the scatter; return the kernel's selection, the ids surely
    inside and surely outside it (more than 8 px from its edge), and what the page drew."""
    page = session.page
    clear_selection(session)
    page.click(f"{SCATTER} button[data-action=lasso]")
    page.wait_for_selector(f"{SCATTER}[data-mode=lasso]")
    geometry = scatter_geometry(page)
    ids, points = data_points(session)
    pixels = to_page(points, geometry)
    # a hexagon around the densest place of the middle of the canvas
    centre = np.array([geometry["left"] + geometry["width"] / 2, geometry["top"] + geometry["height"] / 2])
    radius = 0.3 * min(geometry["width"], geometry["height"])
    angles = np.linspace(0, 2 * np.pi, 7)[:-1]
    hexagon = centre + radius * np.column_stack([np.cos(angles), np.sin(angles)])
    inside = point_in_polygon(pixels, hexagon)
    distance = distance_to_polygon(pixels, hexagon)
    surely_in = {ids[i] for i in np.flatnonzero(inside & (distance > 8))}
    surely_out = {ids[i] for i in np.flatnonzero(~inside & (distance > 8))}
    assert surely_in, "the lasso's hexagon holds no point: choose another place"

    # released at the last corner, not back at the first: a release where the press was is a click, which
    # selects the nearest point instead (regl-scatterplot); the lasso closes itself
    drawn = drag(page, [tuple(p) for p in hexagon])
    page.wait_for_function(f"() => Number(document.querySelector('{SCATTER}').dataset.selected) > 0",
                           timeout=30 * SECONDS)
    return kernel_selection(session), surely_in, surely_out, (hexagon, drawn)


def test_a_lasso_selection_selects_the_points_inside_and_the_gallery_follows(session):
    page = session.page
    selected, surely_in, surely_out, (hexagon, drawn) = lasso_select(session)
    assert surely_in <= selected, (f"the lasso missed {sorted(surely_in - selected)[:5]}; the hexagon "
                                   f"{hexagon.round(1).tolist()} reached the scatter as {drawn}")
    assert not (selected & surely_out), f"the lasso took points outside it: {sorted(selected & surely_out)[:5]}"
    assert int(page.locator(SCATTER).get_attribute("data-selected")) == len(selected)
    wait_gallery(session, selected)
    page.click(f"{SCATTER} button[data-action=panZoom]")


def test_the_explain_tab_explains_a_lasso_selection_with_the_kernel_s_numbers(session, artifacts):
    page = session.page
    expected, surely_in, _, _ = lasso_select(session)
    assert surely_in <= expected
    page.click(f"{SCATTER} button[data-action=panZoom]")
    # the network in this kernel: attribution maps and maximizations need it (without, a note says so)
    lab.run_cell_text(page, "from odinlab.nets import SmallCNN\n_ = store.load_weights(SmallCNN(1, 10, width=4), 'cnn@1')")
    page.get_by_role("tab", name="Explain selection").click()
    run = page.locator(".odinlab-explain button.odinlab-explain-run")
    run.wait_for(state="visible", timeout=30 * SECONDS)
    run.click()
    page.wait_for_selector(".odinlab-explain-result table", timeout=120 * SECONDS)
    explained = lab.python_json(page, "[sorted(ex.views['explain'].ids), int(ex.views['explain']"
                                      ".explanation.summary['n'][0])]")
    assert set(explained[0]) == expected and explained[1] == len(expected)
    shown = page.locator(".odinlab-explain-result").inner_text()
    assert f"Explanation of {len(expected)} images" in shown and "that separate it" in shown
    assert page.locator(".odinlab-explain-result img").count() >= 2 + 3  # two mean maps, three maximizations
    assert "No attribution maps" not in shown
    tabs = page.locator(".odinlab-explorer-tabs").first
    tabs.scroll_into_view_if_needed()
    tabs.screenshot(path=str(artifacts / "explain_view.png"), animations="disabled", timeout=30 * SECONDS)


def off_diagonal_cell(session: Session) -> tuple[int, int, set[str]]:
    """The mistakes' cell (true label, predicted) with the most images that still fit one gallery page."""
    frame = session.frame
    counts = frame.filter(frame["label"] != frame["predicted"]).group_by("label", "predicted").len()
    counts = counts.filter(counts["len"] <= PAGE_SIZE).sort(["len", "label", "predicted"], descending=True)
    label, predicted, _ = counts.row(0)
    members = frame.filter((frame["label"] == label) & (frame["predicted"] == predicted))
    return int(label), int(predicted), set(members["image_id"].to_list())


def test_a_confusion_cell_click_shows_exactly_its_images(session):
    page = session.page
    clear_selection(session)
    label, predicted, expected = off_diagonal_cell(session)
    cell = page.locator(f"td.odinlab-cell[data-label='{label}'][data-predicted='{predicted}']")
    assert int(cell.get_attribute("data-count")) == len(expected)
    cell.click()
    wait_gallery(session, expected)
    wait_scatter_selected(page, len(expected))
    assert kernel_selection(session) == expected


def test_a_row_header_click_selects_the_whole_class(session):
    page = session.page
    clear_selection(session)
    frame = session.frame
    expected = set(frame.filter(frame["label"] == 3)["image_id"].to_list())
    page.locator("th.odinlab-row-header[data-label='3']").click()
    wait_gallery(session, expected)
    wait_scatter_selected(page, len(expected))
    assert kernel_selection(session) == expected


def test_a_column_header_click_selects_every_image_predicted_as_that_class(session):
    page = session.page
    clear_selection(session)
    frame = session.frame
    counts = frame.group_by("predicted").len()
    counts = counts.filter(counts["len"] <= PAGE_SIZE).sort(["len", "predicted"], descending=True)
    predicted = int(counts["predicted"][0])  # the largest predicted class that fits one gallery page
    expected = set(frame.filter(frame["predicted"] == predicted)["image_id"].to_list())
    page.locator(f"th.odinlab-col-header[data-predicted='{predicted}']").click()
    wait_gallery(session, expected)
    wait_scatter_selected(page, len(expected))
    assert kernel_selection(session) == expected


def test_a_thumbnail_click_opens_its_detail(session):
    page = session.page
    clear_selection(session)
    thumb = page.locator(f"{GALLERY} .odinlab-thumb[data-index='2']")
    image_id = thumb.get_attribute("data-image-id")
    thumb.click()
    page.wait_for_selector(f".odinlab-detail[data-image-id='{image_id}'] img.odinlab-detail-image",
                           timeout=30 * SECONDS)
    title = page.locator(".odinlab-detail-title").text_content()
    assert image_id in title
    assert lab.python_json(page, "ex.views['detail'].image_id") == image_id


def test_a_selection_made_in_python_shows_in_the_browser(session):
    page = session.page
    clear_selection(session)
    frame = session.frame
    expected = set(frame.filter(frame["label"] == 3)["image_id"].to_list())
    assert lab.run_cell_text(page, 'ex.select("label = 3"); print(len(ex.selection))') == str(len(expected))
    wait_scatter_selected(page, len(expected))
    wait_gallery(session, expected)
    page.wait_for_selector(f".odinlab-explorer-count[data-selected='{len(expected)}']", timeout=30 * SECONDS)


def test_bad_input_shows_its_message_and_fix_in_the_notebook(session):
    page = session.page
    before = page.locator(".odinlab-explorer-message").count()
    lab.run_cell_text(page, "from IPython.display import display\n"
                      "for bad in (dict(layer='head.fc3'), dict(images='train'), dict(images='SELECT image_id FROM images WHERE label = 99')):\n"
                      "    display(odinlab.explore(store, 'cnn', progress=False, **bad))")
    page.wait_for_function("(n) => document.querySelectorAll('.odinlab-explorer-message').length >= n",
                           arg=before + 3, timeout=30 * SECONDS)
    texts = page.locator(".odinlab-explorer-message").all_inner_texts()[before:]
    unknown_layer, no_predictions, empty = texts
    assert "Unknown layer 'head.fc3'" in unknown_layer and "head.fc1" in unknown_layer  # the close name
    assert "no stored predictions" in no_predictions
    assert "store.materialize('cnn@1', ['head.fc1'], images='train')" in no_predictions
    assert "is empty" in empty and "label = 99" in empty and "Splits in the store: test, train, val" in empty


VIEWS_TO_SHOOT = {"explorer": ".odinlab-explorer", "scatter": SCATTER, "gallery": GALLERY,
                  "confusion": ".odinlab-confusion", "detail": ".odinlab-detail",
                  "clusters": ".odinlab-explorer-clusters", "pairs": ".odinlab-explorer-pairs"}


def test_screenshots_of_every_view_are_saved(session, artifacts):
    page = session.page
    page.locator(f"{GALLERY} .odinlab-thumb[data-index='0']").click()  # the detail shows an image
    page.wait_for_selector(".odinlab-detail img.odinlab-detail-image", timeout=30 * SECONDS)
    # a window tall enough for the whole explorer: a screenshot shows only what is on screen
    height = page.evaluate("() => document.querySelector('.odinlab-explorer').getBoundingClientRect().height")
    tall = int(min(max(VIEWPORT["height"], height + 300), 4000))
    page.set_viewport_size({"width": VIEWPORT["width"], "height": tall})
    try:
        page.wait_for_function(f"() => document.querySelector('{SCATTER}').dataset.drawn === 'true'")
        for name, selector in VIEWS_TO_SHOOT.items():
            path = artifacts / f"{name}.png"
            path.unlink(missing_ok=True)
            page.evaluate("(s) => document.querySelector(s).scrollIntoView({block: 'start'})", selector)
            box = page.locator(selector).first.bounding_box()
            # a clip of the page, not an element screenshot: that one waits for the element to hold still,
            # and a picture of a view that does not is what someone debugging it needs most
            page.screenshot(path=str(path), clip=box, animations="disabled", timeout=30 * SECONDS)
    finally:
        page.set_viewport_size(VIEWPORT)
    for name in VIEWS_TO_SHOOT:
        data = (artifacts / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{name}.png is not a PNG"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 100 and height >= 100, f"{name}.png is only {width}x{height}"
        assert len(data) > 4000, f"{name}.png holds almost nothing ({len(data)} bytes)"


def test_no_error_reached_the_browser_console(session):
    session.errors.assert_none()
