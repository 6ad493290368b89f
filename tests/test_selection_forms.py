"""Every public query takes every form of image selection, on a read-only store, and an error
leaves the store byte-for-byte as it was.

One store is built once (digits, a CNN, its predictions, activations, an attribution), then
opened read-only; each query runs with a split name, a list of ids, a SQL WHERE query, a
selection value and a polars expression that all name the same images, and must give the
same answer each time. Then each query is given bad input and must raise an odinlab error
without changing one byte on disk.
"""

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import xarray as xr

import odinlab
from odinlab.nets import SmallCNN
from odinlab.training import fit

LAYER = "head.fc1"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A digits store with one trained, materialized model (module-scoped: built once)."""
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("forms") / "store"
    store = odinlab.open_store(path, create=True)
    store.ingest(odinlab.datasets.digits())
    net = SmallCNN(1, 10, width=8)
    fit(net, store, "train", epochs=3, progress=False)
    store.register_model(net, "cnn")
    other = store.load_weights(SmallCNN(1, 10, width=8), "cnn@1")
    fit(other, store, "train", epochs=1, lr=0.003, seed=1, progress=False)
    store.register_model(other, "cnn", parent="cnn@1")
    for module in (net, other):
        store.materialize(module, ["features.relu2", LAYER], progress=False)
    prepare(store, net)
    return path, net


def prepare(store, net):
    """Store what read-only queries read (a read-only store keeps nothing it computes)."""
    from odinlab.debug.attribution import Attributor
    from odinlab.debug.gradients import GradientStore

    Attributor(store, net, method="saliency").attribute("val")
    GradientStore(store, net, ["head.fc2"]).capture("val", progress=False)


def forms(store):
    """Five ways of naming the validation images of classes 0-4, and what they must select."""
    ids = store.images.filter((pl.col("split") == "val") & (pl.col("label") <= 4))["image_id"].to_list()
    return ids, {
        "ids": ids,
        "sql": "SELECT image_id FROM images WHERE split = 'val' AND label <= 4",
        "selection": store.select(ids),
        "expression": (pl.col("split") == "val") & (pl.col("label") <= 4),
        "frame": store.images.filter(pl.col("image_id").is_in(ids)),
    }


def queries(net):
    """Public queries as (name, call(store, images)); each returns something comparable."""
    from odinlab.debug import compare, units
    from odinlab.debug import error_analysis as ea
    from odinlab.debug.attribution import Attributor, mean_by_confusion, share_inside
    from odinlab.debug.gradients import GradientStore
    from odinlab.debug.maximize import Maximizer
    from odinlab.sampling import (Embedding, boundary_sample, class_accuracy, class_means, confusion_counts,
                                  top_units, uniform_sample)

    saliency = lambda s: Attributor(s, net, method="saliency")  # noqa: E731
    return {
        "select": lambda s, im: s.select(im).ids,
        "pixels": lambda s, im: s.pixels(im),
        "predictions": lambda s, im: s.predictions("cnn@1", im).drop("probabilities"),
        "activations": lambda s, im: s.activations("cnn@1", LAYER, im),
        "thumbnails": lambda s, im: s.thumbnails(im, size=16),
        "attribute": lambda s, im: saliency(s).attribute(im),
        "mean_by_confusion": lambda s, im: mean_by_confusion(saliency(s), im),
        "share_inside": lambda s, im: share_inside(saliency(s), im, box=(0, 0, 4, 4)),
        "confusion_matrix": lambda s, im: ea.confusion_matrix(s, "cnn@1", im),
        "per_class_metrics": lambda s, im: ea.per_class_metrics(s, "cnn@1", im),
        "hardness": lambda s, im: ea.hardness(s, "cnn@1", im),
        "confident_mistakes": lambda s, im: ea.confident_mistakes(s, "cnn@1", im, k=5),
        "label_errors": lambda s, im: ea.label_errors(s, "cnn@1", im),
        "error_exemplars": lambda s, im: ea.error_exemplars(s, "cnn@1", LAYER, im),
        "agreement": lambda s, im: compare.agreement(s, "cnn@1", "cnn@2", im),
        "class_deltas": lambda s, im: compare.class_deltas(s, "cnn@1", "cnn@2", im),
        "disagreements": lambda s, im: compare.disagreements(s, "cnn@1", "cnn@2", im),
        "cka_matrix": lambda s, im: compare.cka_matrix(s, "cnn@1", "cnn@2", [LAYER], [LAYER], im),
        "top_images": lambda s, im: units.top_images(s, "cnn@1", LAYER, im, k=3),
        "unit_scores": lambda s, im: units.unit_scores(s, "cnn@1", LAYER, im),
        "maximizer_top_images": lambda s, im: Maximizer(s, net).top_images("class", None, 2, im, k=3),
        "gradient_norms": lambda s, im: GradientStore(s, net, ["head.fc2"]).norms(im),
        "class_accuracy": lambda s, im: class_accuracy(s, "cnn@1", im),
        "confusion_counts": lambda s, im: confusion_counts(s, "cnn@1", im),
        "class_means": lambda s, im: class_means(s, "cnn@1", LAYER, im),
        "top_units": lambda s, im: top_units(s, "cnn@1", LAYER, im, k=3),
        "uniform_sample": lambda s, im: uniform_sample(s, None, 20, im, seed=0).image_ids,
        "boundary_sample": lambda s, im: boundary_sample(s, "cnn@1", 60, im, seed=0).image_ids,
        "embedding": lambda s, im: Embedding(s, "cnn@1", LAYER, reducer="pca").fit(im).frame(),
    }


def same(a, b) -> bool:
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, pl.DataFrame):
        return a.equals(b)
    if isinstance(a, pl.Series):
        return a.equals(b)
    if isinstance(a, xr.DataArray):
        return a.identical(b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def digest(path: Path) -> str:
    """One hash of every file's name and bytes under ``path``."""
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode())
        h.update(file.read_bytes())
    return h.hexdigest()


def test_every_query_gives_one_answer_for_every_form_of_selection(built):
    path, net = built
    store = odinlab.open_store(path, mode="r")
    ids, named = forms(store)
    assert len(ids) > 10
    for name, query in queries(net).items():
        answers = {form: query(store, images) for form, images in named.items()}
        first = answers["ids"]
        for form, answer in answers.items():
            assert same(answer, first), f"{name} with {form} differs from {name} with ids"


BAD = {
    "an unknown split": ("tset", odinlab.UnknownImageError),
    "an unknown id": (["digits-0000", "no-such-image"], odinlab.UnknownImageError),
    "a query without image_id": ("SELECT label FROM images", odinlab.UnknownImageError),
    "an unknown column": (pl.col("agee") > 3, odinlab.UnknownColumnError),
    "not a selection": (3.5, odinlab.SelectionError),
}


@pytest.mark.parametrize("bad", BAD, ids=list(BAD))
def test_bad_selections_raise_and_change_nothing(built, bad):
    path, net = built
    images, error = BAD[bad]
    before = digest(path)
    store = odinlab.open_store(path, mode="r")
    for name, query in queries(net).items():
        with pytest.raises(error):
            query(store, images)
    assert digest(path) == before
