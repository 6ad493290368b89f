"""Benchmark: odinlab materializing 4 layers versus the common layer-by-layer practice (CPU).

What is measured, all in one process (ratios matter, the machine is noisy):

* ``odinlab_s``: ``store.materialize(net, 4 layers, batch_size="auto", memory_budget=--budget,
  dtype=--dtype)`` over all ``--n`` images of a fresh store (``odinlab.datasets.shapes``, 3×32×32),
  i.e. one forward pass per batch with every layer hooked, each batch streamed to Zarr. It also
  stores the predictions (odinlab always does).
* ``baseline_s``: the common practice: for each layer, one full forward pass over all images with
  a single forward hook appending that layer's output to a list, then ``np.concatenate`` and
  ``np.save`` (float32) into a temporary folder. To be fair the baseline gets its images already in
  memory as a uint8 numpy array (odinlab reads and decompresses them from its store), converted
  per batch exactly as odinlab does (float32 / 255), with the batch size odinlab chose.
* ``forward_only_s``: one forward pass over the same batches, no hooks, nothing kept or stored.
* ``peak_rss``: a separate subprocess (started by this script after the timings) opens the same
  store, registers the same network under another name and materializes the same layers with the
  same budget, while a thread samples its resident set size every 10 ms; it reports the peak
  minus the RSS just before ``materialize`` (after imports, store open and model built). Target:
  under (budget + model size) × 1.2.

Targets (the issue's): speedup = baseline_s / odinlab_s >= 2.5 (headline, printed last);
overhead = odinlab_s / forward_only_s <= 1.5; memory_ratio = peak delta / (budget + model) <= 1.2.

The network is ``common.BenchCNN`` (1,027,973 parameters, random init: only timing matters here);
layers: features.relu2 (128×16×16), features.relu3 (256×8×8), features.relu4 (256×8×8),
head.relu (256). torch uses ``common.THREADS`` (2) threads on every side.

Run from the repository root (about 3-4 minutes on 2 cores with the defaults):

    python bench/extract.py
    python bench/extract.py --n 2000 --skip-rss     # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (
    LAYERS,
    BenchCNN,
    RSSSampler,
    batches_of,
    make_data,
    mb,
    model_bytes,
    open_bench_store,
    rss_bytes,
    setup_torch,
    timed,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of images (default 10000)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated layer names")
    parser.add_argument("--budget", default="1GB", help="odinlab memory_budget (default 1GB)")
    parser.add_argument("--dtype", default="float16", choices=("float32", "float16", "uint8"))
    parser.add_argument("--skip-rss", action="store_true", help="skip the peak-memory subprocess")
    parser.add_argument("--workdir", default=None, help="where to put the temporary store (default: $TMPDIR)")
    parser.add_argument("--rss-child", metavar="STORE", help=argparse.SUPPRESS)  # internal
    return parser.parse_args(argv)


def forward_only(net, images, batch_size):
    with torch.no_grad():
        for x in batches_of(images, batch_size):
            net(x)


def baseline(net, images, layers, batch_size, out_dir):
    """One full forward pass per layer with one hook, then np.save float32 per layer."""
    modules = dict(net.named_modules())
    for layer in layers:
        kept: list[np.ndarray] = []

        def hook(module, inputs, output, kept=kept):
            kept.append(output.detach().cpu().numpy())

        handle = modules[layer].register_forward_hook(hook)
        try:
            with torch.no_grad():
                for x in batches_of(images, batch_size):
                    net(x)
        finally:
            handle.remove()
        values = np.concatenate(kept).astype(np.float32, copy=False)
        kept.clear()
        np.save(os.path.join(out_dir, f"{layer}.npy"), values)
        del values


def rss_child(args) -> None:
    """Materialize in this fresh process while sampling RSS; print one JSON line."""
    import odinlab

    setup_torch()
    store = odinlab.open_store(args.rss_child, create=True)
    net = BenchCNN().eval()
    store.register_model(net, "rss")
    layers = args.layers.split(",")
    before = rss_bytes()
    start = time.perf_counter()
    with RSSSampler(0.01) as sampler:
        report = store.materialize(net, layers, images=None, batch_size="auto",
                                   memory_budget=args.budget, dtype=args.dtype, progress=False)
    print(json.dumps({"before": before, "peak": sampler.peak, "seconds": time.perf_counter() - start,
                      "batch_size": int(report["batch_size"][0]), "model_bytes": model_bytes(net)}))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.rss_child:
        rss_child(args)
        return
    from dask.utils import parse_bytes

    setup_torch()
    layers = args.layers.split(",")
    work = tempfile.mkdtemp(prefix="odinlab-bench-extract-", dir=args.workdir)
    store_path, npy_dir = os.path.join(work, "store"), os.path.join(work, "npy")
    os.makedirs(npy_dir)
    t_all = time.perf_counter()
    try:
        data = make_data(args.n, args.size)
        store = open_bench_store(store_path, data)
        images = np.ascontiguousarray(data.images)  # the baseline's images, already in memory
        net = BenchCNN().eval()
        store.register_model(net, "bench")
        times: dict[str, float] = {}

        with torch.no_grad():  # warm-up (allocator, oneDNN kernels) for both sides
            for x in batches_of(images[:512], 256):
                net(x)

        with timed(times, "odinlab"):
            report = store.materialize(net, layers, images=None, batch_size="auto",
                                       memory_budget=args.budget, dtype=args.dtype, progress=False)
        batch_size = int(report["batch_size"][0])
        with timed(times, "forward_only"):
            forward_only(net, images, batch_size)
        with timed(times, "baseline"):
            baseline(net, images, layers, batch_size, npy_dir)

        stored = store.materialized("bench@1")
        odinlab_bytes = int(stored.filter(stored["array"] != "predictions")["bytes"].sum())
        npy_bytes = sum(os.path.getsize(os.path.join(npy_dir, f)) for f in os.listdir(npy_dir))
        shutil.rmtree(npy_dir, ignore_errors=True)

        rss = None
        if not args.skip_rss:
            child = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--rss-child", store_path, "--layers",
                 args.layers, "--budget", args.budget, "--dtype", args.dtype],
                capture_output=True, text=True, check=False)
            if child.returncode != 0:
                print(child.stdout + child.stderr, file=sys.stderr)
                raise SystemExit(f"peak-memory subprocess failed ({child.returncode})")
            rss = json.loads(child.stdout.strip().splitlines()[-1])

        budget = parse_bytes(args.budget)
        print(f"images: {args.n}")
        print(f"image_shape: 3x{args.size}x{args.size}")
        print(f"model_params: {sum(p.numel() for p in net.parameters())}")
        print(f"layers: {','.join(layers)}")
        print(f"torch_threads: {torch.get_num_threads()}")
        print(f"dtype: {args.dtype}")
        print(f"memory_budget: {args.budget}")
        print(f"batch_size: {batch_size}")
        print(f"baseline_npy_mb: {mb(npy_bytes)}")
        print(f"odinlab_store_mb: {mb(odinlab_bytes)}")
        print(f"baseline_s: {times['baseline']:.2f}")
        print(f"forward_only_s: {times['forward_only']:.2f}")
        print(f"odinlab_s: {times['odinlab']:.2f}")
        if rss is not None:
            limit = budget + rss["model_bytes"]
            delta = rss["peak"] - rss["before"]
            print(f"rss_child_materialize_s: {rss['seconds']:.2f}")
            print(f"rss_before_materialize_mb: {mb(rss['before'])}")
            print(f"peak_rss_mb: {mb(rss['peak'])}")
            print(f"peak_rss_delta_mb: {mb(delta)}")
            print(f"budget_plus_model_mb: {mb(limit)}")
            print(f"memory_ratio: {delta / limit:.2f} (target <= 1.20)")
        print(f"overhead: {times['odinlab'] / times['forward_only']:.2f} (target <= 1.5)")
        print(f"total_runtime_s: {time.perf_counter() - t_all:.1f}")
        print(f"speedup: {times['baseline'] / times['odinlab']:.2f} (target >= 2.5)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
