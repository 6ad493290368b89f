"""Report sections about what the first model gets wrong: confusion, mistakes, clusters, labels.

Every number comes from :mod:`odinlab.debug.error_analysis` and :mod:`odinlab.debug.error_clusters`;
this module only lays them out, with thumbnails and attribution overlays from the context.
"""

from __future__ import annotations

import polars as pl

from odinlab.errors import OdinError
from odinlab.reports.blocks import Section, cards, cell, figure, image, note, plotly_text, table
from odinlab.reports.context import Context, rows_by_id
from odinlab.reports.overview import corrections_block

MEMBERS_SHOWN = 6  # thumbnails of a cluster's members besides its medoid


def confusion_section(ctx: Context) -> Section:
    """The confusion matrix (plotly heat map) and the per-class metrics of the first model.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> section = confusion_section(Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1"))
    >>> [b["kind"] for b in section.blocks]
    ['note', 'figure', 'table']
    """
    from odinlab.debug import error_analysis as ea
    from odinlab.draw.confusion import confusion_figure

    record = ctx.model
    cells = ea.confusion_matrix(ctx.store, record, ctx.selection)
    metrics = ea.per_class_metrics(ctx.store, record, ctx.selection)
    total, right = int(cells["count"].sum()), int(cells.filter(pl.col("label") == pl.col("predicted"))["count"].sum())
    shown = cells.with_columns(pl.col("label_name", "predicted_name").map_elements(plotly_text, pl.String))
    section = Section("confusion", f"Confusion matrix and per-class metrics of {record.model_id}")
    return section.add(
        note(f"{right} of {total} labelled images right (accuracy {cell(right / total if total else 0.0)}); "
             f"{total - right} mistakes."),
        figure(confusion_figure(shown, title=f"Confusion matrix of {record.model_id}"), "confusion"),
        table(metrics, "Per-class metrics", name="per-class"))


def mistakes_section(ctx: Context) -> Section:
    """The most confident mistakes and the error clusters with their medoids, each with its overlay.

    >>> _ = store.materialize(net, ["head.fc1"], "val", progress=False)
    >>> ctx = Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1", attribution=None, k=3)
    >>> [b["kind"] for b in mistakes_section(ctx).blocks]
    ['note', 'cards', 'cards']
    """
    from odinlab.debug import error_analysis as ea

    record = ctx.model
    section = Section("mistakes", f"Mistakes of {record.model_id}",
                      "The mistakes the model was most sure of, then its mistakes grouped by similarity in "
                      f"{ctx.layer} (each cluster shown by its medoid).")
    mistakes = ea.confident_mistakes(ctx.store, record, ctx.selection, k=ctx.k)
    ids = mistakes["image_id"].to_list()
    try:
        clusters = ea.error_exemplars(ctx.store, record, ctx.layer, ctx.selection)
    except OdinError as error:
        clusters, problem = None, str(error)
    medoids = [] if clusters is None else clusters["image_id"].to_list()
    ctx.overlays(ids + medoids)  # one attribution call for every overlay of the section
    section.add(note(f"Overlays: {ctx.attribution} attribution of the predicted class of {record.model_id} "
                     "(red: evidence for it, blue: against)." if not ctx.attribution_problem else
                     f"No attribution overlays: {ctx.attribution_problem}", "warn" if ctx.attribution_problem
                     else "info"))
    section.add(cards([{"images": ctx.pictures(row["image_id"]), "id": row["image_id"],
                        "lines": [row["image_id"], f"label {row['label_name']} → {row['predicted_name']}",
                                  f"confidence {cell(row['confidence'])}", *ctx.metadata_lines(row)]}
                       for row in mistakes.iter_rows(named=True)],
                      f"The {mistakes.height} most confident mistakes", "confident-mistakes"))
    if clusters is None:
        return section.add(note(f"No error clusters: {problem}", "warn"))
    return section.add(_cluster_cards(ctx, clusters))


def _cluster_cards(ctx: Context, clusters: pl.DataFrame) -> dict:
    items = []
    for row in clusters.iter_rows(named=True):
        members = [i for i in row["image_ids"] if i != row["image_id"]][:MEMBERS_SHOWN]
        thumbs = ctx.thumbnails(members)
        enriched = [f"{v['column']} = {v['value']} ({cell(v['share_in'])} vs {cell(v['share_out'])}, "
                    f"p {cell(v['p_adjusted'])})" for v in row["over_represented"]]
        pairs = ", ".join(f"{p['label_name']}→{p['predicted_name']} ×{p['count']}" for p in row["pairs"][:5])
        items.append({"images": ctx.pictures(row["image_id"]) + [image(thumbs[m], m, "member") for m in members],
                      "id": row["image_id"], "wide": True,
                      "lines": [f"cluster {row['cluster']}: {row['size']} mistakes, medoid {row['image_id']}",
                                f"mostly predicted {row['top_predicted_name']} ({cell(row['predicted_share'])})",
                                f"pairs: {pairs}",
                                "over-represented: " + ("; ".join(enriched) if enriched else "nothing significant")]})
    return cards(items, f"{clusters.height} error clusters in {ctx.layer}", "error-clusters")


def labels_section(ctx: Context) -> Section:
    """Suspected label errors (most suspect first), the estimated noise per class, and the corrections made.

    >>> _ = store.materialize(net, images="val", progress=False)
    >>> section = labels_section(Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1", k=4))
    >>> [b["kind"] for b in section.blocks]
    ['cards', 'table', 'note']
    """
    import warnings

    from odinlab.debug import error_analysis as ea

    record = ctx.model
    with warnings.catch_warnings(record=True) as caught:  # in-sample scores: said in the section instead
        warnings.simplefilter("always")
        suspects = ea.label_errors(ctx.store, record, ctx.selection, k=ctx.k)
    noise = ea.label_noise(ctx.store, record, ctx.selection)
    section = Section("labels", "Suspected label errors and label corrections",
                      f"Images whose given label {record.model_id} finds least probable (confident learning "
                      "flags the estimated wrong labels), and every label decision recorded in the store.")
    section.blocks.extend(note(str(w.message), "warn") for w in caught if "InSample" in w.category.__name__)
    rows = rows_by_id(suspects)
    section.add(cards([{"images": ctx.pictures(i, overlay=False), "id": i,
                        "lines": [i, f"label {r['label_name']}, suggested {r['suggested_name']}",
                                  f"label quality {cell(r['label_quality'])}",
                                  "flagged" if r["flagged"] else "not flagged",
                                  "out of sample" if r["out_of_sample"] else "in-sample (trained on it)", *ctx.metadata_lines(r)]}
                       for i, r in rows.items()], f"The {len(rows)} most suspect labels", "label-errors"),
                table(noise, f"Estimated label errors per class: {int(noise['estimated_errors'].sum())} in all",
                      name="label-noise"))
    return section.add(*corrections_block(ctx))
