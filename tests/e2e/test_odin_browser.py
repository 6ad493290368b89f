"""A ``%%odin`` cell in a real JupyterLab opens the explorer: the scatter draws, and nothing errs."""

import shutil

import pytest

import lab

pytestmark = pytest.mark.timeout(600)

SECONDS = 1000  # Playwright counts milliseconds
NOTEBOOK = "odin.ipynb"
# What a person writes: load the extension, choose the store, ask in the language.
CELLS = [
    "import json\nimport odinlab\nstore = odinlab.open_store('store')\n%load_ext odinlab\n%odin use store",
    "%%odin\n# the test images, in the explorer of cnn's head.fc1\nimages where split = test\n"
    "  | show explore of cnn at head.fc1 -> ex",
]


def test_an_odin_cell_opens_the_explorer_and_its_scatter_draws(chromium, explorer_store, tmp_path, artifacts):
    shutil.copytree(explorer_store[0], tmp_path / "store")  # a kernel may write caches into its store
    lab.write_notebook(tmp_path / NOTEBOOK, CELLS)
    with lab.JupyterServer(tmp_path, app="lab") as server:
        page = chromium.new_page(viewport={"width": 1500, "height": 1100})
        try:
            errors = lab.ConsoleErrors(page)
            lab.open_and_run(page, server, NOTEBOOK, len(CELLS), timeout=240)
            page.wait_for_selector(".odinlab-scatter[data-drawn=true]", timeout=90 * SECONDS)
            assert lab.lit_pixels(page, "canvas.odinlab-scatter-canvas") > 100
            # the binding reached the kernel: the explorer shows the 270 test images
            assert lab.python_json(page, "len(ex.frame)") == 270
            page.screenshot(path=str(artifacts / "odin_explore.png"), animations="disabled", timeout=30 * SECONDS)
            errors.assert_none()
        finally:
            page.close()
