"""Fixtures of the browser tests: the store on disk (built once), Playwright, Chromium, the artifact folder.

The helpers themselves live in plain modules beside this file (lab.py: the server, the browser and
the page; explorer_notebook.py: the notebook and its store), which bench/widgets.py imports too.
"""

import os
import sys
from pathlib import Path

import pytest

# appended, not inserted first: at sys.path[0] this folder would shadow the next folder's conftest
# (pytest imports each folder's conftest.py as the module 'conftest')
sys.path.append(str(Path(__file__).parent))
import lab  # noqa: E402
from explorer_notebook import build_store  # noqa: E402

ARTIFACTS = Path(os.environ.get("ODINLAB_E2E_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture(scope="session")
def explorer_store(tmp_path_factory):
    """(the store's folder, the Explorer built in this process over it): the embedding is fitted and
    cached once for every notebook of the session, and the tests know the points and predictions
    without asking a kernel."""
    path, explorer = build_store(tmp_path_factory.mktemp("e2e-store"))
    if explorer.message:
        pytest.fail(f"The explorer could not be built in the test process: {explorer.message}")
    return path, explorer


@pytest.fixture(scope="session")
def artifacts():
    """The folder screenshots go to (tests/e2e/artifacts, or $ODINLAB_E2E_ARTIFACTS)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium under Playwright, for the session. Fails (never skips) with how to
    install what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("The browser tests need Playwright's Python driver: pip install -c constraints.txt -e '.[dev]'")
    driver = sync_playwright().start()
    try:
        browser = lab.launch_browser(driver)
    except lab.BrowserTestError as error:
        driver.stop()
        pytest.fail(str(error))
    yield browser
    browser.close()
    driver.stop()
