"""Benchmark: a selection reaching the gallery's first page of thumbnails, kernel side, in-process.

The browser measurement (``bench/widgets.py``, ``measure_selection``) times a cell running
``hub.select(ids[::50])`` until the gallery's first thumbnail is in the DOM. This script times the
kernel's share of that without a browser, over the same data: a store of ``--n`` generated 16×16
images (``odinlab.datasets.shapes``) with a small random CNN's predictions (built once under
``--store``), a ``ScatterView`` and a ``GalleryView`` linked by a ``SelectionHub``.

Each of ``--repeats`` rounds opens the store afresh (nothing cached in the process) and times, as
``select`` (``hub.select(ids)``: resolving the ids and every view's ``show_selection``) and ``page(0)``
(the gallery's first page, 48 items and their PNG thumbnails, which the gallery sends to a browser
unasked once one has asked for a page):

* ``first selection`` and ``second selection``: what bench/widgets.py does, the gallery's first page of
  every image, then ``ids[::50]`` and ``ids[25::50]``;
* ``later selections``: ten more (``ids[k::50]``), as a user goes on selecting;
* ``cold``: a selection in a session where nothing was read before.

Then the parts of a page, timed one by one: resolving its ids to rows, reading its pixels (one call:
one decompression per chunk), resizing, and PNG encoding at zlib level 6 (PIL's default) and 1 (what
``store.thumbnails`` uses), with the bytes per file. Medians are printed, the headline last (target:
``select + page(0)`` under 0.15 s). Torch runs one thread; the machine's other load shows in the spread.

    python bench/gallery.py                 # 100,000 images, store in /tmp/odinlab-bench-gallery
    python bench/gallery.py --n 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

TARGET_S = 0.15


def build_store(path: Path, n: int):
    """The store of ``bench/widgets.py`` (same recipe), built once and reused."""
    import odinlab
    from common import build_gallery_store

    if not (path / "tables" / "images.parquet").exists():
        build_gallery_store(path, n)
    store = odinlab.open_store(str(path))
    if store.images.height != n:
        raise SystemExit(f"{path} holds {store.images.height} images, not {n}: remove it or pass another --store.")
    return store


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def page_parts(store, ids: list[str], size: int, in_memory: np.ndarray) -> tuple[dict, dict]:
    """The steps of rendering ``ids``' thumbnails (what ``store.thumbnails`` does), timed one by one,
    and the bytes of a PNG at each zlib level. ``in_memory`` (every image's pixels, uncompressed) is
    the baseline of the read: the same rows gathered from memory."""
    from PIL import Image

    from odinlab.store.arrays import read_rows
    from odinlab.store.pixels import to_rgb8

    times, sizes = {}, {}
    times["ids -> rows"], selection = timed(lambda: store.select(ids))
    times["read pixels"], pixels = timed(lambda: read_rows(store.pixel_array, selection.rows))
    times["  (from memory)"], _ = timed(lambda: in_memory[selection.rows])
    times["to rgb8"], rgb = timed(lambda: to_rgb8(pixels))
    times["resize"], pictures = timed(lambda: [Image.fromarray(x).resize((size, size), Image.Resampling.NEAREST)
                                               for x in rgb])
    for level in (6, 1):  # PIL's default, and what store.thumbnails uses
        times[f"png, zlib level {level}"], pngs = timed(lambda: [_png(picture, level) for picture in pictures])
        sizes[level] = sum(map(len, pngs)) / len(pngs)
    return times, sizes


def _png(picture, level: int) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def session(path: Path, n: int):
    """A fresh store handle (nothing cached) with the linked views of the browser benchmark."""
    import odinlab
    from odinlab.widgets import GalleryView, ScatterView
    from odinlab.widgets.links import SelectionHub

    store = odinlab.open_store(str(path))
    ids = store.images["image_id"]
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"image_id": ids, "x": rng.normal(size=n), "y": rng.normal(size=n),
                          "label": store.images["label"]})
    scatter = ScatterView.from_frame(frame, color="label")
    gallery = GalleryView(store, "cnn@1")
    hub = SelectionHub(store, model="cnn@1")
    hub.add(scatter)
    hub.add(gallery)
    return store, ids, gallery, hub


def select_and_page(hub, gallery, chosen) -> tuple[float, float]:
    select_s, _ = timed(lambda: hub.select(chosen))
    page_s, (_, thumbs) = timed(lambda: gallery.page(0))
    if len(thumbs) != min(gallery.page_size, len(chosen)):
        raise SystemExit(f"page(0) gave {len(thumbs)} thumbnails for {len(chosen)} images")
    return select_s, page_s


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="images in the store")
    parser.add_argument("--store", type=Path, default=Path("/tmp/odinlab-bench-gallery"))
    parser.add_argument("--repeats", type=int, default=5, help="fresh sessions per scenario")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = args.store / str(args.n)

    rows: dict[str, list[float]] = {}

    def add(name, select_s, page_s):
        for key, value in ((f"{name}: select", select_s), (f"{name}: page(0)", page_s),
                           (f"{name}: select + page(0)", select_s + page_s)):
            rows.setdefault(key, []).append(value)

    parts: dict[str, list[float]] = {}
    sizes: dict[int, list[float]] = {}
    in_memory = build_store(path, args.n).pixel_array[:]
    for _ in range(args.repeats):
        # as bench/widgets.py: the gallery's first page of every image, then two selections
        store, ids, gallery, hub = session(path, args.n)
        gallery.page(0)
        add("first selection", *select_and_page(hub, gallery, ids[::50].to_list()))
        add("second selection", *select_and_page(hub, gallery, ids[25::50].to_list()))
        for k in range(1, 11):  # then more, as a user goes on selecting
            add("later selections", *select_and_page(hub, gallery, ids[k::50].to_list()))
        # nothing read before: every chunk of the page decoded
        store, ids, gallery, hub = session(path, args.n)
        add("cold (nothing cached)", *select_and_page(hub, gallery, ids[::50].to_list()))
        gallery.show_selection(ids[30::50].to_list())
        times, png_bytes = page_parts(store, gallery.ids[:gallery.page_size], gallery.thumb_size, in_memory)
        for name, value in times.items():
            parts.setdefault(name, []).append(value)
        for level, value in png_bytes.items():
            sizes.setdefault(level, []).append(value)

    print(f"store: {args.n:,} images of 16x16 at {path}; selections of {args.n // 50:,} images (every 50th), a "
          f"page of {gallery.page_size} thumbnails of {gallery.thumb_size} px; medians of {args.repeats} fresh "
          f"sessions (later selections: 10 per session)")
    print("a page's parts, nothing cached:")
    for name, values in parts.items():
        print(f"  {name:<22} {statistics.median(values) * 1000:7.2f} ms")
    med = {name: statistics.median(values) for name, values in parts.items()}
    print(f"  read / from memory: {med['read pixels'] / med['  (from memory)']:.0f}x; png level 6 / level 1: "
          f"{med['png, zlib level 6'] / med['png, zlib level 1']:.1f}x the time, "
          f"{statistics.median(sizes[6]):.0f} / {statistics.median(sizes[1]):.0f} bytes a file")
    for name, values in rows.items():
        print(f"{name:<42} {statistics.median(values) * 1000:7.1f} ms (min {min(values) * 1000:.1f})")
    headline = statistics.median(rows["first selection: select + page(0)"])
    cold = statistics.median(rows["cold (nothing cached): select + page(0)"])
    print(f"selection -> first page of thumbnails, kernel side, {args.n:,} images: {headline:.3f} s first "
          f"selection, {cold:.3f} s with nothing cached (target < {TARGET_S} s)")


if __name__ == "__main__":
    main()
