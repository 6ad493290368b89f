"""The label review queue in a real JupyterLab 4, driven in headless Chromium like a reviewer would.

One server, one browser and one notebook for the module: the notebook opens a copy of the e2e store
and shows ``ReviewQueue(store, "cnn", "test", embedding=..., who="e2e")``. The tests click Accept
and Undo, type the keyboard shortcuts, and check in the kernel, through SQL over the store, that
each decision was written as a label correction and that the label set (never the images table)
has the new label; the expected queue is computed here, independently, with ``label_errors``.
"""

import shutil
import struct
from dataclasses import dataclass

import pytest

import lab

pytestmark = pytest.mark.timeout(600)

VIEWPORT = {"width": 1300, "height": 1100}
SECONDS = 1000  # Playwright counts milliseconds
ROOT = ".odinlab-review"
NOTEBOOK = "review.ipynb"
CELLS = [
    "import json\nimport polars as pl\nimport odinlab\nfrom odinlab.sampling import Embedding\n"
    "from odinlab.widgets.review import ReviewQueue\nstore = odinlab.open_store('store')",
    "embedding = Embedding(store, 'cnn', 'head.fc1', progress=False).fit('test')\n"
    "queue = ReviewQueue(store, 'cnn', 'test', embedding=embedding, who='e2e')\nqueue",
]
CORRECTIONS = ("SELECT correction_id, image_id, action, old_label, new_label, model_id, score, method, who, undoes "
               "FROM label_corrections ORDER BY correction_id")


@dataclass
class Session:
    page: object
    errors: lab.ConsoleErrors
    ranked: object  # label_errors of the store, computed in this process

    def row(self, k: int) -> dict:
        return self.ranked.row(k, named=True)


@pytest.fixture(scope="module")
def session(chromium, explorer_store, tmp_path_factory):
    from odinlab.debug.error_analysis import label_errors

    store_path, explorer = explorer_store
    folder = tmp_path_factory.mktemp("e2e-review")
    shutil.copytree(store_path, folder / "store")  # the kernel writes corrections into its own copy
    lab.write_notebook(folder / NOTEBOOK, CELLS)
    ranked = label_errors(explorer.store, "cnn", "test")
    with lab.JupyterServer(folder, app="lab") as server:
        page = chromium.new_page(viewport=VIEWPORT)
        try:
            errors = lab.ConsoleErrors(page)
            lab.open_and_run(page, server, NOTEBOOK, len(CELLS), timeout=240)
            yield Session(page, errors, ranked)
        finally:
            page.close()


def wait_current(session: Session, image_id: str, decided: int) -> None:
    """Wait until the queue shows ``image_id`` with ``decided`` decisions counted and its buttons armed."""
    selector = f"{ROOT}[data-image-id='{image_id}'][data-decided='{decided}'][data-busy='false']"
    try:
        session.page.wait_for_selector(selector, timeout=30 * SECONDS)
    except Exception as error:
        state = session.page.evaluate(f"() => ({{...document.querySelector('{ROOT}').dataset}})")
        raise AssertionError(f"The queue should show {image_id} with {decided} decided; it shows {state}") from error


def corrections(session: Session) -> list[list]:
    return lab.python_json(session.page, f"store.sql({CORRECTIONS!r}).rows()")


def label_in_set(session: Session, image_id: str) -> int:
    return lab.python_json(session.page, f"store.label_set('reviewed').filter(pl.col('image_id') == "
                                         f"{image_id!r})['label'].item()")


def test_the_queue_opens_on_the_most_suspicious_image_with_its_evidence(session):
    page, first = session.page, session.row(0)
    wait_current(session, first["image_id"], 0)
    assert page.locator(f"{ROOT} .odinlab-review-given").get_attribute("data-class") == str(first["label"])
    assert page.locator(f"{ROOT} .odinlab-review-suggested").get_attribute("data-class") == str(first["suggested"])
    counter = page.locator(f"{ROOT} .odinlab-review-counter").text_content()
    assert counter.startswith(f"0 decided · {session.ranked.height} remaining")
    # the image and the 8 nearest neighbours' thumbnails arrived as bytes and decode as pictures
    page.wait_for_function("""(root) => {
      const images = Array.from(document.querySelectorAll(root + ' img'));
      return images.length === 9 && images.every((img) => img.complete && img.naturalWidth > 0);
    }""", arg=ROOT, timeout=30 * SECONDS)
    assert page.locator(f"{ROOT} .odinlab-review-neighbour").count() == 8
    assert page.locator(f"{ROOT} .odinlab-review-topk-row").count() == 5


def test_accept_writes_a_label_correction_that_sql_and_the_label_set_show(session):
    page, first, second = session.page, session.row(0), session.row(1)
    page.locator(f"{ROOT} button[data-action=accept]").click()
    wait_current(session, second["image_id"], 1)
    rows = corrections(session)
    assert len(rows) == 1
    correction_id, image_id, action, old, new, model_id, score, method, who, undoes = rows[0]
    assert (image_id, action, old, new, model_id, method, who, undoes) == (
        first["image_id"], "accept", first["label"], first["suggested"], "cnn@1", "self_confidence", "e2e", None)
    assert score == pytest.approx(first["label_quality"])
    assert label_in_set(session, first["image_id"]) == first["suggested"]
    original = lab.python_json(page, f"store.images.filter(pl.col('image_id') == {first['image_id']!r})"
                                     "['label'].item()")
    assert original == first["label"]  # the images table keeps the given label
    page.wait_for_selector(f"{ROOT} .odinlab-review-history tr[data-correction-id='{correction_id}']"
                           "[data-undone=false]", timeout=30 * SECONDS)


def test_undo_writes_an_undo_and_brings_the_image_and_its_label_back(session):
    page, first = session.page, session.row(0)
    page.locator(f"{ROOT} button[data-action=undo]").click()
    wait_current(session, first["image_id"], 0)
    rows = corrections(session)
    assert len(rows) == 2 and rows[1][2] == "undo" and rows[1][9] == rows[0][0] and rows[1][1] == first["image_id"]
    assert label_in_set(session, first["image_id"]) == first["label"]
    page.wait_for_selector(f"{ROOT} .odinlab-review-history tr[data-correction-id='{rows[0][0]}'][data-undone=true]",
                           timeout=30 * SECONDS)


def test_keyboard_shortcuts_decide_without_triggering_notebook_shortcuts(session):
    page, first, second = session.page, session.row(0), session.row(1)
    cells = page.locator(".jp-Notebook .jp-Cell").count()
    page.locator(ROOT).focus()
    page.keyboard.press("a")  # JupyterLab's "insert a cell above" in command mode: must reach the queue only
    wait_current(session, second["image_id"], 1)
    digit = next(c for c in range(10) if c not in (second["label"], second["suggested"]))
    page.locator(ROOT).focus()
    page.keyboard.press(str(digit))
    wait_current(session, session.row(2)["image_id"], 2)
    assert page.locator(".jp-Notebook .jp-Cell").count() == cells
    rows = corrections(session)
    assert [r[1:5] for r in rows[2:]] == [[first["image_id"], "accept", first["label"], first["suggested"]],
                                          [second["image_id"], "change", second["label"], digit]]


def test_a_screenshot_of_the_queue_is_saved(session, artifacts):
    page = session.page
    path = artifacts / "review_queue.png"
    path.unlink(missing_ok=True)
    page.evaluate("(s) => document.querySelector(s).scrollIntoView({block: 'start'})", ROOT)
    box = page.locator(ROOT).bounding_box()
    page.screenshot(path=str(path), clip=box, animations="disabled", timeout=30 * SECONDS)
    data = path.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and width >= 300 and height >= 200 and len(data) > 5000


def test_no_error_reached_the_browser_console(session):
    session.errors.assert_none()
