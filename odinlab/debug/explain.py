"""Explain a selection: what do these images share that the others don't?

For any selection (a lasso in the scatter, a confusion cell, a query) against the rest of an
image set, one call answers with four parts, each a polars frame:

- ``summary`` and ``pairs``: the selection's size and accuracy against the rest's, its most
  common prediction, and its (label, predicted) pairs;
- ``units``: the units of a layer that best separate the selection from the rest (ROC AUC of
  every unit at once from materialized activations, :func:`odinlab.sampling.estimators.domain_auc`),
  with the selected images each unit fires on most;
- ``metadata``: the metadata values over-represented in the selection, with a test and a
  Benjamini–Hochberg corrected p-value (:func:`odinlab.debug.enrichment.over_represented`);
- ``attribution``: the mean |attribution| map of the selection and of the rest, the share of
  attribution inside a region (``region=`` drawn by the user, else the *hotspot*: the window
  where the selection's map exceeds the rest's most), and the lift over the region's area;
- ``label_errors``: the selection's suspected label errors (:func:`label_errors`, flagged ones).

Every part is cached in the store under the model version, keyed by the two image sets and the
options, like every other debugging result.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl

from odinlab.errors import NotMaterializedError, OptionError, SelectionError
from odinlab.store.layout import digest
from odinlab.store.selection import ImageSelection

VERSION = 1  # of the cached parts' format; part of their keys
MAX_REST = 512  # attribution maps of at most this many rest images (a seeded sample): the mean is stable by then
NOT_METADATA = ("image_id", "label", "label_name")


@dataclass(frozen=True)
class Explanation:
    """What a selection shares: ``summary``, ``pairs``, ``units``, ``metadata``, ``attribution``, ``label_errors``.

    ``mean_map("selection" | "rest")`` is the mean |attribution| (H, W); ``region`` the box
    (top, left, height, width) the shares were measured in (None without attribution maps);
    ``notes`` say what could not be computed and how to get it.
    """

    model_id: str
    layer: str
    region: tuple[int, int, int, int] | None
    summary: pl.DataFrame
    pairs: pl.DataFrame
    units: pl.DataFrame
    metadata: pl.DataFrame
    attribution: pl.DataFrame
    label_errors: pl.DataFrame
    notes: tuple[str, ...] = ()

    def mean_map(self, which: str = "selection") -> np.ndarray:
        if which not in ("selection", "rest"):
            raise OptionError(f"Unknown set {which!r}; use 'selection' or 'rest'.")
        row = self.attribution.filter(pl.col("set") == which)
        if row.height == 0:
            raise NotMaterializedError(" ".join(self.notes) or "This explanation has no attribution maps.")
        return np.asarray(row["mean_map"][0].to_list(), np.float32)

    def __repr__(self) -> str:
        row = self.summary.row(0, named=True)
        return (f"<Explanation of {row['n']} images against {row['n_rest']} ({self.model_id}, {self.layer}): "
                f"accuracy {row['accuracy']:.2f} vs {row['accuracy_rest']:.2f}, "
                f"{self.metadata.filter(pl.col('significant')).height} over-represented values>")

    def _repr_html_(self) -> str:
        from html import escape

        maps = "".join(
            f'<figure style="display:inline-block;margin:4px"><img src="{heat_uri(self.mean_map(which))}" '
            f'width="128" style="image-rendering:pixelated"><figcaption>{which}: share inside {share:.2f} '
            f'(lift {lift:.1f})</figcaption></figure>'
            for which, share, lift in self.attribution.select("set", "share_inside", "lift").rows())
        units = "".join(_unit_card(row) for row in self.units.iter_rows(named=True))
        parts = [("Pairs", self.pairs),
                 ("Over-represented metadata", self.metadata.filter(pl.col("significant"))),
                 ("Suspected label errors", self.label_errors.head(10))]
        tables = "".join(f"<h4>{title}</h4>{frame._repr_html_()}" for title, frame in parts)
        notes = "".join(f"<p><i>{escape(note)}</i></p>" for note in self.notes)
        maps = f"<h4>Mean attribution in region {self.region}</h4>{maps}" if self.region else ""
        return (f"<div><p>{escape(repr(self))}</p>{notes}{maps}"
                f"<h4>Units of {escape(self.layer)} that separate it</h4>{units}{tables}</div>")


def _unit_card(row: dict) -> str:
    """One unit: its AUC, its maximization (when computed) and its top selected images."""
    pictures = ([f'<img src="{row["maximization"]}" width="64" title="maximizes it" '
                 'style="image-rendering:pixelated;outline:2px solid #888">'] if row.get("maximization") else [])
    pictures += [f'<img src="{uri}" width="40" style="image-rendering:pixelated;margin:1px">'
                 for uri in row.get("top_thumbnails") or []]
    return (f'<div style="display:inline-block;margin:4px;vertical-align:top"><div>unit {row["unit"]}: AUC '
            f'{row["auc"]:.2f} ({row["direction"]} in the selection)</div>{"".join(pictures)}</div>')


def explain(store, model, selection: ImageSelection, images: ImageSelection = None, *, layer: str | None = None,
            k: int = 10, method: str = "saliency", region=None, maximize: int = 3, seed: int = 0) -> Explanation:
    """What ``selection`` shares that the other images of ``images`` don't, for ``model``.

    ``layer`` defaults to the input of the model's last layer (its learned features); ``k`` units
    are kept, the first ``maximize`` of them with their activation-maximization image
    (:class:`~odinlab.debug.maximize.Maximizer`; needs the module in this session, else left out)
    and each with thumbnails of the selected images it fires on most; ``method`` is the Captum
    method of the attribution maps (they explain the predicted class); ``region`` is a box
    (top, left, height, width) to measure the share of attribution in.

    >>> _ = store.materialize(net, ["head.relu"], "val", progress=False)
    >>> threes = store.select("val").where(pl.col("label") == 3)
    >>> why = explain(store, "cnn@1", threes, "val", k=3)
    >>> why.units.height, why.summary["n"][0], why.attribution["set"].to_list()
    (3, 27, ['selection', 'rest'])
    """
    record = store.model(model)
    chosen, universe = _sets(store, selection, images)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise OptionError(f"k must be a positive int, not {k!r}.")
    if isinstance(maximize, bool) or not isinstance(maximize, int) or maximize < 0:
        raise OptionError(f"maximize must be a number of units (0 for none), not {maximize!r}.")
    layer = layer or default_layer(store, record)
    store.check_layers(record, [layer])
    inside = np.isin(np.asarray(universe.ids), chosen)
    params = {"selection": digest({"ids": sorted(chosen)}), "images": digest({"ids": sorted(universe.ids)}),
              "layer": layer, "k": k, "maximize": maximize, "method": method, "region": list(region) if region else None, "seed": seed,
              "version": VERSION, "module": _holds_module(store, record)}  # pictures need it: not cached without

    def cached(part, compute):
        return store.results.table(record, f"explain-{part}", params, compute)

    summary, pairs = _summary(store.predictions(record, universe), chosen, record)
    units_frame = cached("units", lambda: _pictured(store, record, _units(store, record, layer, universe, inside, k),
                                                    maximize, seed))
    metadata = cached("metadata", lambda: _metadata(universe, inside))
    notes = []
    try:
        attribution = cached("attribution", lambda: _attribution(store, record, universe, inside, method, region,
                                                                 seed))
    except NotMaterializedError as error:  # no module in this session: the other parts still answer
        attribution = pl.DataFrame(schema={"set": pl.String, "n": pl.Int64, "share_inside": pl.Float64,
                                           "lift": pl.Float64})
        notes.append(f"No attribution maps: {error}")
    if units_frame["maximization"].is_null().all() and maximize:
        notes.append("No activation-maximization images: they need the network in this session "
                     f"(store.load_weights(MyNet(), {record.model_id!r})).")
    suspects = cached("label-errors", lambda: _suspects(store, record, universe, inside))
    box = tuple(int(v) for v in attribution["region"][0]) if attribution.height else None
    return Explanation(record.model_id, layer, box, summary, pairs, units_frame, metadata, attribution, suspects,
                       tuple(notes))


def _holds_module(store, record) -> bool:
    try:
        store.module(record)
    except NotMaterializedError:
        return False
    return True


def default_layer(store, record) -> str:
    """The input of the model's last layer: the layer just before the last one with parameters.

    >>> default_layer(store, store.model("cnn@1"))
    'head.relu'
    """
    arch = store.architecture(record)
    names = arch["layer"].to_list()
    leaves = [n for n in names if n and not any(other.startswith(n + ".") for other in names)]
    with_params = [n for n in leaves if int(arch.filter(pl.col("layer") == n)["num_params"][0]) > 0]
    last = leaves.index(with_params[-1]) if with_params else len(leaves)
    return leaves[max(last - 1, 0)]


# -- the parts ----------------------------------------------------------------------------------------

def _sets(store, selection, images):
    universe = store.select(images).unique()
    chosen = list(dict.fromkeys(store.select(selection).ids))
    known = set(universe.ids)
    outside = [i for i in chosen if i not in known]
    if outside:  # the selection belongs to the compared set, whatever it was
        universe = store.select([*universe.ids, *outside]).unique()
    if not chosen or len(chosen) == len(universe):
        raise SelectionError(f"Explaining needs a selection and other images to compare it with; got {len(chosen)} "
                             f"selected of {len(universe)}. Select fewer images, or pass images= (the rest).")
    return chosen, universe


def _summary(frame: pl.DataFrame, chosen_ids: list[str], record) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sizes, accuracies and predictions of the selection and the rest (from stored predictions)."""
    names = dict(enumerate(record.classes))
    frame = frame.with_columns(predicted_name=pl.col("predicted").replace_strict(names, default=None,
                                                                                 return_dtype=pl.String))
    mask = frame["image_id"].is_in(chosen_ids)
    chosen, rest = frame.filter(mask), frame.filter(~mask)
    top = chosen["predicted_name"].value_counts(sort=True)
    summary = pl.DataFrame([{
        "n": chosen.height, "n_rest": rest.height,
        "accuracy": chosen["correct"].drop_nulls().mean(), "accuracy_rest": rest["correct"].drop_nulls().mean(),
        "top_predicted_name": top["predicted_name"][0] if top.height else None,
        "predicted_share": top["count"][0] / chosen.height if top.height else None,
        "predicted_share_rest": (rest["predicted_name"] == top["predicted_name"][0]).mean() if top.height else None,
    }], schema={"n": pl.Int64, "n_rest": pl.Int64, "accuracy": pl.Float64, "accuracy_rest": pl.Float64,
                "top_predicted_name": pl.String, "predicted_share": pl.Float64, "predicted_share_rest": pl.Float64})
    pairs = (chosen.group_by("label_name", "predicted_name").len("count")
             .with_columns(share=pl.col("count") / max(chosen.height, 1))
             .sort(["count", "label_name", "predicted_name"], descending=[True, False, False], nulls_last=True))
    return summary, pairs


def _units(store, record, layer, universe, inside, k) -> pl.DataFrame:
    from odinlab.debug.units import unit_activations
    from odinlab.sampling.estimators import Design, domain_auc

    values = unit_activations(store, record, layer, universe).values.reshape(len(universe), -1)
    auc, se = domain_auc(values, inside, Design.full_scan(len(universe)))
    score = np.nan_to_num(np.abs(auc - 0.5) * 2)
    best = np.argsort(-score, kind="stable")[:k]
    ids = np.asarray(universe.ids)[inside]
    rows = []
    for unit in best.tolist():
        v_in, v_out = values[inside, unit], values[~inside, unit]
        order = np.argsort(-v_in if auc[unit] >= 0.5 else v_in, kind="stable")[:6]
        rows.append({"layer": layer, "unit": unit, "auc": float(auc[unit]), "se": float(se[unit]),
                     "score": float(score[unit]), "direction": "higher" if auc[unit] >= 0.5 else "lower",
                     "mean_in": float(v_in.mean()), "mean_out": float(v_out.mean()),
                     "top_image_ids": ids[order].tolist()})
    return pl.DataFrame(rows, schema={"layer": pl.String, "unit": pl.Int64, "auc": pl.Float64, "se": pl.Float64,
                                      "score": pl.Float64, "direction": pl.String, "mean_in": pl.Float64,
                                      "mean_out": pl.Float64, "top_image_ids": pl.List(pl.String)})


def _pictured(store, record, units_frame: pl.DataFrame, maximize: int, seed: int) -> pl.DataFrame:
    """The units with thumbnails of their top images and, for the first ``maximize``, the image
    that excites them most (inline PNGs: the result stays one self-contained frame)."""
    thumbs = [[_uri(png) for png in store.thumbnails(ids, 48)] for ids in units_frame["top_image_ids"]]
    pictures: list[str | None] = [None] * units_frame.height
    if maximize:
        try:
            from odinlab.debug.maximize import Maximizer
            from odinlab.draw.maximize import display_image

            maximizer = Maximizer(store, record, steps=128, seed=seed)
            stats = maximizer.color_stats
            for i, row in enumerate(units_frame.head(maximize).iter_rows(named=True)):
                flat = len(store.architecture(record).filter(pl.col("layer") == row["layer"])["output_shape"][0]) == 1
                image = maximizer.maximize("neuron" if flat else "channel", row["layer"], row["unit"],
                                           negative=row["direction"] == "lower")
                pictures[i] = _uri(_png(display_image(image, stats.low, stats.high)))
        except NotMaterializedError:  # no module in this session: the real images still tell
            pass
    return units_frame.with_columns(top_thumbnails=pl.Series(thumbs, dtype=pl.List(pl.String)),
                                    maximization=pl.Series(pictures, dtype=pl.String))


def _metadata(universe, inside) -> pl.DataFrame:
    from odinlab.debug.enrichment import over_represented

    columns = universe.frame.drop([c for c in NOT_METADATA if c in universe.frame.columns])
    return over_represented(columns, inside)


def _attribution(store, record, universe, inside, method, region, seed) -> pl.DataFrame:
    from odinlab.debug.attribution import Attributor

    attributor = Attributor(store, record, method=method)
    rest = np.flatnonzero(~inside)
    if len(rest) > MAX_REST:
        rest = np.sort(np.random.default_rng(seed).choice(rest, MAX_REST, replace=False))
    maps = {name: np.abs(attributor.attribute(universe[rows], progress=False).values).sum(axis=1)
            for name, rows in (("selection", np.flatnonzero(inside)), ("rest", rest))}
    means = {name: m.mean(axis=0) for name, m in maps.items()}
    box = _box(region, means["selection"].shape) if region is not None else hotspot(means["selection"], means["rest"])
    top, left, height, width = box
    area = height * width / means["selection"].size
    rows = []
    for name, m in maps.items():
        share = m[:, top:top + height, left:left + width].sum(axis=(1, 2)) / np.maximum(m.sum(axis=(1, 2)), 1e-12)
        rows.append({"set": name, "n": len(m), "share_inside": float(share.mean()), "area": area,
                     "lift": float(share.mean() / area), "region": list(box), "method": method,
                     "mean_map": means[name].tolist()})
    return pl.DataFrame(rows)


def hotspot(selection_map: np.ndarray, rest_map: np.ndarray, side: int | None = None) -> tuple[int, int, int, int]:
    """The ``side``×``side`` window (default: an eighth of the image, at least 2) where the selection's
    normalized mean map exceeds the rest's most, as (top, left, height, width).

    >>> a, b = np.zeros((16, 16)), np.zeros((16, 16))
    >>> a[1:5, 1:5] = 1.0
    >>> hotspot(a + 0.01, b + 0.01)
    (1, 1, 2, 2)
    """
    height, width = selection_map.shape
    side = side or max(2, min(height, width) // 8)
    difference = selection_map / max(selection_map.sum(), 1e-12) - rest_map / max(rest_map.sum(), 1e-12)
    summed = np.lib.stride_tricks.sliding_window_view(difference, (side, side)).sum(axis=(2, 3))
    top, left = np.unravel_index(int(np.argmax(summed)), summed.shape)
    return int(top), int(left), side, side


def _box(region, shape) -> tuple[int, int, int, int]:
    try:
        top, left, height, width = (int(v) for v in region)
    except (TypeError, ValueError):
        raise OptionError(f"region must be a box (top, left, height, width), not {region!r}.") from None
    if height < 1 or width < 1 or top < 0 or left < 0 or top + height > shape[0] or left + width > shape[1]:
        raise OptionError(f"region {region!r} does not fit the {shape[0]}×{shape[1]} images.")
    return top, left, height, width


def _suspects(store, record, universe, inside) -> pl.DataFrame:
    from odinlab.debug.error_analysis import label_errors

    chosen = universe[inside]
    with warnings.catch_warnings():  # in-sample or not is a column of the answer (out_of_sample)
        warnings.simplefilter("ignore")
        ranked = label_errors(store, record, chosen)
    return ranked.filter(pl.col("flagged"))


def heat_uri(heat: np.ndarray) -> str:
    """A map (H, W) as an inline PNG heat map, brightest where largest (HTML that works offline)."""
    from odinlab.draw.images import colormap

    scaled = heat / max(float(heat.max()), 1e-12)
    return _uri(_png(np.rint(colormap("hot", scaled)).clip(0, 255).astype(np.uint8)))


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG")
    return buffer.getvalue()


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
