"""Benchmark: Integrated Gradients for 1,000 images with odinlab against a per-image Captum loop.

Run from the repository root: ``python bench/attribution.py [--images 1000] [--steps 50]``.

Both sides run in this process with the same thread count, the same trained SmallCNN (3×32×32
generated shapes, 5 classes), the same n_steps, zero baselines, the label as target and
Captum's convergence delta. The baseline is the common notebook practice: a loop over images
already in memory, one ``IntegratedGradients.attribute`` call per image. odinlab reads the
pixels from its store (on disk), attributes in batches and writes float16 maps and deltas back;
its second call (a new Attributor, as in a new session) reads them. Prints ``name: value``
lines, the headline ratio last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (sets TQDM_DISABLE before odinlab is imported)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from captum.attr import IntegratedGradients  # noqa: E402

import odinlab  # noqa: E402
from odinlab.debug.attribution import Attributor  # noqa: E402
from odinlab.nets import SmallCNN  # noqa: E402
from odinlab.training import fit  # noqa: E402


def per_image_captum(net, pixels: np.ndarray, labels: np.ndarray, steps: int):
    """The common practice: one IntegratedGradients call per image."""
    explainer = IntegratedGradients(net)
    maps, deltas = np.empty(pixels.shape, np.float32), np.empty(len(pixels), np.float32)
    for i in range(len(pixels)):
        x = torch.from_numpy(pixels[i : i + 1].astype(np.float32) / 255.0)
        attribution, delta = explainer.attribute(x, baselines=torch.zeros_like(x), target=int(labels[i]),
                                                 n_steps=steps, return_convergence_delta=True)
        maps[i], deltas[i] = attribution[0].detach().numpy(), float(delta[0])
    return maps, deltas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch (odinlab's default)")
    parser.add_argument("--data", choices=("digits", "shapes"), default="digits",
                        help="digits: 1,797 real 8×8 images; shapes: generated 3×32×32 images")
    parser.add_argument("--width", type=int, default=16, help="SmallCNN width (16: the demo's CNN)")
    parser.add_argument("--runs", type=int, default=3, help="alternating runs of each side; medians count")
    args = parser.parse_args()
    common.setup_torch()
    times: dict[str, list[float]] = {"captum": [], "first": [], "cached": [], "new_session": []}
    with tempfile.TemporaryDirectory() as folder:
        data = odinlab.datasets.digits() if args.data == "digits" else common.make_data(max(args.images, 1200))
        trained = common.open_bench_store(str(Path(folder) / "train"), data)
        net = SmallCNN(in_channels=data.images.shape[1], num_classes=len(data.classes), width=args.width)
        fit(net, trained, "train", epochs=2, progress=False)
        net.eval()
        ids = trained.images["image_id"].head(args.images).to_list()
        pixels, labels = trained.pixels(ids), trained.select(ids)["label"].to_numpy()
        # The machine is shared: each side runs `--runs` times, alternating, and the medians count.
        # Every odinlab run gets a fresh store, so that its first call computes everything.
        for run in range(args.runs):
            results: dict[str, float] = {}
            with common.timed(results, "captum"):
                reference, reference_deltas = per_image_captum(net, pixels, labels, args.steps)
            store = common.open_bench_store(str(Path(folder) / f"run{run}"), data)
            model_id = store.register_model(net, "cnn")
            with common.timed(results, "first"):
                maps = Attributor(store, net, method="integrated_gradients", n_steps=args.steps).attribute(
                    ids, target="label", batch_size=args.batch_size, progress=False)
            with common.timed(results, "cached"):  # a new Attributor, as a later session would make
                again = Attributor(store, model_id, method="integrated_gradients", n_steps=args.steps).attribute(
                    ids, target="label", batch_size=args.batch_size, progress=False)
            reopened = odinlab.open_store(str(Path(folder) / f"run{run}"))  # as a new session would
            with common.timed(results, "new_session"):
                Attributor(reopened, net, method="integrated_gradients", n_steps=args.steps).attribute(
                    ids, target="label", batch_size=args.batch_size, progress=False)
            for key, value in results.items():
                times[key].append(value)
        deltas = Attributor(store, model_id, n_steps=args.steps).deltas(ids, target="label", progress=False)

    captum_s, first_s, cached_s, session_s = (float(np.median(times[k]))
                                              for k in ("captum", "first", "cached", "new_session"))
    scale = np.abs(reference).reshape(len(ids), -1).max(axis=1)[:, None, None, None]
    print(f"data: {args.data}")
    print(f"images: {len(ids)}")
    print(f"image_shape: {tuple(pixels.shape[1:])}")
    print(f"model_params: {sum(p.numel() for p in net.parameters())}")
    print(f"n_steps: {args.steps}")
    print(f"batch_size: {args.batch_size}")
    print(f"torch_threads: {torch.get_num_threads()}")
    print(f"runs: {args.runs}")
    print(f"captum_per_image_s: {captum_s:.3f}  (runs: {', '.join(f'{t:.2f}' for t in times['captum'])})")
    print(f"odinlab_first_call_s: {first_s:.3f}  (runs: {', '.join(f'{t:.2f}' for t in times['first'])})")
    print(f"odinlab_cached_call_s: {cached_s:.4f}  (runs: {', '.join(f'{t:.4f}' for t in times['cached'])})")
    print(f"odinlab_cached_call_new_session_s: {session_s:.4f}  (a new Store object: arrays opened again)")
    print(f"max_abs_difference_over_image_max: {float((np.abs(maps - reference) / scale).max()):.2e}")
    print(f"max_abs_delta_odinlab: {float(np.abs(deltas).max()):.2e}")
    print(f"max_abs_delta_captum: {float(np.abs(reference_deltas).max()):.2e}")
    print(f"cached_equals_first: {bool(np.array_equal(maps, again))}")
    print(f"cached_speedup_over_captum: {captum_s / cached_s:.1f}")
    print(f"cached_new_session_speedup_over_first_call: {first_s / session_s:.1f}")
    print(f"cached_speedup_over_first_call: {first_s / cached_s:.1f}")
    print(f"speedup_over_captum_per_image: {captum_s / first_s:.2f}")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total_s: {time.perf_counter() - start:.1f}", file=sys.stderr)
