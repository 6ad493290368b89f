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
    store.materialize(net, ["features.relu2", LAYER], progress=False)
    prepare(store, net)
    return path, net


def prepare(store, net):
    """Cache what read-only queries need (a read-only store computes nothing it would have to keep)."""
    from odinlab.debug.attribution import Attributor

    Attributor(store, net, method="saliency").attribute("val")


def forms(store):
    """Five ways of naming the validation images whose label is 3, and what they must select."""
    ids = store.images.filter((pl.col("split") == "val") & (pl.col("label") == 3))["image_id"].to_list()
    return ids, {
        "ids": ids,
        "sql": "SELECT image_id FROM images WHERE split = 'val' AND label = 3",
        "selection": store.select(ids),
        "expression": (pl.col("split") == "val") & (pl.col("label") == 3),
        "frame": store.images.filter(pl.col("image_id").is_in(ids)),
    }


def queries(net):
    """Public queries as (name, call(store, images)); each returns something comparable."""
    from odinlab.debug.attribution import Attributor

    return {
        "select": lambda s, im: s.select(im).ids,
        "pixels": lambda s, im: s.pixels(im),
        "predictions": lambda s, im: s.predictions("cnn@1", im).drop("probabilities"),
        "activations": lambda s, im: s.activations("cnn@1", LAYER, im),
        "thumbnails": lambda s, im: s.thumbnails(im, size=16),
        "attribute": lambda s, im: Attributor(s, net, method="saliency").attribute(im),
    }


def same(a, b) -> bool:
    if isinstance(a, pl.DataFrame):
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
