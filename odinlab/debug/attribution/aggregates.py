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

from odinlab.debug.attribution.attributor import Attributor
from odinlab.debug.attribution.methods import _describe
from odinlab.errors import RegionError, UnknownColumnError, listing
from odinlab.store.selection import ImageSelection, Selection

# Bump when the columns of a stored aggregate change, so that old tables are not read back.
CONFUSION_COLUMNS = 2


# -- aggregates ---------------------------------------------------------------------------

def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _map_chunks(attr: Attributor, selection: Selection, target, baselines, batch_size, progress, chunk=1024):
    """Compute what is missing, then yield (offset, maps) for the selection, a chunk at a time."""
    target = attr._check_target(target)
    maps, aux = attr._compute(selection, target, baselines, batch_size, progress)
    for start in range(0, len(selection), chunk):
        yield start, attr._read(maps, aux, selection.rows[start : start + chunk])


def mean_by_confusion(attr: Attributor, images: ImageSelection = None, *, target="prediction", baselines=None,
                      batch_size: int = 256, progress: bool = True) -> pl.DataFrame:
    """The mean attribution map of every confusion cell (label, predicted class).

    One row per cell that has images: ``label``, ``label_name``, ``predicted``,
    ``predicted_name``, ``correct``, ``count``, ``image_ids`` (the cell's images, in the order
    selected), ``mean`` (the signed mean map, (C, H, W)) and ``mean_abs`` (the mean of |map|).
    By default maps explain the predicted class: what made the model say 5 for these 3s.
    Unlabelled images are left out; each image counts once. The result is stored.

    >>> attr = Attributor(store, net, method="saliency")
    >>> cells = mean_by_confusion(attr, "val", progress=False)
    >>> int(cells["count"].sum()), cells["mean"].dtype
    (269, Array(Float32, shape=(1, 8, 8)))
    >>> cells.columns[:7]
    ['label', 'label_name', 'predicted', 'predicted_name', 'correct', 'count', 'image_ids']
    """
    selection = attr.store.select(images).where(pl.col("label").is_not_null()).unique()
    key = attr.cache_key(target, baselines) | {"aggregate": "mean_by_confusion", "columns": CONFUSION_COLUMNS,
                                               "images": _ids_digest(selection.ids)}

    def compute() -> pl.DataFrame:
        predicted = attr.predictions(selection)["predicted"].to_numpy().astype(np.int64)
        labels = selection.labels
        k = int(max(labels.max(initial=0), predicted.max(initial=0))) + 1
        codes = labels * k + predicted
        cells = np.unique(codes)
        sums = np.zeros((len(cells), *attr.shape), np.float64)
        sums_abs = np.zeros_like(sums)
        index = np.searchsorted(cells, codes)
        for start, maps in _map_chunks(attr, selection, target, baselines, batch_size, progress):
            where = index[start : start + len(maps)]
            np.add.at(sums, where, maps)
            np.add.at(sums_abs, where, np.abs(maps))
        counts = np.bincount(index, minlength=len(cells))
        members = pl.DataFrame({"cell": index, "image_id": selection.ids}, schema={"cell": pl.Int64,
                                                                                   "image_id": pl.String})
        members = members.group_by("cell", maintain_order=True).agg(image_ids="image_id").sort("cell")
        label, pred = (cells // k).astype(np.int64), (cells % k).astype(np.int64)
        return pl.DataFrame({
            "label": label, "label_name": attr._class_names(label), "predicted": pred,
            "predicted_name": attr._class_names(pred), "correct": label == pred,
            "count": counts.astype(np.int64),
            "image_ids": members["image_ids"] if len(cells) else pl.Series([], dtype=pl.List(pl.String)),
            "mean": (sums / np.maximum(counts, 1)[:, None, None, None]).astype(np.float32),
            "mean_abs": (sums_abs / np.maximum(counts, 1)[:, None, None, None]).astype(np.float32),
        })
    return attr.store.results.table(attr.record, "attribution-confusion", key, compute)


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


def share_inside(attr: Attributor, images: ImageSelection = None, *, mask=None, box=None, target="prediction",
                 baselines=None, by: str | None = "label", batch_size: int = 256,
                 progress: bool = True) -> RegionShare:
    """Share of each image's |attribution| (summed over channels) that falls inside a region.

    The region is ``box=(top, left, height, width)`` or a boolean ``mask`` (H×W for all
    images, N×H×W per image). ``per_image`` has one row per selected image: image_id, label,
    ``share``, ``area`` (the region's share of the pixels: what a map spread evenly would put
    inside) and ``lift`` (share / area). ``summary`` has count, mean and median share, area,
    lift of the mean, and the fraction of images whose share exceeds the area, per group of
    ``by``: ``"label"`` (the default, with ``label_name``), ``"predicted"`` (with
    ``predicted_name``), another column of the images table, or None for one row over all.
    By default maps explain the predicted class. A cue the model relies on gets a lift far
    above 1 in the images that carry it.

    >>> attr = Attributor(store, net, method="saliency")
    >>> result = share_inside(attr, "val", box=(0, 0, 4, 4), progress=False)
    >>> result.per_image.columns, result.summary.height, result.summary.columns[:3]
    (['image_id', 'label', 'share', 'area', 'lift'], 10, ['label', 'label_name', 'count'])
    """
    selection = attr.store.select(images)
    region, descriptor = _region(mask, box, len(selection), attr.shape)
    key = attr.cache_key(target, baselines) | {"aggregate": "share_inside", "region": descriptor,
                                               "images": _ids_digest(selection.ids)}

    def compute() -> pl.DataFrame:
        share, area = np.zeros(len(selection)), np.zeros(len(selection))
        for start, maps in _map_chunks(attr, selection, target, baselines, batch_size, progress):
            magnitude = np.abs(maps).sum(axis=1)  # (B, H, W)
            inside = region if len(region) == 1 else region[start : start + len(maps)]
            total = magnitude.reshape(len(maps), -1).sum(axis=1)
            within = (magnitude * inside).reshape(len(maps), -1).sum(axis=1)
            share[start : start + len(maps)] = np.where(total > 0, within / np.where(total > 0, total, 1), np.nan)
            area[start : start + len(maps)] = inside.reshape(len(inside), -1).mean(axis=1)
        return pl.DataFrame({"image_id": selection["image_id"], "label": selection["label"],
                             "share": share, "area": area, "lift": share / area})
    per_image = attr.store.results.table(attr.record, "attribution-share", key, compute)
    return RegionShare(per_image, _share_summary(attr, selection, per_image, by))


def _share_summary(attr: Attributor, selection: Selection, per_image: pl.DataFrame, by: str | None):
    """The summary of :func:`share_inside`, over all images or per group of ``by``."""
    aggregations = [pl.len().cast(pl.Int64).alias("count"), pl.col("share").mean().alias("mean_share"),
                    pl.col("share").median().alias("median_share"), pl.col("area").mean().alias("area"),
                    (pl.col("share").mean() / pl.col("area").mean()).alias("lift"),
                    (pl.col("share") > pl.col("area")).mean().alias("above_area")]
    if by is None:
        return per_image.select(aggregations)
    if by == "predicted":
        groups = attr.predictions(selection).select("predicted", "predicted_name")
    elif by in selection.frame.columns:
        groups = selection.frame.select([by, "label_name"] if by == "label" else [by])
    else:
        raise UnknownColumnError(f"Cannot group by {by!r}: use 'predicted' or a column of store.images "
                                 f"({listing(selection.frame.columns)}).")
    keys = groups.columns
    grouped = pl.concat([per_image.drop([c for c in keys if c in per_image.columns]), groups], how="horizontal")
    return grouped.group_by(keys).agg(aggregations).sort(by, nulls_last=True)
