"""The standalone report in headless Chromium, opened from file:// with the network cut off.

Every request that is neither the file itself nor a data: URI is aborted and counted; the page must
render, draw its plotly plots, load its thumbnails, log no error, open no dialog, send nothing out,
and show the store's hostile text as text. The screenshot goes to tests/e2e/artifacts/report.png.
"""

import dataclasses
import warnings

import polars as pl
import pytest
import torch

import odinlab
from odinlab.errors import TestSetReuseWarning
from odinlab.nets import SmallCNN
from odinlab.reports import report
from odinlab.training import fit

HOSTILE = "<script>alert(1)</script>"
PLOTS = ("confusion", "deltas", "cka", "embedding")

# Marks inside each plotly plot: heat-map images, bars, scatter points.
MARKS = """() => [...document.querySelectorAll('.plot[data-block]')].map(p => ({
  name: p.dataset.block,
  svg: p.querySelectorAll('svg.main-svg').length,
  marks: p.querySelectorAll('.heatmaplayer image, .barlayer path, .scatterlayer path.point, .hm image').length,
}))"""
IMAGES = """() => [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))"""


@pytest.fixture(scope="module")
def report_file(tmp_path_factory):
    """A report comparing two digits versions, with a hostile metadata value and model description."""
    torch.manual_seed(0)
    store = odinlab.open_store(tmp_path_factory.mktemp("report-e2e") / "store", create=True)
    data = odinlab.datasets.digits()
    store.ingest(dataclasses.replace(data, metadata=data.metadata.with_columns(note=pl.lit(HOSTILE))))
    net = SmallCNN()
    fit(net, store, "train", epochs=3, progress=False)
    v1 = store.register_model(net, "digits", description=HOSTILE)
    tuned = store.load_weights(SmallCNN(), v1)
    fit(tuned, store, "train", epochs=1, lr=0.003, seed=1, progress=False)
    v2 = store.register_model(tuned, "digits", parent=v1)
    for module in (net, tuned):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TestSetReuseWarning)
            store.evaluate(module, "test")
        store.materialize(module, ["features.relu2", "head.fc1"], "test", progress=False)
    return report(store, [v1, v2], tmp_path_factory.mktemp("out") / "report.html", embedding="pca",
                  attribution="integrated_gradients", max_steps=64)


def test_report_renders_offline_in_chromium(chromium, report_file, artifacts):
    context = chromium.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
    page = context.new_page()
    blocked, requested, problems, dialogs = [], [], [], []

    def route(r):
        url = r.request.url
        if url.startswith(("file:", "data:")):
            r.continue_()
        else:  # anything else would leave the page: refuse it, and count it
            blocked.append(url)
            r.abort()

    page.route("**/*", route)
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        page.goto(report_file.resolve().as_uri(), wait_until="load")
        page.wait_for_function(f"document.querySelectorAll('.plot[data-block] svg.main-svg').length >= {len(PLOTS)}",
                               timeout=60_000)
        page.wait_for_timeout(500)
        plots = {p["name"]: p for p in page.evaluate(MARKS)}
        assert set(plots) == set(PLOTS)
        assert all(p["svg"] and p["marks"] for p in plots.values()), plots
        images = page.evaluate(IMAGES)
        assert len(images) > 50 and all(i["complete"] and i["width"] > 0 for i in images), \
            [i for i in images if not i["width"]][:5]
        models_text = page.inner_text("#models")
        assert HOSTILE in models_text                      # the description, shown as text
        assert HOSTILE in page.inner_text("#mistakes")     # the metadata value, shown as text
        assert page.evaluate("document.querySelectorAll('main script:not([type])').length") == len(PLOTS)
        page.locator("#confusion").scroll_into_view_if_needed()
        top = page.evaluate("document.querySelector('#confusion').getBoundingClientRect().top + window.scrollY")
        page.screenshot(path=str(artifacts / "report.png"),
                        clip={"x": 0, "y": top - 10, "width": 1280, "height": 1400}, full_page=True)
    finally:
        context.close()
    assert not problems, problems
    assert not dialogs, dialogs
    assert not blocked, blocked
    assert all(u.startswith(("file:", "data:")) for u in requested), requested
