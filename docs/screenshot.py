"""Regenerate docs/explorer.png, the README's picture of the explorer, in a real JupyterLab.

Builds the browser tests' digits store (tests/e2e/explorer_notebook.py), opens a notebook that shows
``odinlab.explore(...)`` with the mistakes of class 3 selected, the boundary sample and the points
between two classes drawn on the scatter and one image opened in the detail, and saves a screenshot of
the explorer. Needs Debian's chromium. Run from the repository root (about a minute):

    python docs/screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
import lab  # noqa: E402
from explorer_notebook import CELLS, NOTEBOOK, build_store, serve_folder  # noqa: E402

EXTRA = ("from odinlab.nets import SmallCNN\n"
         "store.load_weights(SmallCNN(1, 10, width=4), 'cnn@1')  # between_classes runs the network's head\n"
         "ex.select('label = 3 AND NOT correct')\n"
         "ex.show_boundary_sample(0.45, seed=0)\n"
         "ex.show_between_classes('3', '2', steps=9)\n"
         "ex.open(ex.selection[0])")
VIEWPORT = {"width": 1400, "height": 1700}


def main(out: Path = ROOT / "docs" / "explorer.png") -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as work:
        store_path, _ = build_store(Path(work) / "built")
        folder = serve_folder(store_path, Path(work) / "served")
        lab.write_notebook(folder / NOTEBOOK, [*CELLS, EXTRA])
        with lab.JupyterServer(folder, app="lab") as server, sync_playwright() as driver:
            browser = lab.launch_browser(driver)
            page = browser.new_page(viewport=VIEWPORT)
            lab.open_and_run(page, server, NOTEBOOK, len(CELLS) + 1, timeout=240)
            page.wait_for_selector(".odinlab-scatter[data-drawn=true]", timeout=90_000)
            page.wait_for_selector(".odinlab-detail img.odinlab-detail-image", timeout=60_000)
            page.wait_for_timeout(1500)  # thumbnails and overlays settle
            page.evaluate("() => document.querySelector('.odinlab-explorer').scrollIntoView({block: 'start'})")
            page.locator(".odinlab-explorer").first.screenshot(path=str(out), animations="disabled")
            browser.close()
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
