"""Report sections beyond one model's mistakes: two versions compared, units, the embedding.

Numbers come from :mod:`odinlab.debug.compare`, :mod:`odinlab.debug.units`,
:class:`odinlab.debug.maximize.Maximizer` and :class:`odinlab.sampling.Embedding`.
"""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from odinlab.errors import OdinError
from odinlab.reports.blocks import Section, cards, cell, figure, image, note, plotly_text, table
from odinlab.reports.context import Context

DISAGREEMENTS_SHOWN = 24


def compare_section(ctx: Context) -> Section:
    """Two versions compared: agreement and McNemar's test, per-class deltas, disagreements, CKA.

    >>> _ = store.materialize(net, ["head.fc1"], "val", progress=False)
    >>> v2 = store.register_model(net, "cnn", parent="cnn@1")    # the same weights, as a second version
    >>> _ = store.materialize(v2, ["head.fc1"], "val", progress=False)
    >>> ctx = Context(store, [store.model("cnn@1"), store.model(v2)], store.select("val"), "head.fc1")
    >>> [b["kind"] for b in compare_section(ctx).blocks]
    ['table', 'figure', 'table', 'cards', 'figure']
    """
    from odinlab.debug import compare
    from odinlab.draw.compare import cka_figure, class_delta_figure

    a, b = ctx.records[:2]
    store, images = ctx.store, ctx.selection
    agreement = compare.agreement(store, a, b, images)
    deltas = compare.class_deltas(store, a, b, images)
    wrong = compare.disagreements(store, a, b, images)
    section = Section("compare", f"{a.model_id} against {b.model_id}",
                      "Where the two versions agree, McNemar's test of their accuracies, per-class changes "
                      f"(b − a) and the images they disagree on.")
    section.add(table(agreement, "Agreement", name="agreement"),
                figure(class_delta_figure(deltas.with_columns(pl.col("label_name").map_elements(
                    plotly_text, pl.String)), "f1", title=f"F1 per class: {b.model_id} − {a.model_id}"), "deltas"),
                table(deltas, "Per-class metrics of both", name="class-deltas"))
    names = dict(enumerate(a.classes))
    thumbs = ctx.thumbnails(wrong["image_id"].head(DISAGREEMENTS_SHOWN).to_list())
    section.add(cards([{"images": [image(thumbs[r["image_id"]], r["image_id"], "image")], "id": r["image_id"],
                        "lines": [r["image_id"], f"label {r['label_name']}",
                                  f"{a.model_id}: {names.get(r['predicted_a'], r['predicted_a'])}"
                                  f"{' ✓' if r['correct_a'] else ''}",
                                  f"{b.model_id}: {names.get(r['predicted_b'], r['predicted_b'])}"
                                  f"{' ✓' if r['correct_b'] else ''}"]}
                       for r in wrong.head(DISAGREEMENTS_SHOWN).iter_rows(named=True)],
                      f"{wrong.height} disagreements" + (f" (the first {DISAGREEMENTS_SHOWN})"
                                                         if wrong.height > DISAGREEMENTS_SHOWN else ""),
                      "disagreements"))
    try:
        cka = compare.cka_matrix(store, a, b, [ctx.layer], [ctx.layer], images)
        section.add(figure(cka_figure(cka, title=f"Linear CKA of {ctx.layer}: {cell(cka['cka'][0])}"), "cka"))
    except OdinError as error:
        section.add(note(f"No CKA of {ctx.layer}: {error}", "warn"))
    return section


def units_section(ctx: Context) -> Section:
    """The units of ``ctx.unit_layer`` that best track a class: maximization beside their top real images.

    >>> ctx = Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1",
    ...               unit_layer="features.relu2", units=1, max_steps=8)
    >>> section = units_section(ctx)
    >>> [b["kind"] for b in section.blocks], section.blocks[1]["items"][0]["images"][0]["label"]
    (['table', 'cards'], 'maximized')
    """
    from odinlab.debug import units

    record, layer = ctx.model, ctx.unit_layer
    section = Section("units", f"Units of {layer} in {record.model_id}",
                      f"The {ctx.units} units whose activation best separates one class from the rest (AUC), "
                      "each as the input that maximizes it beside the real images that drive it most.")
    scores = units.unit_scores(ctx.store, record, layer, ctx.selection)
    best = scores.sort("auc", descending=True, maintain_order=True).unique("unit", keep="first",
                                                                         maintain_order=True).head(ctx.units)
    section.add(table(best, "Best-separating units", name="unit-scores"))
    try:
        from odinlab.debug.maximize import Maximizer

        maximizer = Maximizer(ctx.store, record, steps=ctx.max_steps, seed=0)
    except OdinError as error:  # no network in this session: the top images still show
        section.add(note(f"No maximization images: {error}", "warn"))
        maximizer = None
    items = [_unit_card(ctx, maximizer, layer, row) for row in best.iter_rows(named=True)]
    return section.add(cards(items, "Units", "units"))


def _unit_card(ctx: Context, maximizer, layer: str, row: dict) -> dict:
    from odinlab.debug import units
    from odinlab.draw.maximize import display_image
    from odinlab.widgets.detail import _png

    unit, shown = int(row["unit"]), []
    lines = [f"unit {unit}: class {row['label_name']}, AUC {cell(row['auc'])}"]
    if maximizer is not None:
        result = maximizer.comparison("channel", layer, unit, ctx.selection, k=ctx.k // 2 or 1)
        stats = maximizer.color_stats
        shown.append(image(_png(display_image(result.optimized[0], stats.low, stats.high), ctx.thumb_size),
                           f"maximization of unit {unit}", "maximized"))
        lines.append(f"maximized activation {cell(float(result.values[0]))}")
        top = result.top.filter(~pl.col("dead"))
    else:
        top = units.top_images(ctx.store, ctx.model, layer, ctx.selection, unit=unit, k=ctx.k // 2 or 1)
        top = top.filter(~pl.col("dead"))
    thumbs = ctx.thumbnails(top["image_id"].to_list())
    shown += [image(thumbs[r["image_id"]], r["image_id"], f"#{r['rank']} {cell(r['activation'])}")
              for r in top.iter_rows(named=True)]
    return {"images": shown, "lines": lines, "id": f"unit-{unit}", "wide": True}


def embedding_section(ctx: Context) -> Section:
    """A static plot of the embedding of ``ctx.layer``, coloured by whether the prediction is right.

    >>> _ = store.materialize(net, ["head.fc1"], "val", progress=False)
    >>> ctx = Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1", embedding="pca")
    >>> section = embedding_section(ctx)
    >>> section.blocks[0]["kind"], len(section.blocks[0]["html"]) > 1000
    ('figure', True)
    """
    from odinlab.sampling import Embedding

    record = ctx.model
    frame = Embedding(ctx.store, record, ctx.layer, reducer=ctx.embedding, seed=0, progress=False) \
        .fit(ctx.selection).frame()
    names = dict(enumerate(record.classes))
    fig = go.Figure()
    for right, color, label in ((True, "#8ab6d6", "right"), (False, "#d62728", "wrong")):
        part = frame.filter(pl.col("correct") == right)
        hover = [f"{i}<br>label {plotly_text(n)}, predicted {plotly_text(names.get(p, p))}"
                 for i, n, p in part.select("image_id", "label_name", "predicted").iter_rows()]
        fig.add_trace(go.Scatter(x=part["x"].to_list(), y=part["y"].to_list(), mode="markers", name=label,
                                 text=hover, hovertemplate="%{text}<extra></extra>",
                                 marker={"color": color, "size": 5 if right else 7, "opacity": 0.8}))
    fig.update_layout(title=f"{ctx.embedding.upper()} of {ctx.layer} in {record.model_id}: "
                            f"{int((~frame['correct'].fill_null(True)).sum())} mistakes of {frame.height} images",
                      height=520, xaxis_title="x", yaxis_title="y")
    return Section("embedding", f"The embedding of {ctx.layer}").add(figure(fig, "embedding"))
