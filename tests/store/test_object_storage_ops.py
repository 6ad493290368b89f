"""Every store operation on a store at ``s3://`` (moto's S3 server on 127.0.0.1) gives a local folder's answer.

One module-scoped pair of stores is built by the same steps: digits ingested, a ``SmallCNN(1, 10, width=4)``
trained one epoch through each store (same seed), registered as ``cnn@1`` and its predictions and two layers
materialized. Each test runs one area's public calls on both stores and asserts that the S3 store answers
what the local folder answers (and, where it matters, what a new reader of the bucket sees). Nothing of
odinlab is mocked: the S3 store talks HTTP to the server through s3fs and Zarr.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

import odinlab  # noqa: E402
from odinlab.debug.attribution import Attributor  # noqa: E402
from odinlab.debug.gradients import GradientStore  # noqa: E402
from odinlab.debug.maximize import Maximizer  # noqa: E402
from odinlab.errors import ReadOnlyStoreError, StoreError, TestSetReuseWarning  # noqa: E402
from odinlab.nets import SmallCNN  # noqa: E402
from odinlab.sampling import Embedding, class_accuracy, class_means, uniform_sample  # noqa: E402
from odinlab.store import Store  # noqa: E402
from odinlab.training import fit  # noqa: E402
from tests.s3server import S3Server, moto_s3  # noqa: E402

LAYERS = ["features.relu2", "head.fc1"]
# Columns that name a moment: they differ between any two runs, never between S3 and a folder.
VOLATILE = ("created_at", "at")


def tiny() -> SmallCNN:
    return SmallCNN(1, 10, width=4)


@dataclass(frozen=True)
class Pair:
    """The same steps on S3 and on a local folder: ``stores`` is (s3, local), ``nets`` their trained cnn@1."""

    server: S3Server
    s3: Store
    local: Store
    nets: tuple

    @property
    def stores(self) -> tuple[Store, Store]:
        return self.s3, self.local


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.set_num_threads(1)
    with moto_s3() as server:
        stores, nets = [], []
        for where in (server.url("ops"), tmp_path_factory.mktemp("ops") / "local"):
            store = odinlab.open_store(where, create=True)
            store.ingest(odinlab.datasets.digits())
            torch.manual_seed(0)
            net = tiny()
            fit(net, store, "train", epochs=1, progress=False)  # reads its batches from the store
            store.register_model(net, "cnn", hyperparams={"lr": 0.01})
            store.materialize("cnn@1", LAYERS, progress=False)
            stores.append(store)
            nets.append(net)
        yield Pair(server, *stores, tuple(nets))


def stable(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame without the columns that name a moment."""
    return frame.drop([c for c in frame.columns if c in VOLATILE])


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


# -- the store itself ---------------------------------------------------------------------------

def test_an_s3_store_is_made_only_when_asked_and_then_found_by_every_reader(pair):
    url, bucket = pair.server.url("fresh"), pair.server.filesystem()
    with pytest.raises(StoreError, match="No odinlab store"):
        odinlab.open_store(url)
    assert not bucket.exists(url)  # a typo leaves nothing behind
    odinlab.open_store(url, create=True)
    with pytest.raises(StoreError, match="already exists"):
        odinlab.open_store(url, mode="w-")
    assert odinlab.open_store(url, mode="r").images.height == 0
    s3, local = (odinlab.open_store(store.url, mode="r").summary() for store in pair.stores)
    assert s3["url"] == pair.s3.url and s3["images"] == 1797
    assert {k: v for k, v in s3.items() if k not in ("url", "bytes_on_disk")} == \
        {k: v for k, v in local.items() if k not in ("url", "bytes_on_disk")}


def test_a_read_only_s3_store_refuses_every_write_and_changes_no_object(pair):
    bucket = pair.server.filesystem()
    before = {path: info["ETag"] for path, info in bucket.find(pair.s3.url, detail=True).items()}
    for store in pair.stores:
        reader = odinlab.open_store(store.url, mode="r")
        writes = [lambda: reader.ingest(np.zeros((1, 8, 8), np.uint8), labels=[0]),
                  lambda: reader.register_model(tiny(), "other"),
                  lambda: reader.record_experiment("cnn@1", kind="eval", test_images="val"),
                  lambda: reader.correct_labels(["digits-0000"], ["7"]),
                  lambda: reader.materialize("cnn@1", ["features.conv1"], progress=False)]
        for write in writes:
            with pytest.raises(ReadOnlyStoreError, match="read-only"):
                write()
        assert reader.images.height == 1797 and reader.models.height == store.refresh().models.height
    after = {path: info["ETag"] for path, info in pair.server.filesystem().find(pair.s3.url, detail=True).items()}
    assert after == before


def test_ingest_select_sql_and_thumbnails_on_s3_equal_the_folder(pair):
    s3, local = pair.stores
    fresh = odinlab.open_store(s3.url, mode="r")  # what another reader of the bucket sees
    assert_frame_equal(fresh.images, local.images)
    ids = local.images["image_id"].to_list()
    np.testing.assert_array_equal(fresh.pixels(ids), local.pixels(ids))
    np.testing.assert_array_equal(fresh.pixels(ids), odinlab.datasets.digits().images)
    forms = ["test", ["digits-0007", "digits-0042"], (pl.col("split") == "val") & (pl.col("label_name") == "3"),
             "SELECT image_id FROM images WHERE label >= 8 AND split = 'test'"]
    for form in forms:
        assert fresh.select(form).ids == local.select(form).ids and len(local.select(form)) > 0
    query = "SELECT split, label_name, COUNT(*) AS n FROM images GROUP BY ALL ORDER BY ALL"
    assert_frame_equal(fresh.sql(query), local.sql(query))
    some = local.select("test").ids[:5]
    assert fresh.thumbnails(some, size=32) == local.thumbnails(some, size=32)
    # A failing ingest (wrong image shape) leaves the bucket's store as it was.
    bigger = np.random.default_rng(0).integers(0, 256, (2, 16, 16), dtype=np.uint8)
    with pytest.raises(odinlab.ImageFormatError, match=r"holds \(1, 8, 8\) .* these are \(1, 16, 16\)"):
        s3.ingest(bigger, labels=[0, 1], ids=["big-0", "big-1"])
    assert_frame_equal(odinlab.open_store(s3.url, mode="r").images, local.images)
    assert s3.pixel_array.shape == local.pixel_array.shape


# -- models and experiments -----------------------------------------------------------------------

def test_versions_weights_lineage_and_architecture_on_s3_equal_the_folder(pair):
    tuned = []
    for store, net in zip(pair.stores, pair.nets):
        module = store.load_weights(tiny(), "cnn@1")
        assert_same_weights(module, net)
        module.features.requires_grad_(False)
        fit(module, store, "train", epochs=1, lr=0.003, seed=1, progress=False)
        assert store.register_model(module, "tuned", parent="cnn@1", hyperparams={"lr": 0.003}) == "tuned@1"
        tuned.append(module)
    assert_same_weights(*tuned)
    s3, local = (odinlab.open_store(store.url) for store in pair.stores)  # new sessions: weights only
    assert_same_weights(s3.load_weights(tiny(), "tuned@1"), tuned[1])
    assert s3.lineage("tuned@1") == local.lineage("tuned@1")
    assert s3.lineage("tuned@1") == ["cnn@1", "tuned@1"]
    assert_frame_equal(stable(s3.ancestors("tuned@1")), stable(local.ancestors("tuned@1")))
    assert s3.ancestors("tuned@1")["model_id"].to_list() == ["cnn@1"]
    assert "tuned@1" in s3.descendants("cnn@1")["model_id"].to_list()
    assert_frame_equal(s3.architecture("tuned@1"), local.architecture("tuned@1"))
    assert_frame_equal(stable(s3.models), stable(local.models))
    # Frozen layers are stored once: the same content-addressed weights files on S3 as on disk.
    assert s3.size_on_disk("weights") == local.size_on_disk("weights")


def test_experiments_and_evaluation_on_s3_equal_the_folder(pair):
    made = []
    for store, net in zip(pair.stores, pair.nets):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TestSetReuseWarning)
            evaluated = store.evaluate(net, "val", hyperparams={"note": "s3-ops"})
        run = store.record_experiment("cnn@1", kind="train", train_images="train", test_images="val",
                                      hyperparams={"epochs": 1}, metrics={"accuracy": 0.5})
        made.append((evaluated, run))
    (s3_eval, s3_run), (local_eval, local_run) = made
    assert_frame_equal(stable(s3_eval), stable(local_eval))
    s3, local = (odinlab.open_store(store.url, mode="r") for store in pair.stores)
    for store, run in ((s3, s3_run), (local, local_run)):
        row = store.experiments.filter(pl.col("experiment_id") == run).row(0, named=True)
        assert set(store.image_sets.filter(pl.col("set_id") == row["train_set"])["image_id"]) == \
            set(store.select("train").ids)
    assert_frame_equal(stable(s3.metrics()), stable(local.metrics()))


# -- materialized results and debugging ---------------------------------------------------------

def test_materialize_activations_predictions_on_s3_equal_the_folder(pair):
    reports = [store.materialize("cnn@1", ["features.pool"], "val", dtype="uint8", progress=False)
               for store in pair.stores]
    assert_frame_equal(reports[0], reports[1])
    again = pair.s3.materialize("cnn@1", ["features.pool"], "val", dtype="uint8", progress=False)
    assert again["computed"].sum() == 0  # stored on S3: the second call computes nothing
    s3, local = odinlab.open_store(pair.s3.url, mode="r"), pair.local
    for layer in LAYERS:
        np.testing.assert_array_equal(s3.activations("cnn@1", layer).values, local.activations("cnn@1", layer).values)
    got, want = s3.activations("cnn@1", "features.pool", "val"), local.activations("cnn@1", "features.pool", "val")
    np.testing.assert_array_equal(got.values, want.values)
    assert list(got["image_id"].values) == local.select("val").ids
    lazy = s3.activations("cnn@1", "head.fc1", lazy=True)
    np.testing.assert_array_equal(np.asarray(lazy.data.compute()), local.activations("cnn@1", "head.fc1").values)
    assert_frame_equal(s3.predictions("cnn@1"), local.predictions("cnn@1"))
    assert_frame_equal(s3.materialized(), local.materialized())
    query = "SELECT label_name, AVG(margin) AS m FROM predictions WHERE NOT correct GROUP BY ALL ORDER BY ALL"
    assert_frame_equal(s3.sql(query), local.sql(query))


def test_saliency_and_integrated_gradients_on_s3_equal_the_folder(pair):
    for method, options in (("saliency", {}), ("integrated_gradients", {"n_steps": 8})):
        got, want = (Attributor(store, "cnn@1", method, **options).attribute("test", progress=False)
                     for store in pair.stores)
        scale = float(np.abs(want.values).max())
        np.testing.assert_allclose(got.values, want.values, atol=1e-6 * scale)
        assert list(got["image_id"].values) == pair.local.select("test").ids
        cached = Attributor(pair.s3, "cnn@1", method, **options).attribute("test", progress=False)
        np.testing.assert_array_equal(cached.values, got.values)  # read back from the bucket


def test_gradient_capture_and_influence_on_s3_equal_the_folder(pair):
    reports, influences = [], []
    train, test = pair.local.select("train").ids[:300], pair.local.select("test").ids[:40]
    for store in pair.stores:
        grads = GradientStore(store, "cnn@1", ["head.fc1", "head.fc2"])
        reports.append(pl.concat([grads.capture(train, progress=False), grads.capture(test, progress=False)]))
        influences.append(grads.influence(test[:10], train))  # TracIn with cnn@1's recorded lr
    assert_frame_equal(reports[0], reports[1])
    assert reports[0]["computed"].to_list() == [300, 300, 40, 40]
    np.testing.assert_allclose(influences[0].values, influences[1].values, rtol=1e-5,
                               atol=1e-6 * float(np.abs(influences[1].values).max()))
    assert influences[0].shape == (10, 300) and np.abs(influences[0].values).max() > 0
    s3 = odinlab.open_store(pair.s3.url, mode="r")
    np.testing.assert_allclose(GradientStore(s3, "cnn@1", ["head.fc2"]).norms(test).values,
                               GradientStore(pair.local, "cnn@1", ["head.fc2"]).norms(test).values, rtol=1e-6)


def test_maximization_on_s3_equals_the_folder_and_is_kept_there(pair):
    got, want = (Maximizer(store, "cnn@1", steps=8, seed=0).maximize("class", unit=3) for store in pair.stores)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert pair.s3.results.group("cnn@1", "debug", "maximize") is not None  # cached in the bucket
    np.testing.assert_array_equal(Maximizer(pair.s3, "cnn@1", steps=8, seed=0).maximize("class", unit=3), got)


def test_embedding_and_sampling_queries_on_s3_equal_the_folder(pair):
    answers = []
    for store in pair.stores:
        frame = Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val").frame()
        sample = uniform_sample(store, "cnn@1", 0.3, "val", seed=0)
        answers.append((frame, sample, class_means(store, "cnn@1", "head.fc1", sample=sample),
                        class_accuracy(store, "cnn@1", sample=sample), class_means(store, "cnn@1", "head.fc1", "val")))
    (frame, sample, means, accuracy, exact), (l_frame, l_sample, l_means, l_accuracy, l_exact) = answers
    assert frame.height == 269
    assert_frame_equal(frame, l_frame, check_exact=False, rel_tol=1e-5, abs_tol=1e-5)
    assert sample.image_ids.to_list() == l_sample.image_ids.to_list() and len(sample) == round(0.3 * 269)
    assert_frame_equal(means, l_means, check_exact=False, rel_tol=1e-5, abs_tol=1e-6)
    assert_frame_equal(accuracy, l_accuracy)
    assert_frame_equal(exact, l_exact, check_exact=False, rel_tol=1e-5, abs_tol=1e-6)


def test_cross_validation_on_s3_equals_the_folder(pair):
    def one_epoch(module, store, images):
        fit(module, store, images, epochs=1, progress=False)

    runs = []
    for store in pair.stores:
        torch.manual_seed(0)
        runs.append(store.cross_validate(tiny, "val", folds=2, fit=one_epoch, name="s3ops", progress=False))
    s3, local = runs
    assert s3.model_id == local.model_id and len(s3.fold_models) == 2
    assert_frame_equal(s3.assignment, local.assignment)
    assert_frame_equal(s3.folds, local.folds, check_exact=False, rel_tol=1e-5)
    fresh = odinlab.open_store(pair.s3.url, mode="r")
    got, want = fresh.predictions(s3.model_id, "val"), pair.local.predictions(local.model_id, "val")
    assert got["held_out"].all() and set(got["predicted_by"]) == set(s3.fold_models)
    np.testing.assert_allclose(np.stack(got["probabilities"].to_numpy()), np.stack(want["probabilities"].to_numpy()),
                               rtol=1e-5, atol=1e-6)


# -- labels, cached results, damage ---------------------------------------------------------------

def test_label_corrections_undo_and_label_sets_on_s3_equal_the_folder(pair):
    ids = pair.local.select("test").ids[:3]
    for store in pair.stores:
        store.correct_labels(ids[:2], ["7", "1"], label_set="s3ops", note="seen by eye")
        store.correct_labels(ids[2:], ["4"], label_set="s3ops")
        store.undo_correction(label_set="s3ops")  # takes back the last one
    s3, local = (odinlab.open_store(store.url, mode="r") for store in pair.stores)
    got, want = s3.label_set("s3ops"), local.label_set("s3ops")
    assert_frame_equal(got, want)
    changed = got.filter(pl.col("image_id").is_in(ids)).sort("image_id")
    assert dict(zip(changed["image_id"], changed["label_name"])) == {ids[0]: "7", ids[1]: "1",
                                                                     ids[2]: local.images.filter(
                                                                         pl.col("image_id") == ids[2])["label_name"][0]}
    mine = pl.col("label_set") == "s3ops"
    assert_frame_equal(stable(s3.label_corrections.filter(mine)), stable(local.label_corrections.filter(mine)))


def test_cached_result_tables_are_computed_once_and_read_back_from_s3(pair):
    calls = []

    def compute():
        calls.append(1)
        return pl.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})

    first = pair.s3.results.table("cnn@1", "s3ops", {"k": 1}, compute)
    local = pair.local.results.table("cnn@1", "s3ops", {"k": 1}, compute)
    again = odinlab.open_store(pair.s3.url, mode="r").results.table("cnn@1", "s3ops", {"k": 1}, compute)
    assert len(calls) == 2  # once per store: the new reader of the bucket read it
    assert_frame_equal(again, first)
    assert_frame_equal(first, local)


def test_verify_finds_a_deleted_chunk_object_on_s3_as_on_a_folder(pair, tmp_path):
    problems = []
    for where in (pair.server.url("damaged"), tmp_path / "damaged"):
        store = odinlab.open_store(where, create=True)
        store.ingest(odinlab.datasets.digits())
        store.register_model(pair.nets[1], "cnn")
        store.materialize("cnn@1", ["head.fc1"], progress=False)
        assert store.verify().height == 0
        chunk = "arrays/models/cnn/v1/layers/head.fc1/float16/values/c/1/0"
        filesystem = pair.server.filesystem() if str(where).startswith("s3://") else None
        if filesystem is None:
            (tmp_path / "damaged" / chunk).unlink()
        else:
            filesystem.rm(f"{where}/{chunk}")
        problems.append(odinlab.open_store(where, mode="r").verify())
    got, want = problems
    assert got.height == 1 and got["what"].to_list() == ["chunk"] and "missing" in got["error"][0]
    assert_frame_equal(got, want)


# -- what a user looks at -------------------------------------------------------------------------

def test_the_html_report_of_an_s3_store_matches_the_folder_s(pair, tmp_path):
    options = {"images": "test", "embedding": "pca", "attribution": "saliency", "max_steps": 8, "units": 2, "k": 6}
    pages = [odinlab.report(store, "cnn@1", tmp_path / f"{name}.html", **options).read_text(encoding="utf-8")
             for name, store in zip(("s3", "local"), pair.stores)]
    for name in ("confident-mistakes",):
        got, want = (re.findall(r'data-id="([^"]*)"', page.split(f'data-block="{name}"')[1].split("</section>")[0])
                     for page in pages)
        assert got == want and got
    sections = [re.findall(r'<section id="([^"]+)"', page) for page in pages]
    assert sections[0] == sections[1] and "mistakes" in sections[0]


def test_the_explorer_opens_on_an_s3_store_with_the_folder_s_selection(pair):
    explorers = [odinlab.explore(store, "cnn@1", layer="head.fc1", images="test", embedding={"reducer": "pca"},
                                 progress=False) for store in pair.stores]
    for explorer in explorers:
        explorer.select("label = 3 AND NOT correct")
    s3, local = explorers
    assert s3.selection == local.selection
    assert_frame_equal(s3.selected(), local.selected())
