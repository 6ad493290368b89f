"""Standalone HTML reports: a model's story in one file that a colleague opens without Python.

``report(store, models, path)`` writes ONE self-contained HTML file that works offline: plotly.js
and the CSS are inlined, images are ``data:`` URIs of thumbnails, and nothing is fetched. Every text
from the store goes through jinja2's autoescaping. Sections: models (lineage, architecture),
experiments (metrics, the test-set guard's looks), confusion and per-class metrics, confident
mistakes and error clusters with attribution overlays, suspected label errors and corrections,
the comparison of two versions, units beside their top images, the embedding, and provenance.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from odinlab.errors import OdinError, OptionError
from odinlab.reports.blocks import Section, note
from odinlab.reports.context import Context

__all__ = ["report", "render"]

TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")


def report(store, models, path: str | Path = "report.html", *, images="test", title: str | None = None,
           layer: str | None = None, unit_layer: str | None = None, k: int = 12, thumb_size: int = 64,
           attribution: str | None = "integrated_gradients", attribution_options: dict | None = None,
           embedding: str = "umap", units: int = 3, max_steps: int = 256) -> Path:
    """Write a standalone HTML report of ``models`` (one, or two to compare) on ``images``; return its path.

    ``models`` is a model reference or a list of them (ids, names, records, registered modules);
    the first is the one whose mistakes, labels, units and embedding are shown, and with two the
    versions are compared. ``images`` is any image selection (default the test split); its
    predictions must be materialized (``store.materialize(model, ...)``). ``layer`` is where error
    clusters and the embedding live (default: the last materialized flat layer before the output);
    ``unit_layer`` whose units are shown (default: the last materialized convolutional map).
    ``k`` mistakes and suspects are shown, as ``thumb_size``-pixel thumbnails. Attribution overlays
    (``attribution``, a Captum method name, None to leave them out) and maximizations need the
    network in this session (``store.load_weights(MyNet(), model)``); without it the report says so.
    ``embedding`` is ``"umap"`` or ``"pca"``.

    >>> import tempfile
    >>> _ = store.materialize(net, ["head.fc1", "features.relu2"], "val", progress=False)
    >>> out = report(store, "cnn@1", tempfile.mkdtemp() + "/r.html", images="val", embedding="pca",
    ...              attribution="saliency", max_steps=8, units=1)
    >>> out.name, "<section id=\\"mistakes\\"" in out.read_text()
    ('r.html', True)
    """
    started = datetime.now(UTC)
    ctx = _context(store, models, images, layer, unit_layer, k=k, thumb_size=thumb_size, attribution=attribution,
                   attribution_options={"n_steps": 32} if attribution_options is None and attribution in (
                       "integrated_gradients", "IntegratedGradients") else dict(attribution_options or {}),
                   embedding=embedding, units=units, max_steps=max_steps)
    from odinlab.reports import extras, mistakes, overview

    sections = [overview.models_section(ctx), overview.experiments_section(ctx),
                mistakes.confusion_section(ctx)]  # no predictions: NotMaterializedError says how to make them
    optional = [("mistakes", "Mistakes", mistakes.mistakes_section), ("labels", "Labels", mistakes.labels_section)]
    if len(ctx.records) == 2:
        optional.append(("compare", "Comparison", extras.compare_section))
    if ctx.unit_layer:
        optional.append(("units", "Units", extras.units_section))
    optional.append(("embedding", "Embedding", extras.embedding_section))
    for anchor, name, build in optional:
        try:
            sections.append(build(ctx))
        except OdinError as error:  # one missing piece should not cost the whole report
            sections.append(Section(anchor, name).add(note(f"This section could not be made: {error}", "warn")))
    sections.append(overview.provenance_section(ctx, started))
    title = title or f"odinlab report: {' vs '.join(r.model_id for r in ctx.records)}"
    path = Path(path)
    path.write_text(render(title, sections, made=started), encoding="utf-8")
    return path


def _context(store, models, images, layer, unit_layer, **options) -> Context:
    models = list(models) if isinstance(models, list | tuple) else [models]
    if not 1 <= len(models) <= 2:
        raise OptionError(f"A report shows one model or compares two; got {len(models)}.")
    if options["embedding"] not in ("umap", "pca"):
        raise OptionError(f"embedding must be 'umap' or 'pca', not {options['embedding']!r}.")
    if isinstance(options["k"], bool) or not isinstance(options["k"], int) or options["k"] < 1:
        raise OptionError(f"k must be a positive number of images, not {options['k']!r}.")
    records = [store.model(m) for m in models]
    selection = store.select(images)
    if len(selection) == 0:
        raise OptionError(f"The image selection {images!r} is empty; a report needs images.")
    first = records[0]
    layer = store.check_layers(first, layer)[0] if layer else _default_layer(store, first, flat=True)
    unit_layer = store.check_layers(first, unit_layer)[0] if unit_layer else _default_layer(store, first, flat=False)
    label = images if isinstance(images, str) and len(images) <= 80 else f"{len(selection)} selected images"
    return Context(store, records, selection, layer, unit_layer, images_label=label, **options)


def _default_layer(store, record, *, flat: bool) -> str | None:
    """The last materialized layer of that kind (flat: 1-D, not the output; else a C×H×W map), else
    the last such layer of the architecture."""
    arch = store.architecture(record).filter(pl.col("type") != "Sequential")
    dims = 1 if flat else 3
    kinds = arch.filter((pl.col("output_shape").list.len() == dims)
                        & ~pl.col("type").is_in(["Flatten", "Dropout", "Identity"]))
    if flat:
        kinds = kinds.filter(pl.col("output_shape").list.first() != len(record.classes))
    materialized = set(store.materialized().filter(pl.col("model_id") == record.model_id)["layer"].drop_nulls())
    stored = kinds.filter(pl.col("layer").is_in(list(materialized)))
    chosen = stored if stored.height else kinds
    if chosen.is_empty():
        if flat:
            raise OptionError(f"{record.model_id} has no flat layer to cluster and embed in; give layer=.")
        return None
    return chosen["layer"][-1]


def render(title: str, sections: list[Section], *, made: datetime | None = None) -> str:
    """The page: sections through the jinja2 template (autoescaped), plotly.js and the CSS inlined.

    >>> from odinlab.reports.blocks import note
    >>> page = render("<b>t</b>", [Section("s", "S").add(note("<script>x</script>"))])
    >>> "&lt;script&gt;x&lt;/script&gt;" in page, "<script>x" in page, "&lt;b&gt;t&lt;/b&gt;" in page
    (True, False, True)
    """
    import jinja2
    from markupsafe import Markup
    from plotly.offline import get_plotlyjs

    from odinlab import __version__

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plotly_js = get_plotlyjs()
    css = (STATIC / "report.css").read_text(encoding="utf-8")
    return env.get_template("report.html.j2").render(
        title=title, sections=sections, version=__version__,
        made=(made or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        plotly_js=Markup(plotly_js), css=Markup(css))  # noqa: S704 - our own files, not store text
