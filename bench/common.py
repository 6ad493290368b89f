"""Shared helpers for the benchmarks in ``bench/``: the ~1M-parameter CNN, data and store set-up,
timing, and a resident-memory sampler.

Not a benchmark itself; ``bench/extract.py`` and ``bench/storage.py`` import it (run them from the
repository root, e.g. ``python bench/extract.py``).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars (e.g. ingest's) in benchmark output

import numpy as np
import torch
from torch import nn

THREADS = 2
# Three ReLU conv outputs and the ReLU of the first fully connected layer.
LAYERS = ("features.relu2", "features.relu3", "features.relu4", "head.relu")
CLASSES = 5


def setup_torch(threads: int = THREADS, seed: int = 0) -> None:
    """Same thread count for every side of a comparison; deterministic initial weights."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)


class BenchCNN(nn.Module):
    """A VGG-style CNN of 1,027,973 parameters for 3×32×32 inputs (~77M multiply-adds per image).

    features: conv1(3→64) relu1 pool1 | conv2(64→128) relu2 pool2 | conv3(128→256) relu3 |
    conv4(256→256) relu4 | gap;  head: flatten fc1(256→256) relu fc2(256→5).
    Per-image output sizes of the benchmarked layers: relu2 128×16×16, relu3 256×8×8,
    relu4 256×8×8, head.relu 256.
    """

    def __init__(self, num_classes: int = CLASSES):
        super().__init__()
        self.features = nn.Sequential()
        f = self.features
        f.add_module("conv1", nn.Conv2d(3, 64, 3, padding=1))
        f.add_module("relu1", nn.ReLU())
        f.add_module("pool1", nn.MaxPool2d(2))
        f.add_module("conv2", nn.Conv2d(64, 128, 3, padding=1))
        f.add_module("relu2", nn.ReLU())
        f.add_module("pool2", nn.MaxPool2d(2))
        f.add_module("conv3", nn.Conv2d(128, 256, 3, padding=1))
        f.add_module("relu3", nn.ReLU())
        f.add_module("conv4", nn.Conv2d(256, 256, 3, padding=1))
        f.add_module("relu4", nn.ReLU())
        f.add_module("gap", nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential()
        h = self.head
        h.add_module("flatten", nn.Flatten())
        h.add_module("fc1", nn.Linear(256, 256))
        h.add_module("relu", nn.ReLU())
        h.add_module("fc2", nn.Linear(256, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def model_bytes(net: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in net.state_dict().values())


def make_data(n: int, size: int = 32, seed: int = 0):
    import odinlab

    return odinlab.datasets.shapes(n=n, size=size, seed=seed)


def open_bench_store(path: str, data):
    """A fresh store at ``path`` holding ``data`` (an ImageData)."""
    import odinlab

    store = odinlab.open_store(path, create=True)
    store.ingest(data)
    return store


def batches_of(images: np.ndarray, batch_size: int):
    """Float32 model input from uint8 images already in memory, as odinlab feeds its model."""
    for start in range(0, len(images), batch_size):
        yield torch.from_numpy(images[start : start + batch_size].astype(np.float32) / 255.0)


@contextmanager
def timed(results: dict, key: str):
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # pragma: no cover - psutil is installed with the dev extras
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RSSSampler:
    """Samples this process's resident set size every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f}"


def build_gallery_store(path, n: int, threads: int = 1) -> None:
    """``n`` generated 16×16 images and a small random CNN's predictions, a store on disk at ``path``:
    what bench/widgets.py and bench/gallery.py select from."""
    import odinlab
    from odinlab.nets import SmallCNN

    setup_torch(threads)
    data = odinlab.datasets.shapes(n=n, size=16, seed=0)
    store = odinlab.open_store(str(path), create=True)
    store.ingest(data)
    net = SmallCNN(3, len(data.classes), width=4)
    store.register_model(net, "cnn")
    store.materialize(net, progress=False)
