"""Aggregates of stored attribution maps that no peer has.

:func:`mean_by_confusion` gives the mean map of every confusion cell (e.g. all "3 predicted
as 5"); :func:`share_inside` the share of |attribution| that falls inside a mask or box, per
image: a spurious cue shows up as a share far above the region's area.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np
import polars as pl
import torch

from odinlab.store.layout import digest
from odinlab.debug.attribution.attributor import Attributor
from odinlab.debug.attribution.methods import _describe
from odinlab.errors import RegionError, listing
from odinlab.store.images import ImageSelection


# -- aggregates ---------------------------------------------------------------------------

def _ids_digest(ids: pl.Series) -> str:
    return hashlib.sha256("\n".join(ids.to_list()).encode()).hexdigest()[:16]


def _map_chunks(attr: Attributor, selected: pl.DataFrame, target, baselines, batch_size, progress, chunk=1024):
    """Compute what is missing, then yield (offsets, maps) for the selection, a chunk at a time."""
    maps, aux = attr._compute(selected, target, baselines, batch_size, progress)
    rows = selected["_row"].to_numpy()
    for start in range(0, len(rows), chunk):
        yield start, attr._read(maps, aux, rows[start : start + chunk])


def mean_by_confusion(attr: Attributor, images: ImageSelection = None, *, target="prediction", baselines=None,
                      batch_size: int = 256, progress: bool = True) -> pl.DataFrame:
    """The mean attribution map of every confusion cell (true label, predicted class).

    One row per cell that has images: ``true``, ``true_name``, ``predicted``,
    ``predicted_name``, ``correct``, ``n``, ``mean`` (the signed mean map, (C, H, W)) and
    ``mean_abs`` (the mean of |map|). By default maps explain the predicted class: what made the
    model say 5 for these 3s. Unlabelled images are left out. The result is stored.

    >>> attr = Attributor(store, net, method="saliency")
    >>> cells = mean_by_confusion(attr, "val", progress=False)
    >>> int(cells["n"].sum()), cells["mean"].dtype
    (269, Array(Float32, shape=(1, 8, 8)))
    """
    store = attr.store
    selected = store._select_rows(images).filter(pl.col("label").is_not_null())
    selected = selected.unique("image_id", maintain_order=True)
    key = attr.cache_key(target, baselines) | {"aggregate": "mean_by_confusion",
                                               "images": _ids_digest(selected["image_id"])}
    classes = list(store._row(attr.model_id)["classes"]) or store.classes

    def compute() -> pl.DataFrame:
        predicted = attr.predictions(selected["image_id"])["predicted"].to_numpy()
        labels = selected["label"].to_numpy()
        k = int(max(labels.max(initial=0), predicted.max(initial=0))) + 1
        codes = labels * k + predicted
        cells = np.unique(codes)
        sums = np.zeros((len(cells), *attr.shape), np.float64)
        sums_abs = np.zeros_like(sums)
        index = np.searchsorted(cells, codes)
        for start, maps in _map_chunks(attr, selected, target, baselines, batch_size, progress):
            where = index[start : start + len(maps)]
            np.add.at(sums, where, maps)
            np.add.at(sums_abs, where, np.abs(maps))
        counts = np.bincount(index, minlength=len(cells))

        def names(values) -> list[str]:
            return [classes[v] if v < len(classes) else str(v) for v in values]
        true, pred = (cells // k).astype(np.int64), (cells % k).astype(np.int64)
        return pl.DataFrame({
            "true": true, "true_name": pl.Series(names(true), dtype=pl.String), "predicted": pred,
            "predicted_name": pl.Series(names(pred), dtype=pl.String),
            "correct": true == pred, "n": counts.astype(np.int64),
            "mean": (sums / np.maximum(counts, 1)[:, None, None, None]).astype(np.float32),
            "mean_abs": (sums_abs / np.maximum(counts, 1)[:, None, None, None]).astype(np.float32),
        })
    return store.results.table(attr.model_id, "attribution-confusion", key, compute)


class RegionShare(NamedTuple):
    """What :func:`share_inside` returns: one row per image, and a summary (per group with ``by``)."""

    per_image: pl.DataFrame
    summary: pl.DataFrame


def _region(mask, box, n: int, shape) -> tuple[np.ndarray, dict]:
    """A boolean mask (1 or N, H, W) and its description, from ``mask`` or ``box``."""
    _, h, w = shape
    if (mask is None) == (box is None):
        raise RegionError("Give exactly one of mask= (bool H×W, or N×H×W per image) "
                          "or box=(top, left, height, width).")
    if box is not None:
        if len(box) != 4 or any(int(v) != v for v in box):
            raise RegionError(f"box must be (top, left, height, width) in pixels; got {box!r}.")
        top, left, bh, bw = (int(v) for v in box)
        if top < 0 or left < 0 or bh < 1 or bw < 1 or top + bh > h or left + bw > w:
            raise RegionError(f"box {tuple(box)} does not fit inside the {h}×{w} images.")
        region = np.zeros((1, h, w), bool)
        region[0, top : top + bh, left : left + bw] = True
        return region, {"box": [top, left, bh, bw]}
    region = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    if region.ndim == 2:
        region = region[None]
    if region.ndim != 3 or region.shape[1:] != (h, w) or region.shape[0] not in (1, n):
        raise RegionError(f"mask must be H×W = {h}×{w} (one region for all images) or N×H×W with N = {n} "
                          f"(one per selected image); got shape {region.shape}.")
    return region, {"mask": _describe(region)}


def share_inside(attr: Attributor, images: ImageSelection = None, *, mask=None, box=None, target="label",
                 baselines=None, by: str | None = None, batch_size: int = 256,
                 progress: bool = True) -> RegionShare:
    """Share of each image's |attribution| (summed over channels) that falls inside a region.

    The region is ``box=(top, left, height, width)`` or a boolean ``mask`` (H×W for all
    images, N×H×W per image). ``per_image`` has image_id, label, ``share``, ``area`` (the
    region's share of the pixels: what a map spread evenly would put inside) and ``lift``
    (share / area). ``summary`` has n, mean and median share, area, lift of the mean, and the
    fraction of images whose share exceeds the area; ``by`` groups it by a column of the
    images table (``"label"``, ``"label_name"``, a metadata column) or ``"predicted"``.
    A cue the model relies on gets a lift far above 1 in the images that carry it.

    >>> attr = Attributor(store, net, method="saliency")
    >>> result = share_inside(attr, "val", box=(0, 0, 4, 4), by="label", progress=False)
    >>> result.per_image.columns, result.summary.height
    (['image_id', 'label', 'share', 'area', 'lift'], 10)
    """
    store = attr.store
    selected = store._select_rows(images)
    region, descriptor = _region(mask, box, selected.height, attr.shape)
    key = attr.cache_key(target, baselines) | {"aggregate": "share_inside", "region": descriptor,
                                               "images": _ids_digest(selected["image_id"])}

    def compute() -> pl.DataFrame:
        share, area = np.zeros(selected.height), np.zeros(selected.height)
        for start, maps in _map_chunks(attr, selected, target, baselines, batch_size, progress):
            magnitude = np.abs(maps).sum(axis=1)  # (B, H, W)
            inside = region if len(region) == 1 else region[start : start + len(maps)]
            total = magnitude.reshape(len(maps), -1).sum(axis=1)
            within = (magnitude * inside).reshape(len(maps), -1).sum(axis=1)
            share[start : start + len(maps)] = np.where(total > 0, within / np.where(total > 0, total, 1), np.nan)
            area[start : start + len(maps)] = inside.reshape(len(inside), -1).mean(axis=1)
        return pl.DataFrame({"image_id": selected["image_id"], "label": selected["label"],
                             "share": share, "area": area, "lift": share / area})
    per_image = store.results.table(attr.model_id, "attribution-share", key, compute)
    grouped = per_image
    if by is not None:
        if by == "predicted":
            extra = attr.predictions(per_image["image_id"]).select("image_id", "predicted")
        elif by in store.images.columns:
            extra = store.images.select("image_id", by)
        else:
            raise RegionError(f"Cannot group by {by!r}: use 'predicted' or a column of store.images "
                              f"({listing(store.images.columns)}).")
        if by not in per_image.columns:
            grouped = per_image.join(extra.unique("image_id"), on="image_id", how="left", maintain_order="left")
    aggregations = [pl.len().cast(pl.Int64).alias("n"), pl.col("share").mean().alias("mean_share"),
                    pl.col("share").median().alias("median_share"), pl.col("area").mean().alias("area"),
                    (pl.col("share").mean() / pl.col("area").mean()).alias("lift"),
                    (pl.col("share") > pl.col("area")).mean().alias("above_area")]
    summary = grouped.group_by(by).agg(aggregations).sort(by) if by else grouped.select(aggregations)
    return RegionShare(per_image, summary)
