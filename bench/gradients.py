"""Benchmark: per-sample gradients kept compactly (prefix + suffix, MetaStore) versus full gradients (CPU).

What is measured, all in one process (ratios matter, the machine is noisy). The baseline is the
common practice: per-sample gradients computed with ``torch.func`` (``vmap(grad(...))`` over
``functional_call``, loss = cross-entropy against the label), flattened (weight then bias) and stored
as float32 Zarr arrays with odinlab's compressor (Blosc zstd-1 + shuffle) and ~1 MiB row chunks.
odinlab's side is ``GradientStore(store, net, layers, form="compact").capture(...)`` into a local
store (float32). Bytes on disk are ``du`` of each side's arrays (odinlab's include its ``done`` and
``error`` masks). Models have random initial weights (seed 0; sizes and timings do not depend on
training), inputs are ``odinlab.datasets.shapes`` images (3×32×32, 5 classes).

1. ``head512``: a small CNN (conv 3→64 s2, conv 64→512 s2, global average pool) with a
   Linear(512→10) head, ``--n`` (1,000) images: bytes of the head's full gradients / compact form.
   Target >= 9×. Per image: 5,130 numbers full, 522 compact.
2. ``head2048``: the same stem widened to 2,048 channels feeding Linear(2048→1000), ``--n-large``
   (48) images (the full gradients are 8 MB per image): bytes ratio. Target >= 500× (2,049,000
   numbers full, 3,048 compact).
3. ``similarity``: the 1,000 × 1,000 gradient dot-product matrix over the two Linear layers of the
   benchmarks' ``common.BenchCNN`` head (fc1 256→256, fc2 256→5) for ``--n`` images, both read
   from the store in the same run: from the stored full gradients (read the arrays, one matrix
   product per layer) versus ``GradientStore.similarity`` on the compact form ((a_i·a_j + 1)(g_i·g_j),
   bias included). Best of ``--repeats`` (3) each; the two matrices are checked to agree. Target
   >= 20× faster. The same timing is printed for the head512 layer (information).

torch uses ``common.THREADS`` (2) threads on every side. Run from the repository root (about a
minute on 2 cores with the defaults):

    python bench/gradients.py
    python bench/gradients.py --n 300 --n-large 16     # quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import zarr
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BenchCNN, make_data, mb, open_bench_store, setup_torch, timed

from odinlab.debug.gradients import GradientStore
from odinlab.store.arrays import CHUNK_BYTES, COMPRESSOR


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="images for cases 1 and 3 (default 1000)")
    parser.add_argument("--n-large", type=int, default=48, help="images for the Linear(2048→1000) case (default 48)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per side, best kept (default 3)")
    parser.add_argument("--workdir", default=None, help="where to put the temporary stores (default: $TMPDIR)")
    return parser.parse_args(argv)


class StemHead(nn.Module):
    """conv(3→64, s2) relu conv(64→width, s2) relu gap | flatten fc(width→classes)."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(64, width, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential()
        self.head.add_module("flatten", nn.Flatten())
        self.head.add_module("fc", nn.Linear(width, classes))

    def forward(self, x):
        return self.head(self.features(x))


def full_gradients(net, store, ids, layers, zroot, batch=50):
    """The baseline: torch.func per-sample gradients of ``layers`` stored as float32 Zarr arrays."""
    params = {k: v.detach() for k, v in net.named_parameters()}
    wanted = {layer: [k for k in (f"{layer}.weight", f"{layer}.bias") if k in params] for layer in layers}
    keys = [k for ks in wanted.values() for k in ks]
    fixed = {k: v for k, v in params.items() if k not in keys}

    def loss(chosen, x, y):
        return F.cross_entropy(functional_call(net, {**fixed, **chosen}, (x[None],)), y[None], reduction="sum")

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    arrays = {}
    for layer, ks in wanted.items():
        width = sum(params[k].numel() for k in ks)
        rows = int(np.clip(CHUNK_BYTES // (4 * width), 1, 8192))
        arrays[layer] = zroot.create_array(layer, shape=(len(ids), width), chunks=(rows, width), dtype="float32",
                                           compressors=COMPRESSOR, fill_value=0)
    net.eval()
    labels = store.select(ids)["label"].to_numpy().copy()
    for start in range(0, len(ids), batch):
        part = ids[start : start + batch]
        x = torch.from_numpy(store.pixels(part).astype(np.float32) / 255.0)
        y = torch.from_numpy(labels[start : start + batch])
        grads = per_sample({k: params[k] for k in keys}, x, y)
        for layer, ks in wanted.items():
            flat = torch.cat([grads[k].reshape(len(part), -1) for k in ks], dim=1)
            arrays[layer][start : start + len(part)] = flat.numpy()
    return arrays


def du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def similarity_from_full(zroot, layers):
    total = None
    for layer in layers:
        full = torch.from_numpy(zarr.open_array(zroot.store, path=layer, mode="r")[:])
        dots = full @ full.T
        total = dots if total is None else total + dots
    return total.double().numpy()


def case_bytes(name, net, store, ids, layer, work, times):
    store.register_model(net, name)
    grads = GradientStore(store, net, [layer], form="compact")
    with timed(times, f"{name}_capture"):
        grads.capture(ids, batch_size=64, progress=False)
    zroot = zarr.open_group(os.path.join(work, f"full-{name}"), mode="w")
    with timed(times, f"{name}_torch_func"):
        full_gradients(net, store, ids, [layer], zroot)
    compact = int(grads.sizes()["compact_disk_bytes"][0])
    full = du(os.path.join(work, f"full-{name}", layer))
    return grads, zroot, compact, full


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_torch()
    work = tempfile.mkdtemp(prefix="odinlab-bench-gradients-", dir=args.workdir)
    t_all = time.perf_counter()
    times: dict[str, float] = {}
    try:
        data = make_data(max(args.n, args.n_large), 32)
        store = open_bench_store(os.path.join(work, "store"), data)
        ids = store.images["image_id"].head(args.n).to_list()
        large_ids = ids[: args.n_large]

        head512, zroot512, c512, f512 = case_bytes("head512", StemHead(512, 10), store, ids, "head.fc", work, times)
        _, _, c2048, f2048 = case_bytes("head2048", StemHead(2048, 1000), store, large_ids, "head.fc",
                                               work, times)

        net = BenchCNN().eval()
        layers = ["head.fc1", "head.fc2"]
        _, zroot_cnn, c_cnn, f_cnn = case_bytes("cnn", net, store, ids, "head.fc1", work, times)
        full_gradients(net, store, ids, ["head.fc2"], zroot_cnn)  # fc1 was stored by case_bytes
        cnn = GradientStore(store, net, layers, form="compact")
        cnn.capture(ids, progress=False)

        t_full, want = best_of(args.repeats, lambda: similarity_from_full(zroot_cnn, layers))
        t_compact, got = best_of(args.repeats, lambda: cnn.similarity(ids))
        error = float(np.abs(got - want).max() / np.abs(want).max())
        t_full512, want512 = best_of(args.repeats, lambda: similarity_from_full(zroot512, ["head.fc"]))
        t_compact512, got512 = best_of(args.repeats, lambda: head512.similarity(ids))
        error512 = float(np.abs(got512 - want512).max() / np.abs(want512).max())

        print(f"images: {args.n} (Linear 2048→1000 case: {args.n_large})")
        print(f"torch_threads: {torch.get_num_threads()}")
        print(f"head512_full_mb: {mb(f512)}  head512_compact_mb: {mb(c512)}")
        print(f"head2048_full_mb: {mb(f2048)}  head2048_compact_mb: {mb(c2048)}")
        print(f"benchcnn_fc1_full_mb: {mb(f_cnn)}  benchcnn_fc1_compact_mb: {mb(c_cnn)}  "
              f"ratio: {f_cnn / c_cnn:.1f}")
        for name in ("head512", "head2048", "cnn"):
            print(f"{name}_capture_s: {times[name + '_capture']:.2f}  "
                  f"{name}_torch_func_and_store_s: {times[name + '_torch_func']:.2f}")
        print(f"similarity_head512_full_s: {t_full512:.3f}  compact_s: {t_compact512:.3f}  "
              f"max_rel_diff: {error512:.1e}")
        print(f"similarity_head512_speedup: {t_full512 / t_compact512:.1f} (information)")
        print(f"similarity_benchcnn_full_s: {t_full:.3f}  compact_s: {t_compact:.3f}  max_rel_diff: {error:.1e}")
        print(f"total_runtime_s: {time.perf_counter() - t_all:.1f}")
        print(f"bytes_ratio_linear_512x10: {f512 / c512:.1f} (target >= 9)")
        print(f"bytes_ratio_linear_2048x1000: {f2048 / c2048:.1f} (target >= 500)")
        print(f"similarity_speedup_1000x1000: {t_full / t_compact:.1f} (target >= 20)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
