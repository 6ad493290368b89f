"""Benchmark: fitting the UMAP embedding of a layer versus reading it back from the store.

What is measured, in one process:

* Data: ``--sizes`` (default 10,000 and 100,000) synthetic 8×8 images in 10 clusters (a
  prototype plus noise each) ingested into a fresh directory store under ``$TMPDIR``; a
  ``SmallCNN(width=16)`` (random weights, seed 0: only timing matters) registered and its
  ``head.fc1`` (64 units, float16) materialized for all of them.
* ``fit_s``: ``Embedding(store, model, "head.fc1", pca=50, seed=0).fit(first n images)`` for
  each size: read activations, PCA 64→50, UMAP to 2-D (umap-learn, single-threaded because
  seeded, so deterministic). The first fit of the process also pays numba's compilation;
  a warm-up fit on 2,000 images runs first so that no size is charged for it.
* ``cached_s``: the same call on a new ``Embedding`` object: the stored coordinates are read.

Run from the repository root (about 3-5 minutes on 2 cores with the defaults):

    python bench/embedding.py
    python bench/embedding.py --sizes 10000     # quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import setup_torch

import odinlab
from odinlab.nets import SmallCNN
from odinlab.sampling import Embedding


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated numbers of points")
    parser.add_argument("--workdir", default=None, help="where to put the temporary store (default: $TMPDIR)")
    return parser.parse_args(argv)


def clustered_images(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0, 255, size=(10, 8, 8))
    labels = rng.integers(0, 10, n)
    images = np.clip(prototypes[labels] + rng.normal(0, 40, size=(n, 8, 8)), 0, 255).astype(np.uint8)
    return images, labels


def main(argv=None):
    args = parse_args(argv)
    setup_torch()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    workdir = tempfile.mkdtemp(prefix="odinlab-bench-embedding-", dir=args.workdir)
    try:
        store = odinlab.open_store(os.path.join(workdir, "store"), create=True)
        images, labels = clustered_images(max(sizes))
        store.ingest(images, labels=labels, classes=[str(i) for i in range(10)],
                     ids=[f"img-{i:06d}" for i in range(len(images))])
        net = SmallCNN(in_channels=1, num_classes=10, width=16)
        store.register_model(net, "net")
        store.materialize(net, ["head.fc1"], progress=False)
        ids = store.images["image_id"]

        start = time.perf_counter()
        Embedding(store, "net@1", "head.fc1", seed=0, progress=False).fit(ids.head(2000))
        warmup = time.perf_counter() - start
        print(f"warm-up fit on 2000 points (includes numba compilation): {warmup:.1f} s\n")
        print("| points | dims | UMAP fit (PCA 50 + UMAP) | cached read | fit / read |")
        print("| --- | --- | --- | --- | --- |")
        for n in sizes:
            subset = ids.head(n)
            start = time.perf_counter()
            emb = Embedding(store, "net@1", "head.fc1", seed=0, progress=False).fit(subset)
            fit_s = time.perf_counter() - start
            assert not emb.from_cache_
            start = time.perf_counter()
            again = Embedding(store, "net@1", "head.fc1", seed=0, progress=False).fit(subset)
            read_s = time.perf_counter() - start
            assert again.from_cache_ and np.array_equal(again.embedding_, emb.embedding_)
            print(f"| {n:,} | 64 | {fit_s:.1f} s | {read_s:.3f} s | {fit_s / read_s:.0f}x |", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
