"""The standalone HTML report: its sections carry the debug functions' numbers, store text is escaped,
nothing points outside the file, it stays small, and the command line writes it."""

import re
import subprocess
import sys

import polars as pl
import pytest

import odinlab
import odinlab
from odinlab.cli import main
from odinlab.debug import compare, units
from odinlab.debug import error_analysis as ea
from odinlab.errors import NotMaterializedError, OptionError, UnknownModelError
from odinlab.reports.blocks import cell

from conftest import HOSTILE, HOSTILE_NOTE, OPTIONS, odinlab_report

SECTIONS = ["models", "experiments", "confusion", "mistakes", "labels", "compare", "units", "embedding",
            "provenance"]


def section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}"')
    return html[start:html.index("</section>", start)]


def block(html: str, name: str) -> str:
    start = html.index(f'data-block="{name}"')
    ends = [i for i in (html.find('data-block="', start + 1), html.find("</section>", start)) if i > 0]
    return html[start:min(ends)]


def card_ids(html: str, name: str) -> list[str]:
    return re.findall(r'<div class="card[^"]*" data-id="([^"]*)"', block(html, name))


def table_rows(html: str, name: str) -> list[list[str]]:
    body = block(html, name).split("<tbody>")[1]
    return [re.findall(r"<td>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_every_section_is_present_in_order(digits_report):
    _, html = digits_report
    assert re.findall(r'<section id="([^"]+)"', html) == SECTIONS
    assert "could not be made" not in html and "No attribution overlays" not in html  # every section complete


def test_confusion_and_per_class_metrics_match_the_analysis(digits_report, report_store):
    store, v1, _ = report_store
    html = digits_report[1]
    cells = ea.confusion_matrix(store, v1, "test")
    right = int(cells.filter(pl.col("label") == pl.col("predicted"))["count"].sum())
    assert f"{right} of {int(cells['count'].sum())} labelled images right" in section(html, "confusion")
    metrics = ea.per_class_metrics(store, v1, "test")
    assert table_rows(html, "per-class") == [[cell(v) for v in row] for row in metrics.iter_rows()]


def test_mistakes_and_clusters_are_the_analysis_images_with_overlays(digits_report, report_store):
    store, v1, _ = report_store
    html = digits_report[1]
    mistakes = ea.confident_mistakes(store, v1, "test", k=OPTIONS["k"])
    assert card_ids(html, "confident-mistakes") == mistakes["image_id"].to_list()
    clusters = ea.error_exemplars(store, v1, "head.fc1", "test")
    assert card_ids(html, "error-clusters") == clusters["image_id"].to_list()
    assert block(html, "confident-mistakes").count("<figcaption>saliency</figcaption>") == mistakes.height
    assert block(html, "error-clusters").count("<figcaption>saliency</figcaption>") == clusters.height


def test_label_errors_noise_and_corrections_are_shown(digits_report, report_store):
    store, v1, _ = report_store
    html = digits_report[1]
    suspects = ea.label_errors(store, v1, "test", k=OPTIONS["k"])
    assert card_ids(html, "label-errors") == suspects["image_id"].to_list()
    noise = ea.label_noise(store, v1, "test")
    assert table_rows(html, "label-noise") == [[cell(v) for v in row] for row in noise.iter_rows()]
    corrected = table_rows(html, "label-corrections")
    assert len(corrected) == 1 and store.select("test").ids[0] in corrected[0] and "7" in corrected[0]


def test_models_lineage_and_experiments_with_the_test_set_guard(digits_report, report_store):
    store, v1, v2 = report_store
    html = digits_report[1]
    models = table_rows(html, "models")
    assert [row[0] for row in models] == [v1, v2]
    assert f"{v2} ← {v1}" in section(html, "models")
    assert f'data-block="architecture-{v1}"' in html
    looks = store.experiments["test_look"].max()
    assert f"looked at {looks} time(s) by the lineage of {v1}" in section(html, "experiments")
    assert len(table_rows(html, "experiments")) == store.experiments.height


def test_comparison_and_units_match_the_debug_functions(digits_report, report_store):
    store, v1, v2 = report_store
    html = digits_report[1]
    agreement = compare.agreement(store, v1, v2, "test")
    assert table_rows(html, "agreement") == [[cell(v) for v in row] for row in agreement.iter_rows()]
    n = compare.disagreements(store, v1, v2, "test").height
    assert f"{n} disagreements" in block(html, "disagreements")
    best = units.unit_scores(store, v1, "features.relu2", "test").sort("auc", descending=True, maintain_order=True) \
        .unique("unit", keep="first", maintain_order=True).head(OPTIONS["units"])
    assert card_ids(html, "units") == [f"unit-{u}" for u in best["unit"]]
    assert block(html, "units").count("<figcaption>maximized</figcaption>") == OPTIONS["units"]


def test_hostile_store_text_is_escaped_never_markup(digits_report):
    _, html = digits_report
    body = html.split("<body>", 1)[1]
    assert HOSTILE not in html and HOSTILE_NOTE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section(html, "models")       # the description
    assert "note: &lt;script&gt;alert(1)&lt;/script&gt;" in section(html, "mistakes")  # the metadata
    assert "&lt;img src=x onerror=alert(2)&gt;" in section(html, "labels")           # a correction's note
    assert "alert(" not in "".join(re.findall(r"<script[^>]*>(.*?)</script>", body, re.S))


def test_the_file_references_nothing_outside_itself(digits_report):
    path, html = digits_report
    sources = re.findall(r'<(?:img|script|link|iframe)\b[^>]*\b(?:src|href)="([^"]*)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    page = html.replace(html[html.index("<script>"):html.index("</script>")], "")  # all but plotly.js
    assert not re.search(r"@import|url\((?!data:)|<link\b|https?://", page)
    assert html.count("<script") == 1 + html.count("Plotly.newPlot")  # plotly.js once, then one per plot


def test_a_digits_report_stays_small(digits_report):
    path, html = digits_report
    size = path.stat().st_size
    pictures = len(html) - len(html.split("</head>")[0])
    print(f"\ndigits report: {size / 1e6:.2f} MB in all, {pictures / 1e3:.0f} kB besides plotly.js and the CSS")
    assert size < 10e6 and pictures < 1e6


def test_without_the_network_the_report_says_why_instead_of_overlays(report_store, tmp_path):
    store, v1, _ = report_store
    fresh = odinlab.open_store(store.url)  # a new session: weights, but no module
    html = odinlab.report(fresh, v1, tmp_path / "r.html", **OPTIONS).read_text(encoding="utf-8")
    assert "No attribution overlays" in section(html, "mistakes") and "load_weights" in section(html, "mistakes")
    assert "No maximization images" in section(html, "units")
    assert "<figcaption>saliency</figcaption>" not in html and 'id="compare"' not in html
    assert card_ids(html, "confident-mistakes")  # the rest is all there


def test_user_mistakes_raise_odin_errors(report_store, tmp_path):
    store, v1, v2 = report_store
    with pytest.raises(OptionError, match="one model or compares two"):
        odinlab_report(store, [v1, v2, v1], tmp_path / "r.html")
    with pytest.raises(UnknownModelError):
        odinlab_report(store, "nope@1", tmp_path / "r.html")
    with pytest.raises(NotMaterializedError, match="materialize"):
        odinlab_report(store, v1, tmp_path / "r.html", images="val")
    assert not (tmp_path / "r.html").exists()


def test_the_command_line_writes_the_report(report_store, tmp_path, capsys):
    store, v1, v2 = report_store
    out = tmp_path / "cli.html"
    assert main(["report", store.url, v1, v2, "-o", str(out), "--title", "Digits <v1>",
                 "--net", "odinlab.nets:SmallCNN"]) == 0
    assert f"Wrote {out}" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert "<title>Digits &lt;v1&gt;</title>" in html and 'id="compare"' in html
    assert "<figcaption>integrated_gradients</figcaption>" in html  # --net gave the overlays their network
    assert main(["report", store.url, "nope@1", "-o", str(tmp_path / "x.html")]) == 2
    assert "nope@1" in capsys.readouterr().err and not (tmp_path / "x.html").exists()


def test_the_odinlab_command_has_report():
    done = subprocess.run([sys.executable, "-m", "odinlab.cli", "report", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "MODEL" in done.stdout and "--images" in done.stdout
