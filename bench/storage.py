"""Benchmark: how small odinlab stores activations, what uint8 keeps, and random-read speed (CPU).

What is measured:

1. Bytes on disk per activation value. A ``common.BenchCNN`` (1,027,973 parameters) is trained
   briefly (``odinlab.training.fit``, Adam lr 3e-4, batch 32, ``--train-epochs`` (2) epochs on
   ``--train-n`` (3,000) train-split images, ~15 s; about 0.7 validation accuracy on 5 classes,
   printed) so that the ReLU maps are those of a model that learned something;
   then ``store.materialize`` stores the same ReLU layers for all ``--n`` images (3×32×32
   ``odinlab.datasets.shapes``) three times: float32, float16 and uint8. For each layer and dtype:
   ``store.size_on_disk(..., "values")`` / (images × values per image), and the ratio of raw float32
   (4 bytes) to it. ``*_ratio_all_arrays`` counts every array of the variant (values plus uint8's
   per-image/channel step and minimum, the error and done masks), from ``store.materialized``.
   Targets: float16 >= 3×, uint8 >= 6× smaller than raw float32.
2. 50-nearest-neighbour preservation: for ``--queries`` random query images, the 50 nearest other
   images (Euclidean, flattened activations, among all ``--n``) computed from the stored float32
   activations and from the uint8-decoded ones (``store.activations(..., dtype="uint8")``); the mean
   fraction of the 50 that agree, per layer (``--knn-float16`` also checks float16). MISTIQUE
   reports >= 94%; target the same.
3. Random reads: a ``--read-n``-row (default 100,000) float16 array of ``--read-layer`` written into
   a store of that many images through ``odinlab.store.arrays.ArraySpec(...).open(...).write(...)``
   (the path materialize uses). Its rows are the real 10,000 images' float32 activations tiled 10×,
   each element scaled by an independent U(0.9, 1.1) factor: ReLU statistics (the zeros stay zeros)
   without 100,000 forward passes. The same data is written as a float32 ``numpy.memmap``. Then
   ``store.activations(model_id, layer, ids)`` for 1,000 random ids versus fancy indexing of the
   memmap (sorted rows, copied to memory) are timed, median of ``--read-repeats`` draws. Both are
   warm: the files were just written and the page cache cannot be dropped without root, so this
   compares decoding and indexing costs, not disk latency.

torch uses ``common.THREADS`` (2) threads. The headline ratios are printed last; per-layer lines
come first. Run from the repository root (about 4 minutes on 2 quiet cores with the defaults):

    python bench/storage.py
    python bench/storage.py --n 2000 --read-n 20000      # quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import LAYERS, BenchCNN, make_data, open_bench_store, setup_torch

DTYPES = ("float32", "float16", "uint8")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="images materialized (default 10000)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--layers", default=",".join(LAYERS), help="comma-separated ReLU layers")
    parser.add_argument("--train-n", type=int, default=3000, help="training images (0: random weights)")
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--budget", default="1GB", help="materialize memory_budget")
    parser.add_argument("--queries", type=int, default=1000, help="nearest-neighbour queries")
    parser.add_argument("--k", type=int, default=50, help="neighbours per query")
    parser.add_argument("--knn-layers", default=None, help="layers for the k-NN check (default: --layers)")
    parser.add_argument("--knn-float16", action="store_true", help="also check float16's neighbours (slower)")
    parser.add_argument("--read-n", type=int, default=100_000, help="rows of the random-read array")
    parser.add_argument("--read-layer", default="features.relu4", help="layer of the random-read array")
    parser.add_argument("--reads", type=int, default=1000, help="random rows per read")
    parser.add_argument("--read-repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where to put temporary stores (default: $TMPDIR)")
    return parser.parse_args(argv)


def knn(values: np.ndarray, queries: np.ndarray, k: int, block: int = 250) -> np.ndarray:
    """Indices of the k nearest other rows (squared Euclidean) of each query row."""
    x = values.reshape(len(values), -1).astype(np.float32, copy=False)
    norms = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), block):
        q = queries[start : start + block]
        dist = norms[None, :] - 2.0 * (x[q] @ x.T).astype(np.float64)  # + |q|^2, same for a row
        dist[np.arange(len(q)), q] = np.inf  # not its own neighbour
        out[start : start + block] = np.argpartition(dist, k, axis=1)[:, :k]
    return out


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    k = a.shape[1]
    return float(np.mean([len(np.intersect1d(x, y, assume_unique=True)) / k for x, y in zip(a, b)]))


def train(net, store, n_train: int, epochs: int) -> list[float]:
    from odinlab.training import fit

    ids = store.select("train")["image_id"].head(n_train)
    return fit(net, store, ids, epochs=epochs, lr=3e-4, batch_size=32, progress=False)


def storage_sizes(store, model_id: str, layers: list[str], n: int, shapes: dict) -> dict:
    """(layer, dtype) -> (values bytes, all-arrays bytes, values per image)."""
    name, version = model_id.split("@")
    table = store.materialized(model_id)
    sizes = {}
    for layer in layers:
        per_image = int(np.prod(shapes[layer]))
        for dtype in DTYPES:
            values = store.size_on_disk("arrays", "models", name, f"v{version}", "layers", layer, dtype, "values")
            everything = int(table.filter(table["array"] == f"{layer}/{dtype}")["bytes"][0])
            sizes[layer, dtype] = (values, everything, per_image)
    return sizes


def random_reads(args, work: str, source: np.ndarray) -> dict:
    """Build the --read-n row float16 store array and float32 memmap; time random reads of both."""
    import odinlab

    rng = np.random.default_rng(1)
    n, per_image = args.read_n, source.shape[1:]
    store = odinlab.open_store(os.path.join(work, "big-store"), create=True)
    store.ingest(make_data(n, args.size, seed=1))
    net = BenchCNN().eval()
    model_id = store.register_model(net, "bench")
    # Where materialize keeps the layer (store.layer_array finds it), written here from the source.
    target = store.results.row_array(model_id, "layers", args.read_layer, "float16", shape=tuple(per_image),
                                     dtype="float16", attrs=(("layer", args.read_layer), ("model_id", model_id),
                                                             ("pool", None)), capacity=n)
    memmap = np.lib.format.open_memmap(os.path.join(work, "activations.npy"), mode="w+",
                                       dtype=np.float32, shape=(n, *per_image))
    block = len(source)
    t_write_odinlab = t_write_memmap = 0.0
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        x = source[: len(rows)] * (0.9 + 0.2 * rng.random((len(rows), *per_image), dtype=np.float32))
        t = time.perf_counter()
        for s in range(0, len(rows), 512):  # batches of materialize's size
            target.write(rows[s : s + 512], x[s : s + 512])
        t_write_odinlab += time.perf_counter() - t
        t = time.perf_counter()
        memmap[rows] = x
        memmap.flush()
        t_write_memmap += time.perf_counter() - t
        del x
    del memmap
    memmap = np.load(os.path.join(work, "activations.npy"), mmap_mode="r")

    ids = store.images["image_id"].to_numpy()
    array = store.layer_array(model_id, args.read_layer, "float16")
    t_api, t_array, t_memmap = [], [], []
    for _ in range(args.read_repeats):
        picked = np.sort(rng.choice(n, args.reads, replace=False))
        t = time.perf_counter()
        got = store.activations(model_id, args.read_layer, list(ids[picked]))
        t_api.append(time.perf_counter() - t)
        t = time.perf_counter()
        array.read(picked)
        t_array.append(time.perf_counter() - t)
        t = time.perf_counter()
        expected = np.ascontiguousarray(memmap[picked])
        t_memmap.append(time.perf_counter() - t)
        assert np.allclose(got, expected, rtol=1e-3, atol=1e-3), "store and memmap disagree"
    return {
        "rows": n, "row_values": int(np.prod(per_image)),
        "chunk_rows": int(array.values.chunks[0]),
        "odinlab_mb": store.results.size(model_id, "layers", args.read_layer, "float16", "values") / 2**20,
        "memmap_mb": os.path.getsize(os.path.join(work, "activations.npy")) / 2**20,
        "write_odinlab_s": t_write_odinlab, "write_memmap_s": t_write_memmap,
        "odinlab_s": statistics.median(t_api), "odinlab_rowarray_s": statistics.median(t_array),
        "memmap_s": statistics.median(t_memmap),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_torch()
    layers = args.layers.split(",")
    knn_layers = args.knn_layers.split(",") if args.knn_layers else layers
    work = tempfile.mkdtemp(prefix="odinlab-bench-storage-", dir=args.workdir)
    t_all = time.perf_counter()
    try:
        store = open_bench_store(os.path.join(work, "store"), make_data(args.n, args.size))
        net = BenchCNN().eval()
        t = time.perf_counter()
        losses = train(net, store, args.train_n, args.train_epochs) if args.train_n else []
        t_train = time.perf_counter() - t
        model_id = store.register_model(net, "bench")
        arch = store.architecture(model_id)
        shapes = dict(zip(arch["layer"].to_list(), arch["output_shape"].to_list()))
        t_mat = {}
        for dtype in DTYPES:
            t = time.perf_counter()
            store.materialize(net, layers, images=None, batch_size="auto", memory_budget=args.budget,
                              dtype=dtype, progress=False)
            t_mat[dtype] = time.perf_counter() - t
        sizes = storage_sizes(store, model_id, layers, args.n, shapes)
        val_accuracy = float(store.predictions(model_id, "val")["correct"].mean())

        rng = np.random.default_rng(0)
        queries = rng.choice(args.n, min(args.queries, args.n), replace=False)
        t_knn = time.perf_counter()
        knn_scores, zero_fraction = {}, {}
        read_source = None
        for layer in dict.fromkeys(knn_layers + [args.read_layer]):
            exact = store.activations(model_id, layer, dtype="float32").values
            if layer == args.read_layer:
                read_source = exact
            if layer not in knn_layers:
                continue
            zero_fraction[layer] = float((exact == 0).mean())
            truth = knn(exact, queries, args.k)
            for dtype in ("float16", "uint8") if args.knn_float16 else ("uint8",):
                decoded = store.activations(model_id, layer, dtype=dtype).values
                knn_scores[layer, dtype] = overlap(truth, knn(decoded, queries, args.k))
                del decoded
            del exact
        if read_source is None:
            raise SystemExit(f"--read-layer {args.read_layer} must be one of --layers")
        t_knn = time.perf_counter() - t_knn
        del store
        t_reads = time.perf_counter()
        reads = random_reads(args, work, read_source) if args.read_n else None
        t_reads = time.perf_counter() - t_reads

        print(f"images: {args.n}")
        print(f"image_shape: 3x{args.size}x{args.size}")
        print(f"model_params: {sum(p.numel() for p in net.parameters())}")
        print(f"model: BenchCNN trained {args.train_epochs} epoch(s) on {args.train_n} images in {t_train:.1f} s, "
              f"epoch losses {', '.join(f'{x:.3f}' for x in losses)}" if losses else "model: BenchCNN, random weights")
        print(f"val_accuracy: {val_accuracy:.3f} (5 classes, chance 0.2)")
        for dtype in DTYPES:
            print(f"materialize_{dtype}_s: {t_mat[dtype]:.2f}")
        for layer in layers:
            print(f"{layer}.shape: {'x'.join(map(str, shapes[layer]))}")
            if layer in zero_fraction:
                print(f"{layer}.zero_fraction: {zero_fraction[layer]:.3f}")
            for dtype in DTYPES:
                values, everything, per_image = sizes[layer, dtype]
                print(f"{layer}.{dtype}_bytes_per_value: {values / (args.n * per_image):.3f}")
                print(f"{layer}.{dtype}_ratio: {4 * args.n * per_image / values:.2f}")
                print(f"{layer}.{dtype}_ratio_all_arrays: {4 * args.n * per_image / everything:.2f}")
            for dtype in ("float16", "uint8"):
                if (layer, dtype) in knn_scores:
                    print(f"{layer}.knn{args.k}_overlap_{dtype}: {knn_scores[layer, dtype]:.4f}")
        raw = sum(4 * args.n * sizes[layer, "float32"][2] for layer in layers)
        totals = {dtype: sum(sizes[layer, dtype][0] for layer in layers) for dtype in DTYPES}
        totals_all = {dtype: sum(sizes[layer, dtype][1] for layer in layers) for dtype in DTYPES}
        if reads:
            print(f"random_read.layer: {args.read_layer} ({reads['row_values']} values per image)")
            print(f"random_read.rows: {reads['rows']} ({args.n} real rows tiled, x U(0.9,1.1) per element)")
            print(f"random_read.reads: {args.reads} random rows, median of {args.read_repeats}, warm page cache")
            print(f"random_read.chunk_rows: {reads['chunk_rows']}")
            print(f"random_read.odinlab_float16_mb: {reads['odinlab_mb']:.1f}")
            print(f"random_read.memmap_float32_mb: {reads['memmap_mb']:.1f}")
            print(f"random_read.write_odinlab_s: {reads['write_odinlab_s']:.2f}")
            print(f"random_read.write_memmap_s: {reads['write_memmap_s']:.2f}")
            print(f"random_read.odinlab_activations_s: {reads['odinlab_s']:.4f}")
            print(f"random_read.odinlab_rowarray_read_s: {reads['odinlab_rowarray_s']:.4f}")
            print(f"random_read.memmap_s: {reads['memmap_s']:.4f}")
            print(f"random_read_ratio: {reads['odinlab_s'] / reads['memmap_s']:.1f} (odinlab / memmap time)")
        print(f"knn_phase_s: {t_knn:.1f}")
        if reads:
            print(f"random_read_phase_s: {t_reads:.1f}")
        for dtype in ("float16", "uint8") if args.knn_float16 else ("uint8",):
            scores = [knn_scores[layer, dtype] for layer in knn_layers]
            print(f"knn{args.k}_overlap_{dtype}_min_over_layers: {min(scores):.4f}"
                  + (" (target >= 0.94)" if dtype == "uint8" else ""))
        print(f"float32_ratio: {raw / totals['float32']:.2f}")
        print(f"float16_ratio_all_arrays: {raw / totals_all['float16']:.2f}")
        print(f"uint8_ratio_all_arrays: {raw / totals_all['uint8']:.2f}")
        print(f"total_runtime_s: {time.perf_counter() - t_all:.1f}")
        print(f"float16_ratio: {raw / totals['float16']:.2f} (target >= 3)")
        print(f"uint8_ratio: {raw / totals['uint8']:.2f} (target >= 6)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
