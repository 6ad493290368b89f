"""The same explorer notebook opened in Notebook 7 (``python -m notebook``): it renders and draws.

JupyterLab is tested in depth by test_explorer_browser.py; Notebook 7 loads widgets through its own
page (``/notebooks/NAME.ipynb``), so this checks that the explorer renders there too, that the
scatter draws its points, and that no error reaches the console.
"""

import pytest
from explorer_notebook import CELLS, NOTEBOOK, serve_folder

import lab

pytestmark = pytest.mark.timeout(600)

VIEWPORT = {"width": 1500, "height": 1100}
SECONDS = 1000
# Notebook 7.6's own startup error (its keyboard-shortcuts plugin reads a setting schema that is not
# loaded yet): it is thrown by notebook_core with a plain notebook of print(1) and no widget at all.
NOTEBOOK7_OWN_ERRORS = [("Cannot read properties of undefined (reading 'schema')", "notebook_core")]


def test_the_explorer_renders_and_draws_in_notebook_7(chromium, explorer_store, tmp_path_factory, artifacts):
    folder = serve_folder(explorer_store[0], tmp_path_factory.mktemp("e2e-notebook7"))
    with lab.JupyterServer(folder, app="notebook") as server:
        page = chromium.new_page(viewport=VIEWPORT)
        try:
            errors = lab.ConsoleErrors(page, ignore=NOTEBOOK7_OWN_ERRORS)
            lab.open_notebook(page, server, NOTEBOOK)
            assert "/notebooks/" in page.url, f"not Notebook 7's page: {page.url}"
            lab.wait_kernel_idle(page, timeout=90)
            lab.run_all(page)
            lab.wait_cells_done(page, len(CELLS), timeout=240)
            page.wait_for_selector(".odinlab-explorer .odinlab-scatter[data-drawn=true]", timeout=90 * SECONDS)
            page.wait_for_selector(".odinlab-gallery .odinlab-thumb[data-image-id]", timeout=60 * SECONDS)
            page.wait_for_selector(".odinlab-confusion td.odinlab-cell", timeout=60 * SECONDS)
            points = page.locator(".odinlab-scatter").get_attribute("data-points")
            assert points == str(explorer_store[1].frame.height)
            canvas = "canvas.odinlab-scatter-canvas"
            page.evaluate("(s) => document.querySelector(s).scrollIntoView({block: 'center'})", canvas)
            page.wait_for_function(f"() => document.querySelector('{canvas}').width > 0")
            lit = lab.lit_pixels(page, canvas)
            assert lit > 500, f"the scatter's canvas has only {lit} drawn pixels in Notebook 7"
            path = artifacts / "notebook7.png"
            path.unlink(missing_ok=True)
            page.screenshot(path=str(path))
            assert path.stat().st_size > 10_000
            errors.assert_none()
        finally:
            page.close()
