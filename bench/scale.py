"""Benchmark: scale-out on Dask, and a store on object storage.

Measured over ``--n`` (10,240) images of ``odinlab.datasets.shapes`` (3×32×32) and a SmallCNN
(width 16, random weights: only timing matters here), each run on a fresh copy of the same store:

* materialize of 3 layers (``features.relu1`` and ``features.relu2`` pooled 4×4, ``head.relu``,
  float16) plus predictions, and Integrated Gradients (``--steps`` steps, maps stored), in
  - one process using both cores (torch 2 threads; attribution runs a thread per core),
  - one process using one core (torch 1 thread: what one worker has),
  - a ``distributed.LocalCluster`` of 2 worker processes × 1 thread (``scheduler=client``);
    the cluster is started, and its workers have run odinlab once on 64 other images, before the
    clock starts (a session starts its cluster once);
* the same materialize, one process, on a store at ``s3://`` served by moto on 127.0.0.1 (one
  request at a time, see tests/s3server.py) against the local folder: throughput ratio.

Each is run ``--repeat`` times (3), alternating, and the median is reported. Results are checked
equal between the runs (bit for bit for materialize). Headline last.

    python bench/scale.py                 # about 7 minutes on 2 cores
    python bench/scale.py --n 2048 --steps 4 --repeat 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import odinlab  # noqa: E402
from odinlab.debug.attribution import Attributor  # noqa: E402
from odinlab.nets import SmallCNN  # noqa: E402

LAYERS = ["features.relu1", "features.relu2", "head.relu"]
POOL = {"features.relu1": 4, "features.relu2": 4}


def base_store(folder: Path, n: int) -> tuple[Path, torch.nn.Module]:
    data = odinlab.datasets.shapes(n=n, size=32, seed=0)
    torch.manual_seed(0)
    net = SmallCNN(3, len(data.classes), width=16)
    store = odinlab.open_store(folder, create=True)
    store.ingest(data)
    store.register_model(net, "cnn")
    return folder, net


def warm_up(client, folder: Path, net) -> None:
    """A session starts its cluster once: its workers import odinlab, torch and Captum before the clock starts."""
    store = odinlab.open_store(folder, create=True)
    store.ingest(odinlab.datasets.shapes(n=64, size=32, seed=1))
    store.register_model(net, "cnn")
    materialize(store, client)
    attribute(store, 2, client)


def fresh_copy(base: Path, to: str, net) -> odinlab.Store:
    """A store holding the base's images and version, nothing computed (a local folder or an s3:// URL)."""
    if to.startswith("s3://"):
        import s3fs

        fs = s3fs.S3FileSystem()
        for path in base.rglob("*"):  # not the local writer lock's file: on S3 it would read as a lease
            if path.is_file() and not path.name.startswith(".lock"):
                fs.put_file(str(path), f"{to}/{path.relative_to(base).as_posix()}")
    else:
        shutil.copytree(base, to)
    store = odinlab.open_store(to)
    store.load_weights(net, "cnn@1")
    return store


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def materialize(store, scheduler="local"):
    return store.materialize("cnn@1", LAYERS, pool=POOL, dtype="float16", progress=False, scheduler=scheduler)


def attribute(store, steps: int, scheduler="local"):
    return Attributor(store, "cnn@1", "integrated_gradients", n_steps=steps).attribute(
        progress=False, scheduler=scheduler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_240)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the median is reported")
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    work = Path(tempfile.mkdtemp(prefix="odinlab-scale-"))
    base, net = base_store(work / "base", args.n)
    times, outputs = {}, {}
    copies = iter(range(1000))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.run(torch.set_num_threads, 1)
        warm_up(client, work / "warm", net)
        for _ in range(args.repeat):  # the runs alternate, so that a noisy moment hits all of them alike
            for label, threads, scheduler in [("1 process, 2 threads", 2, "local"), ("1 process, 1 thread", 1, "local"),
                                              ("LocalCluster 2 workers x 1 thread", 1, client)]:
                torch.set_num_threads(threads)
                store = fresh_copy(base, str(work / f"run{next(copies)}"), net)
                seconds, _ = timed(lambda: materialize(store, scheduler))
                outputs.setdefault("materialize", []).append(store.activations("cnn@1", "head.relu").values)
                times.setdefault(("materialize 3 layers", label), []).append(seconds)
                seconds, maps = timed(lambda: attribute(store, args.steps, scheduler))
                outputs.setdefault("ig", []).append(maps.values)
                times.setdefault((f"integrated gradients ({args.steps} steps)", label), []).append(seconds)
    rows = [(what, label, float(np.median(runs))) for (what, label), runs in times.items()]
    torch.set_num_threads(2)
    for got in outputs["materialize"][1:]:
        assert np.array_equal(got, outputs["materialize"][0]), "materialize differs between runs"
    for got in outputs["ig"][1:]:
        np.testing.assert_allclose(got, outputs["ig"][0], atol=1e-3 * np.abs(outputs["ig"][0]).max())

    from tests.s3server import moto_s3

    with moto_s3() as s3:
        store = fresh_copy(base, s3.url("scale"), net)
        s3_seconds, _ = timed(lambda: materialize(store))
    local_seconds = next(s for what, label, s in rows if what.startswith("materialize") and label.endswith("2 threads"))
    shutil.rmtree(work, ignore_errors=True)
    report(rows, args.n, local_seconds, s3_seconds)


def report(rows, n: int, local_seconds: float, s3_seconds: float) -> None:
    print(f"{'step':38} {'run':36} {'median s':>8} {'images/s':>9}")
    for what, label, seconds in rows:
        print(f"{what:38} {label:36} {seconds:8.2f} {n / seconds:9.0f}")
    print(f"{'materialize 3 layers':38} {'1 process, store on S3 (moto)':36} {s3_seconds:8.2f} {n / s3_seconds:9.0f}")
    print(f"\nlocal folder vs S3 server, materialize throughput: S3 runs at {local_seconds / s3_seconds:.2f}x "
          "the local folder's speed")
    for what in dict.fromkeys(w for w, _, _ in rows):
        times = {label: s for w, label, s in rows if w == what}
        cluster = times["LocalCluster 2 workers x 1 thread"]
        print(f"{what}: 2 workers vs 1 process of 1 thread {times['1 process, 1 thread'] / cluster:.2f}x, "
              f"vs 1 process of 2 threads {times['1 process, 2 threads'] / cluster:.2f}x")


if __name__ == "__main__":
    main()
