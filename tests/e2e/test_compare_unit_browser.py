"""The model comparison view and the unit view in a real JupyterLab 4, in headless Chromium.

One server, one browser and one notebook for the module. The notebook opens a store on disk with two
versions of a digits CNN (v2 = v1 with its conv layers frozen and the head trained on), shows
``CompareView(store, "cnn@1", "cnn@2", "test", layer="head.fc1")`` and
``UnitView(store, "cnn@1", "features.relu2", unit, "test")``, each recording what it selects.
The tests check what each view draws (its DOM against the debug functions run here on the same
store, and its pixels in screenshots), click a disagreement card, the attribution button, the
"maximize" and "select top images" buttons, and read back what the kernel saw.
"""

import io
from pathlib import Path

import numpy as np
import pytest

import lab

pytestmark = pytest.mark.timeout(600)

VIEWPORT = {"width": 1400, "height": 1100}
SECONDS = 1000  # Playwright counts milliseconds
NOTEBOOK = "compare_units.ipynb"
LAYERS = ["features.relu2", "head.fc1"]
UNIT_LAYER = "features.relu2"
COMPARE, UNIT = ".odinlab-compare", ".odinlab-unit"


def cells(unit: int) -> list[str]:
    return [
        "import json\nimport odinlab\nfrom odinlab.nets import SmallCNN\nstore = odinlab.open_store('store')\n"
        "for version in ('cnn@1', 'cnn@2'):  # attributions and the maximization need the networks\n"
        "    _ = store.load_weights(SmallCNN(1, 10, width=8), version)",
        "from odinlab.widgets.compare_view import CompareView\n"
        "cv = CompareView(store, 'cnn@1', 'cnn@2', 'test', layer='head.fc1', attribution_method='saliency')\n"
        "picked = []\ncv.on_select(picked.append)\ncv",
        "from odinlab.widgets.unit_view import UnitView\n"
        f"uv = UnitView(store, 'cnn@1', {UNIT_LAYER!r}, {unit}, 'test', k=6, steps=64)\n"
        "unit_picked = []\nuv.on_select(unit_picked.append)\nuv",
    ]


@pytest.fixture(scope="module")
def session(chromium, tmp_path_factory, two_versions):
    """(page, console errors, expected values computed in this process from the same store)."""
    from odinlab.debug import compare, units

    folder = tmp_path_factory.mktemp("e2e-compare-units")
    store = two_versions(folder / "store", LAYERS)  # on disk: the notebook's kernel opens it
    values = units.unit_activations(store, "cnn@1", UNIT_LAYER, "test").values
    unit = int(np.argmax(values.std(axis=0)))  # a live unit: it has top images
    expected = {
        "agreement": compare.agreement(store, "cnn@1", "cnn@2", "test").row(0, named=True),
        "disagreements": compare.disagreements(store, "cnn@1", "cnn@2", "test"),
        "unit": unit,
        "top": units.top_images(store, "cnn@1", UNIT_LAYER, "test", unit=unit, k=6)["image_id"].to_list(),
        "low": units.top_images(store, "cnn@1", UNIT_LAYER, "test", unit=unit, k=6, lowest=True)["image_id"].to_list(),
    }
    store.close()
    notebook = cells(unit)
    lab.write_notebook(folder / NOTEBOOK, notebook)
    with lab.JupyterServer(folder, app="lab") as server:
        page = chromium.new_page(viewport=VIEWPORT)
        try:
            errors = lab.ConsoleErrors(page)
            lab.open_and_run(page, server, NOTEBOOK, len(notebook), timeout=240)
            page.wait_for_selector(f"{COMPARE} .odinlab-compare-card", timeout=90 * SECONDS)
            page.wait_for_selector(f"{UNIT} .odinlab-unit-thumb", timeout=90 * SECONDS)
            yield page, errors, expected
        finally:
            page.close()


# -- reading the page ---------------------------------------------------------------------------------

def wait_images(page, selector: str, n: int, timeout: float = 30) -> None:
    """Wait until exactly ``n`` images match ``selector``, each loaded and not empty."""
    page.wait_for_function("""([selector, n]) => {
      const imgs = Array.from(document.querySelectorAll(selector));
      return imgs.length === n && imgs.every((i) => i.complete && i.naturalWidth > 0);
    }""", arg=[selector, n], timeout=timeout * SECONDS)


def shot(page, selector: str, path: Path | None = None) -> np.ndarray:
    """A screenshot of what ``selector``'s first element covers, as an (H, W, 3) array (saved to ``path``)."""
    from PIL import Image

    page.evaluate("(s) => document.querySelector(s).scrollIntoView({block: 'start'})", selector)
    box = page.locator(selector).first.bounding_box()
    data = page.screenshot(clip=box, animations="disabled", timeout=30 * SECONDS)
    if path is not None:
        path.unlink(missing_ok=True)
        path.write_bytes(data)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def attribute_of_all(page, selector: str, name: str) -> list[str]:
    """``data-<name>`` of every element matching ``selector``, in page order."""
    return page.eval_on_selector_all(selector, "(nodes, name) => nodes.map((n) => n.dataset[name])", name)


def near(pixels: np.ndarray, color: str, tolerance: int = 12) -> int:
    """How many pixels are within ``tolerance`` of ``color`` ("#rrggbb") in each channel."""
    rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - rgb).max(axis=2) <= tolerance).sum())


# -- the comparison view --------------------------------------------------------------------------------

def test_the_comparison_view_shows_the_debug_functions_numbers(session):
    page, _, expected = session
    summary = page.locator(f"{COMPARE} .odinlab-compare-summary")
    assert float(summary.get_attribute("data-agreement")) == pytest.approx(expected["agreement"]["agreement"])
    assert float(summary.get_attribute("data-mcnemar-p")) == pytest.approx(expected["agreement"]["mcnemar_p"])
    assert page.locator(f"{COMPARE} rect.odinlab-delta-bar").count() == 10
    assert page.locator(f"{COMPARE} rect.odinlab-cka-cell").count() == len(LAYERS) ** 2
    assert page.locator(f"{COMPARE} rect.odinlab-move-bar").count() > 0
    frame = expected["disagreements"]
    ids = attribute_of_all(page, f"{COMPARE} .odinlab-compare-card", "imageId")
    assert sorted(ids) == sorted(frame["image_id"].to_list())
    rights = attribute_of_all(page, f"{COMPARE} .odinlab-compare-card", "right")
    assert dict(zip(ids, rights, strict=True)) == dict(zip(frame["image_id"], frame["right"], strict=True))


def test_the_comparison_view_draws_its_charts_and_thumbnails(session):
    page, _, expected = session
    wait_images(page, f"{COMPARE} img.odinlab-compare-img", expected["disagreements"].height)
    bars = shot(page, f"{COMPARE} .odinlab-delta-chart")
    assert near(bars, "#2ca02c") + near(bars, "#d62728") > 200, "the class-delta bars are not drawn"
    cka = shot(page, f"{COMPARE} .odinlab-cka-map")
    assert (np.abs(cka - 255).max(axis=2) > 60).sum() > 4 * 400, "the CKA heat-map is not drawn"
    card = shot(page, f"{COMPARE} .odinlab-compare-img")
    assert card.std() > 20, "the first card's thumbnail is blank"


def test_a_click_on_a_disagreement_card_selects_it_in_the_kernel(session):
    page, _, _ = session
    card = page.locator(f"{COMPARE} .odinlab-compare-card[data-index='3']")
    image_id = card.get_attribute("data-image-id")
    card.click()
    page.wait_for_selector(f"{COMPARE} .odinlab-compare-card[data-index='3'].selected", timeout=10 * SECONDS)
    assert lab.python_json(page, "picked[-1]") == [image_id]
    assert lab.python_json(page, "cv.selected_ids") == [image_id]


def test_the_attribution_button_computes_and_shows_the_agreement(session):
    page, _, expected = session
    page.locator(f"{COMPARE} button.odinlab-compare-attribution-button").click()
    page.wait_for_selector(f"{COMPARE} .odinlab-compare-attribution:is([data-state='done'], [data-state='error'])",
                           timeout=60 * SECONDS)
    assert lab.python_json(page, "cv.attribution['state']") == "done", lab.python_json(page, "cv.attribution")
    assert lab.python_json(page, "cv.attribution_frame.height") == expected["disagreements"].height
    assert "ρ" in page.locator(f"{COMPARE} .odinlab-compare-card[data-index='0'] .odinlab-compare-extra").inner_text()


def test_screenshot_of_the_comparison_view(session, artifacts):
    page, _, _ = session
    pixels = shot(page, COMPARE, artifacts / "compare_view.png")
    assert pixels.shape[0] > 300 and pixels.shape[1] > 600


# -- the unit view -------------------------------------------------------------------------------------

def test_the_unit_view_shows_its_top_and_least_activating_images(session):
    page, _, expected = session
    assert page.locator(UNIT).get_attribute("data-unit") == str(expected["unit"])
    top = attribute_of_all(page, f"{UNIT} .odinlab-unit-thumb[data-kind='top']", "imageId")
    low = attribute_of_all(page, f"{UNIT} .odinlab-unit-thumb[data-kind='low']", "imageId")
    assert top == expected["top"] and low == expected["low"]
    wait_images(page, f"{UNIT} img.odinlab-unit-img", len(top) + len(low))
    assert page.locator(f"{UNIT} .odinlab-unit-score[data-by='label']").count() == 3


def test_the_maximize_button_draws_the_optimized_image(session):
    page, _, _ = session
    page.locator(f"{UNIT} button.odinlab-unit-maximize").click()
    wait_images(page, f"{UNIT} img.odinlab-unit-maximized", 1, timeout=60)
    picture = shot(page, f"{UNIT} img.odinlab-unit-maximized")
    assert picture.std() > 10, "the optimized image is blank"
    assert lab.python_json(page, "uv.max_status") == ""


def test_the_select_button_selects_the_top_images_in_the_kernel(session):
    page, _, expected = session
    page.locator(f"{UNIT} button.odinlab-unit-select").click()
    page.wait_for_selector(f"{UNIT}[data-selected='true']", timeout=10 * SECONDS)
    assert lab.python_json(page, "unit_picked[-1]") == expected["top"]
    assert lab.python_json(page, "uv.selected_ids") == expected["top"]


def test_screenshot_of_the_unit_view(session, artifacts):
    page, _, _ = session
    pixels = shot(page, UNIT, artifacts / "unit_view.png")
    assert pixels.shape[0] > 150 and pixels.shape[1] > 600


def test_no_error_reached_the_browser_console(session):
    session[1].assert_none()
