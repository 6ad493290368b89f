"""The attribution viewer in a real JupyterLab 4, inside the explorer, driven in headless Chromium.

The notebook opens a copy of the e2e store, shows that a model without a module in this kernel gets
the exact ``store.load_weights`` call in its column, loads the weights, trains a second small model,
and shows the explorer with an attribution view of both models × saliency and integrated gradients.
Four images selected in Python fill the view; the drawn canvases are compared pixel by pixel with
``odinlab.draw.images.overlay`` of the maps the kernel holds; the opacity slider then changes the pixels
with no message to or from the kernel (its websocket frames are counted).
"""

import struct

import numpy as np
import pytest
from explorer_notebook import serve_folder

import lab

pytestmark = pytest.mark.timeout(600)

NOTEBOOK = "attribution.ipynb"
VIEWPORT = {"width": 1500, "height": 1100}
SECONDS = 1000
VIEW = ".odinlab-explorer-attribution .odinlab-attribution"
MODELS = ["cnn@1", "small@1"]
METHODS = ["saliency", "integrated_gradients"]
SIZE = 96
CELLS = [
    "import json, torch\nimport odinlab\nfrom odinlab.nets import SmallCNN\nfrom odinlab.training import fit\n"
    "from odinlab.draw.images import overlay\nfrom odinlab.widgets.attribution_view import AttributionView\n"
    "store = odinlab.open_store('store')\ntest_ids = store.select('test').ids",
    # a new kernel holds no module for cnn@1: its column says how to load one
    "no_module = AttributionView(store, 'cnn@1', test_ids[:2])\nno_module",
    "store.load_weights(SmallCNN(1, 10, width=4), 'cnn@1')\ntorch.manual_seed(1)\n"
    "small = SmallCNN(1, 10, width=4)\nfit(small, store, 'train', epochs=1, progress=False)\n"
    "store.register_model(small, 'small')",
    f"views = {{'attribution': lambda ex: AttributionView(ex.store, [ex.model_id, 'small@1'], methods={METHODS!r}, "
    f"size={SIZE}, thumbnails=ex.thumbnails({SIZE})), 'clusters': None, 'pairs': None}}\n"
    "ex = odinlab.explore(store, 'cnn', layer='head.fc1', images='test', views=views, progress=False)\nex",
]


class KernelFrames:
    """Counts the frames of the page's kernel websockets, both ways."""

    def __init__(self, page):
        self.count = 0
        page.on("websocket", self._on_socket)

    def _on_socket(self, socket) -> None:
        if "/api/kernels/" in socket.url:
            socket.on("framesent", self._frame)
            socket.on("framereceived", self._frame)

    def _frame(self, payload) -> None:
        self.count += 1


@pytest.fixture(scope="module")
def session(chromium, explorer_store, tmp_path_factory):
    folder = serve_folder(explorer_store[0], tmp_path_factory.mktemp("e2e-attribution"))
    lab.write_notebook(folder / NOTEBOOK, CELLS)
    with lab.JupyterServer(folder, app="lab") as server:
        page = chromium.new_page(viewport=VIEWPORT)
        try:
            errors = lab.ConsoleErrors(page)
            frames = KernelFrames(page)
            lab.open_and_run(page, server, NOTEBOOK, len(CELLS), timeout=300)
            page.get_by_role("tab", name="Attributions").click()  # the explorer keeps its debugging views in tabs
            page.wait_for_selector(f"{VIEW}[data-state=message]", timeout=60 * SECONDS)
            yield page, errors, frames
        finally:
            page.close()


def cell_pixels(page, image_id: str, column: int | None) -> np.ndarray:
    """The colour at the centre of each image pixel of a drawn cell (column None: the plain image)."""
    canvas = (f"{VIEW} tr[data-image-id='{image_id}'] " +
              ("canvas.odinlab-attr-image" if column is None else f"td[data-column='{column}'] canvas"))
    data = page.evaluate("""([selector, n]) => {
      const canvas = document.querySelector(selector);
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      const step = canvas.width / n, out = [];
      for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
        const k = 4 * (Math.floor((y + 0.5) * step) * canvas.width + Math.floor((x + 0.5) * step));
        out.push([data[k], data[k + 1], data[k + 2]]);
      }
      return out;
    }""", [canvas, 8])
    return np.asarray(data, np.float64).reshape(8, 8, 3)


def expected_overlays(page, ids) -> dict:
    """{(image_id, column): overlay at opacity a, as a function of a}: from the kernel's pixels and the
    maps its attributors hold (read from the store's cache), blended here by odinlab.draw.images.overlay."""
    from odinlab.draw.images import overlay

    answer = lab.python_json(page, (
        "{'pixels': store.pixels(%r).tolist(), 'maps': [ex.views['attribution'].attributor(c['model_id'], "
        "c['method']).attribute(%r, progress=False).values.tolist() for c in ex.views['attribution'].columns]}"
    ) % (ids, ids))
    pixels = np.asarray(answer["pixels"], np.uint8)
    return {(image_id, j): (lambda a, p=pixels[i], m=np.asarray(maps[i]): overlay(p, m, alpha=a))
            for j, maps in enumerate(answer["maps"]) for i, image_id in enumerate(ids)}


def set_opacity(page, key: str | None = None, at: float | None = None) -> float:
    """Move the slider with a key (End, Home) or a click at a fraction of its width; its new value."""
    slider = page.locator(f"{VIEW} input.odinlab-attr-opacity")
    if key is not None:
        slider.focus()
        slider.press(key)
    else:
        box = slider.bounding_box()
        slider.click(position={"x": at * box["width"], "y": box["height"] / 2})
    return float(slider.input_value())


def assert_drawn(page, expected, ids, opacity: float) -> None:
    for image_id in ids:
        for j in range(len(MODELS) * len(METHODS)):
            got, want = cell_pixels(page, image_id, j), expected[(image_id, j)](opacity)
            assert np.abs(got - want).max() <= 3, \
                f"{image_id} column {j} at opacity {opacity}: off by {np.abs(got - want).max()}"


def test_a_model_without_a_module_names_the_load_weights_call(session):
    page = session[0]
    error = page.locator(".odinlab-attribution th .odinlab-attr-error").first.inner_text()
    assert "No module for cnn@1 in this session" in error and "store.load_weights(MyNet(), 'cnn@1')" in error


def test_nothing_selected_says_how_to_select(session):
    page = session[0]
    assert "No images selected" in page.locator(f"{VIEW} .odinlab-message").inner_text()


def test_four_selected_images_draw_two_models_by_two_methods(session, explorer_store):
    page = session[0]
    ids = explorer_store[1].frame["image_id"].to_list()[:4]
    lab.run_cell_text(page, f"ex.select({ids!r})")
    page.wait_for_selector(f"{VIEW}[data-state=done]", timeout=120 * SECONDS)
    rows = page.locator(f"{VIEW} tr.odinlab-attr-row").evaluate_all("(rows) => rows.map((r) => r.dataset.imageId)")
    assert rows == ids
    heads = page.locator(f"{VIEW} th.odinlab-attr-col").evaluate_all(
        "(ths) => ths.map((th) => [th.dataset.modelId, th.dataset.method, Number(th.dataset.ms)])")
    assert [(m, k) for m, k, _ in heads] == [(m, k) for m in MODELS for k in METHODS]
    assert page.locator(f"{VIEW} .odinlab-attr-error").count() == 0
    assert page.locator(f"{VIEW} td.odinlab-attr-cell[data-drawn=true]").count() == 16
    progress = page.locator(f"{VIEW} progress.odinlab-attr-progress")
    assert progress.evaluate("(p) => p.value === p.max && p.max === 4")
    busy = page.locator(VIEW).evaluate("(v) => [Number(v.dataset.busyMs), Number(v.dataset.totalMs)]")
    print(f"kernel busy for the page: {busy[1]} ms in all, longest request {busy[0]} ms; per column {heads}")
    assert busy[0] < 5000  # one column of one page at a time: never a long block of the kernel


def test_the_overlays_are_overlay_and_the_slider_needs_no_kernel(session, explorer_store):
    page, _, frames = session
    ids = explorer_store[1].frame["image_id"].to_list()[:4]
    page.wait_for_selector(f"{VIEW}[data-state=done]", timeout=120 * SECONDS)
    expected = expected_overlays(page, ids)
    assert_drawn(page, expected, ids, 0.6)  # the first opacity
    plain = cell_pixels(page, ids[0], None)
    lit = [int((np.abs(cell_pixels(page, ids[0], j) - plain).max(axis=-1) > 8).sum()) for j in range(4)]
    assert min(lit) >= 4, f"the heat maps barely show: {lit} of 64 pixels differ from the image"

    page.wait_for_timeout(1000)  # let any message in flight arrive before counting
    before = frames.count
    before_pixels = cell_pixels(page, ids[0], 0)
    assert set_opacity(page, "End") == 1.0
    assert_drawn(page, expected, ids, 1.0)
    assert np.abs(cell_pixels(page, ids[0], 0) - before_pixels).max() > 8  # the pixels changed
    value = set_opacity(page, at=0.3)
    assert 0.1 < value < 0.5
    assert_drawn(page, expected, ids, value)
    assert set_opacity(page, "Home") == 0.0
    assert all(np.abs(cell_pixels(page, i, j) - cell_pixels(page, i, None)).max() <= 1 for i in ids for j in range(4))
    page.wait_for_timeout(1000)  # a message the slider sent would have gone by now
    assert frames.count == before, f"moving the slider exchanged {frames.count - before} kernel messages"
    set_opacity(page, at=0.6)  # about the first opacity again, for the screenshot


def test_a_click_selects_the_image_in_the_explorer(session, explorer_store):
    page = session[0]
    image_id = explorer_store[1].frame["image_id"].to_list()[2]
    page.locator(f"{VIEW} tr[data-image-id='{image_id}'] td.odinlab-attr-imagecell").click()
    page.wait_for_selector(f"{VIEW} tr.selected[data-image-id='{image_id}']", timeout=30 * SECONDS)
    assert lab.python_json(page, "ex.selection") == [image_id]


def test_screenshot_of_the_view(session, artifacts):
    page = session[0]
    path = artifacts / "attribution_view.png"
    path.unlink(missing_ok=True)
    page.evaluate("(s) => document.querySelector(s).scrollIntoView({block: 'start'})", VIEW)
    box = page.locator(VIEW).bounding_box()
    page.screenshot(path=str(path), clip=box, animations="disabled", timeout=30 * SECONDS)
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and width >= 300 and height >= 300 and len(data) > 10_000


def test_an_unknown_method_is_shown_in_its_column_and_the_pager_turns(session):
    page = session[0]
    lab.run_cell_text(page, "display(AttributionView(store, 'cnn@1', test_ids[:3], methods=['saliency', "
                      "'no_such_method'], page_size=2))")
    view = page.locator(".odinlab-attribution").last
    view.locator("td.odinlab-attr-cell[data-column='0'][data-drawn=true]").nth(1).wait_for(timeout=60 * SECONDS)
    error = view.locator("th[data-column='1'] .odinlab-attr-error").inner_text()
    assert "Unknown attribution method 'no_such_method'" in error
    view.locator(".odinlab-attr-pager button[data-step='1']").click()
    view.locator("tr.odinlab-attr-row[data-index='2'] td[data-column='0'][data-drawn=true]").wait_for(
        timeout=60 * SECONDS)
    assert view.locator("tr.odinlab-attr-row").count() == 1


def test_no_error_reached_the_browser_console(session):
    session[1].assert_none()
