"""Many Dask workers write one store at once, on a local folder and on S3 (moto's server on 127.0.0.1).

A real ``distributed.LocalCluster`` of three worker processes (one thread each), started inside the
S3 server's context so that its workers inherit the environment that points boto at the server.
The workers meet at a barrier (a file per worker in a shared folder), so that their writes overlap,
then each ingests its own images in several commits, registers model versions, records experiments
and corrects labels. Afterwards every row is present exactly once and holds what its worker wrote.
Then three workers materialize three different layers of one version at once: every array is whole
and equal to a single local run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
pytest.importorskip("distributed")

import odinlab  # noqa: E402
from tests.s3server import moto_s3  # noqa: E402

WORKERS = 3
N, PARTS, VERSIONS = 48, 3, 2  # images per worker, ingest commits per worker, versions per worker
CLASSES = [str(i) for i in range(10)]
LAYERS = ["features.relu1", "features.pool", "head.fc1"]  # one per worker



@pytest.fixture(scope="module")
def cluster():
    """(S3 server, Dask client): the cluster is started inside the server's context."""
    from distributed import Client, LocalCluster

    with moto_s3() as server, LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                           dashboard_address=":0") as running, Client(running) as client:
        client.run(torch.set_num_threads, 1)
        yield server, client


@pytest.fixture(params=["local", "s3"])
def where(request, cluster, tmp_path):
    """A new store's URL: a local folder, or a fresh place in the S3 server's bucket."""
    return str(tmp_path / "store") if request.param == "local" else cluster[0].url("writers")


# -- what the workers do (module level, so that the workers import them by name) ------------------

def _net(seed: int):
    from odinlab.nets import SmallCNN

    torch.manual_seed(seed)
    return SmallCNN(1, 10, width=4)


def _images_of(k: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    images = np.random.default_rng(300 + k).integers(0, 256, (N, 8, 8), dtype=np.uint8)
    return images, [f"w{k}-{i:03d}" for i in range(N)], (np.arange(N) + k) % 10


def _meet(folder: str, name: str, k: int) -> None:
    """Wait until every worker reached this point, so that what follows overlaps."""
    (Path(folder) / f"{name}-{k}.ready").touch()
    deadline = time.monotonic() + 60
    while len(list(Path(folder).glob(f"{name}-*.ready"))) < WORKERS:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only some workers reached {name!r}")
        time.sleep(0.005)


def _write_everything(url: str, folder: str, k: int) -> dict:
    """Worker ``k``: its images in PARTS commits, VERSIONS versions with a training run each, two label fixes."""
    store = odinlab.open_store(url, lock_timeout=120)
    images, ids, labels = _images_of(k)
    _meet(folder, "ingest", k)
    started = time.time()
    for part in range(PARTS):
        rows = slice(part * N // PARTS, (part + 1) * N // PARTS)
        store.ingest(images[rows], labels=labels[rows], classes=CLASSES, ids=ids[rows], split=f"w{k}")
    ingested = time.time()
    _meet(folder, "models", k)
    versions, runs = [], []
    for v in range(VERSIONS):
        versions.append(store.register_model(_net(100 * k + v), "race", parent="base@1", hyperparams={"k": k}))
        runs.append(store.record_experiment(versions[-1], kind="train", train_images=ids, hyperparams={"k": k}))
    _meet(folder, "labels", k)
    fixes = [store.correct_labels([ids[j]], [CLASSES[(labels[j] + 5) % 10]], label_set="race", note=f"w{k}")[0]
             for j in range(2)]
    return {"k": k, "versions": versions, "runs": runs, "fixes": fixes, "ingesting": (started, ingested)}


def _materialize(url: str, folder: str, k: int, layer: str):
    """Worker ``k`` materializes one layer of base@1 (and the predictions, like every worker) on its own."""
    store = odinlab.open_store(url, lock_timeout=120)
    store.load_weights(_net(0), "base@1")  # the network's class travels as code; its weights from the store
    _meet(folder, "materialize", k)
    return store.materialize("base@1", [layer], progress=False, batch_size=256)


# -- the tests ----------------------------------------------------------------------------------

def test_three_workers_writing_one_store_at_once_leave_every_row_once_and_right(cluster, where, tmp_path):
    _, client = cluster
    store = odinlab.open_store(where, create=True)
    store.register_model(_net(7), "base", input_shape=(1, 8, 8))
    futures = [client.submit(_write_everything, where, str(tmp_path), k, pure=False, workers=[address])
               for k, address in enumerate(sorted(client.scheduler_info()["workers"]))]
    done = client.gather(futures)
    starts, ends = zip(*(d["ingesting"] for d in done))
    assert max(starts) < min(ends)  # the workers were writing at the same time

    store = odinlab.open_store(where, mode="r")
    images = store.images
    assert images.height == WORKERS * N and images["image_id"].n_unique() == WORKERS * N
    assert store.pixel_array.shape[0] == WORKERS * N
    for k in range(WORKERS):
        pixels, ids, labels = _images_of(k)
        np.testing.assert_array_equal(store.pixels(ids)[:, 0], pixels, err_msg=f"pixels of worker {k}")
        mine = images.filter(pl.col("image_id").is_in(ids)).sort("image_id")
        assert mine["label"].to_list() == labels.tolist() and set(mine["split"]) == {f"w{k}"}

    race = store.models.filter(pl.col("name") == "race").sort("version")
    assert race["model_id"].to_list() == [f"race@{v}" for v in range(1, WORKERS * VERSIONS + 1)]
    assert set(race["parent"]) == {"base@1"}
    for d in done:
        for v, model_id in enumerate(d["versions"]):  # each version holds its worker's weights
            assert store.model_id_of(_net(100 * d["k"] + v)) == model_id

    runs = store.experiments
    assert runs["experiment_id"].n_unique() == runs.height == WORKERS * VERSIONS
    for d in done:
        _, ids, _ = _images_of(d["k"])
        for model_id, run in zip(d["versions"], d["runs"], strict=True):
            row = runs.filter(pl.col("experiment_id") == run).row(0, named=True)
            assert row["model_id"] == model_id and row["n_train"] == N
            assert sorted(store.image_sets.filter(pl.col("set_id") == row["train_set"])["image_id"]) == ids

    fixes = store.label_corrections
    assert fixes["correction_id"].n_unique() == fixes.height == 2 * WORKERS
    assert sorted(fixes["correction_id"]) == sorted(c for d in done for c in d["fixes"])
    relabelled = store.label_set("race").filter(pl.col("corrected"))
    for k in range(WORKERS):
        _, ids, labels = _images_of(k)
        got = relabelled.filter(pl.col("image_id").is_in(ids)).sort("image_id")
        assert got["image_id"].to_list() == ids[:2]
        assert got["label"].to_list() == [(labels[j] + 5) % 10 for j in range(2)]
        assert set(fixes.filter(pl.col("image_id").is_in(ids))["note"]) == {f"w{k}"}
    assert store.verify().height == 0


def test_three_workers_materializing_three_layers_of_one_version_at_once_equal_one_local_run(
        cluster, where, tmp_path):
    _, client = cluster
    digits = odinlab.datasets.digits()
    expected = odinlab.open_store(tmp_path / "alone", create=True)  # the same steps, in this process
    for store in (odinlab.open_store(where, create=True), expected):
        store.ingest(digits)
        store.register_model(_net(0), "base")
    expected.materialize("base@1", LAYERS, progress=False)
    futures = [client.submit(_materialize, where, str(tmp_path), k, layer, pure=False, workers=[address])
               for k, (layer, address) in enumerate(zip(LAYERS, sorted(client.scheduler_info()["workers"])))]
    reports = client.gather(futures)
    assert sum(r.filter(pl.col("array") != "predictions")["computed"].sum() for r in reports) == 3 * 1797

    store = odinlab.open_store(where, mode="r")
    for layer in LAYERS:
        np.testing.assert_array_equal(store.activations("base@1", layer).values,
                                      expected.activations("base@1", layer).values, err_msg=layer)
    np.testing.assert_array_equal(np.stack(store.predictions("base@1")["probabilities"].to_numpy()),
                                  np.stack(expected.predictions("base@1")["probabilities"].to_numpy()))
    done = store.materialized("base@1")
    assert done.height == 1 + len(LAYERS) and (done["images"] == 1797).all()
    assert store.verify().height == 0
