"""The verbs of the ``%%odin`` language: each calls one public odinlab function on the images before it.

A pipeline remembers the models and layer its stages named (:class:`Context`), so ``show`` can
reuse them: ``images where misclassified by cnn | show gallery`` shows cnn's gallery.

>>> from odinlab.lang.run import Runner
>>> _ = store.materialize(net, images="val", progress=False)
>>> Runner(store).run("images where split = val | confusion of cnn")[-1].columns[:2]
['label', 'label_name']
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from odinlab.debug import compare, error_analysis as ea
from odinlab.errors import closest, listing
from odinlab.lang import ast
from odinlab.store import Selection

COMPARISONS = {"deltas": compare.class_deltas, "agreement": compare.agreement,
               "disagreements": compare.disagreements, "paired": compare.paired}
ESTIMATES = ("accuracy", "confusion", "units", "means")
WIDGETS = ("table", "explore", "gallery", "confusion", "compare", "units")


@dataclass
class Context:
    """What a pipeline's stages have named so far: models (latest last) and a layer."""
    models: list = field(default_factory=list)
    layer: str | None = None
    images: Selection | None = None


def run_stage(run, stage, value, context: Context):
    """The result of ``stage`` applied to ``value`` (the result of the stages before it)."""
    if isinstance(value, Selection):
        context.images = value  # what "show" falls back on after a verb whose result has no images
    if isinstance(stage, ast.Limit):
        return value[: stage.count] if value is not None else run.store.select(None)[: stage.count]
    models = [run.model(m) for m in (stage.model, stage.model_b) if m is not None]
    context.models.extend(m for m in models if m not in context.models)
    if stage.layer is not None and models:
        context.layer = run.layer(models[0], stage.layer)
    handler = globals()[f"_{stage.verb}"]
    return handler(run, stage, value, context, models)


def _option(run, ident, choices, what: str, default: str) -> str:
    if ident is None:
        return default
    if ident.text.lower() not in choices:
        raise run.fail(ident, f"Unknown {what} {ident.text!r}.{closest(ident.text, choices)}"
                              f" {what.capitalize()}s: {listing(choices)}.")
    return ident.text.lower()


def _materialize(run, stage, value, context, models):
    layers = [run.layer(models[0], ident) for ident in stage.layers]
    images = run.images_of(stage, value)
    return run.call(stage, run.store.materialize, models[0], layers, images, progress=False)


def _attribute(run, stage, value, context, models):
    from odinlab.debug.attribution import Attributor, methods

    method = _option(run, stage.option, methods(), "method", "integrated_gradients")
    target = "prediction"
    if stage.value is not None:
        text = str(stage.value.value).lower()
        target = text if text in ("label", "prediction") else run.class_index(stage.value)
    attributor = run.call(stage, Attributor, run.store, models[0], method=method)
    return run.call(stage, attributor.attribute, run.images_of(stage, value), target=target, progress=False)


def _compare(run, stage, value, context, models):
    how = _option(run, stage.option, list(COMPARISONS), "comparison", "deltas")
    return run.call(stage, COMPARISONS[how], run.store, models[0], models[1], run.images_of(stage, value))


def _top_units(run, stage, value, context, models):
    from odinlab.sampling import top_units

    by = run.column(stage.option) if stage.option is not None else "label"
    return run.call(stage, top_units, run.store, models[0], context.layer, run.images_of(stage, value),
                    by=by, k=int(stage.number or 10))


def _explain(run, stage, value, context, models):
    from odinlab.debug.explain import explain

    layer = run.layer(models[0], stage.layer) if stage.layer is not None else None
    return run.call(stage, explain, run.store, models[0], run.images_of(stage, value), layer=layer)


def _error_clusters(run, stage, value, context, models):
    return run.call(stage, ea.error_clusters, run.store, models[0], context.layer, run.images_of(stage, value))


def _label_errors(run, stage, value, context, models):
    k = int(stage.number) if stage.number else None
    return run.call(stage, ea.label_errors, run.store, models[0], run.images_of(stage, value), k=k)


def _sample(run, stage, value, context, models):
    """A boundary-weighted sample of ``size`` (a share, or a count), and an estimate from it with error bars."""
    from odinlab import sampling

    what = _option(run, stage.option, ESTIMATES, "estimate", "accuracy")
    if what in ("units", "means") and context.layer is None:
        raise run.fail(stage, f"estimate {what} needs a layer: estimate {what} at LAYER.")
    size = stage.number if stage.number < 1 else int(stage.number)
    images = run.images_of(stage, value)
    sample = run.call(stage, sampling.boundary_sample, run.store, models[0], size, images, seed=0)
    store, model = run.store, models[0]
    # The sample knows the images it was drawn from: estimates take it alone (sample= or images, not both).
    if what == "accuracy":
        return run.call(stage, sampling.class_accuracy, store, model, sample=sample)
    if what == "confusion":
        return run.call(stage, sampling.confusion_counts, store, model, sample=sample)
    if what == "units":
        return run.call(stage, sampling.top_units, store, model, context.layer, sample=sample)
    return run.call(stage, sampling.class_means, store, model, context.layer, sample=sample)


def _influence(run, stage, value, context, models):
    """The training images most similar in gradient (at ``layer``) to each image before it."""
    from odinlab.debug.gradients import GradientStore

    queries = run.images_of(stage, value)
    pool = str(stage.value.value) if stage.value is not None else "train"
    grads = run.call(stage, GradientStore, run.store, models[0], context.layer)
    pool_images = run.call(stage.value or stage, run.store.select, pool)
    for images in (pool_images, queries):
        run.call(stage, grads.capture, images, progress=False)
    return run.call(stage, grads.most_similar, queries, pool_images, k=int(stage.number or 5))


def _embed(run, stage, value, context, models):
    from odinlab.sampling import Embedding

    reducer = _option(run, stage.option, ("umap", "pca"), "reducer", "umap")
    embedding = run.call(stage, Embedding, run.store, models[0], context.layer, reducer=reducer, seed=0,
                         progress=False)
    return run.call(stage, lambda: embedding.fit(run.images_of(stage, value)).frame())


def _confusion(run, stage, value, context, models):
    return run.call(stage, ea.confusion_matrix, run.store, models[0], run.images_of(stage, value))


def _maximize(run, stage, value, context, models):
    from odinlab.debug.maximize import Maximizer

    maximizer = run.call(stage, Maximizer, run.store, models[0], steps=stage.extra or 256)
    if stage.option.text == "class":
        return run.call(stage, maximizer.maximize, "class", unit=run.class_index(stage.value))
    if context.layer is None:
        raise run.fail(stage, "maximize ... unit N needs a layer: maximize MODEL layer LAYER unit N.")
    shape = run.store.architecture(models[0]).filter(pl.col("layer") == context.layer)["output_shape"][0]
    objective = "neuron" if len(shape) == 1 else "channel"
    return run.call(stage, maximizer.maximize, objective, context.layer, int(stage.number))


def _export(run, stage, value, context, models):
    from odinlab.reports import report

    chosen = models or context.models[-1:]
    if not chosen:
        raise run.fail(stage, "export report needs a model: export report 'path.html' for MODEL.")
    images = run.images_of(stage, value) if value is not None else "test"
    return run.call(stage, report, run.store, chosen if len(chosen) > 1 else chosen[0], stage.path, images=images)


def _show(run, stage, value, context, models):
    """``value`` as a table or in one of odinlab's widgets (models and layer from the pipeline if not named)."""
    widget = _option(run, stage.option, WIDGETS, "view", "table")
    if widget == "table":
        return _table(value)
    from odinlab import widgets

    chosen = models or context.models[-2:]
    if not chosen:
        raise run.fail(stage, f"show {widget} needs a model: show {widget} of MODEL.")
    has_images = value is None or isinstance(value, Selection) or (
        isinstance(value, pl.DataFrame) and "image_id" in value.columns)
    images = run.images_of(stage, value) if has_images or context.images is None else context.images
    store, model = run.store, chosen[0]
    if widget == "explore":
        layer = {"layer": context.layer} if context.layer else {}
        return run.call(stage, widgets.explore, store, model, images=images, progress=False, **layer)
    if widget == "gallery":
        return run.call(stage, widgets.GalleryView, store, model, images)
    if widget == "confusion":
        return run.call(stage, widgets.ConfusionView, store, model, images)
    if widget == "compare":
        if len(chosen) < 2:
            raise run.fail(stage, "show compare needs two models: show compare of MODEL and MODEL.")
        return run.call(stage, widgets.CompareView, store, chosen[0], chosen[1], images)
    if context.layer is None:
        raise run.fail(stage, "show units needs a layer: show units of MODEL at LAYER.")
    return run.call(stage, widgets.UnitView, store, model, context.layer, images=images)


def _table(value):
    """A polars frame of a result: a selection's rows, an Explanation's summary, a Sample's images."""
    if isinstance(value, Selection):
        return value.frame
    if hasattr(value, "summary") and isinstance(getattr(value, "summary"), pl.DataFrame):
        return value.summary
    if hasattr(value, "to_dataframe"):  # an xarray DataArray
        return pl.from_pandas(value.to_dataframe().reset_index())
    return value
