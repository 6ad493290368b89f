"""The model comparison view: two versions of a model on the same images.

Every number comes from :mod:`odinlab.debug.compare` (cached in the store where that module
caches): the agreement and McNemar's test (``agreement``), per-class metric deltas as a bar
chart (``class_deltas``), the disagreement set as cards that feed the selection
(``disagreements``: both predictions, which version is right), prediction flips and how far
each image moved in a shared embedding (``flips``, with a ``layer``), the linear CKA between
layers as a heat-map (``cka_matrix``), and attribution agreement (``attribution_agreement``,
slow: computed when its button is pressed, with a "computing" state).

The cards are a :class:`~odinlab.widgets.cards.CardsView`: one card a disagreement, its
thumbnail sent on the browser's request; a click selects the image, and the group buttons
select every disagreement that version a, version b or neither gets right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import traitlets

from odinlab.errors import OdinError, OptionError
from odinlab.widgets.cards import CardsView, esm_with_thumbs
from odinlab.widgets.gallery import ThumbnailCache, describe_images

__all__ = ["CompareView"]

GROUPS = ("a", "b", "neither")  # compare.disagreements' ``right`` column
HISTOGRAM_BINS = 20


def _number(value):
    """A JSON-ready scalar (None stays None; NaN becomes None)."""
    if value is None:
        return None
    if isinstance(value, bool | str):
        return value
    value = float(value) if isinstance(value, float | np.floating) else int(value)
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    return np.histogram(values, bins=edges)[0].astype(int).tolist()


class CompareView(CardsView):
    """Two versions, ``model_a`` and ``model_b``, on the same ``images``: where and how they differ.

    ``layer`` (optional) is the layer of the shared embedding in which ``flips`` measures how far
    each image moved; ``layers`` (``layers_b``) are the layers of a (of b) whose linear CKA is
    shown, by default those stored for each version. ``attribution_method`` and
    ``attribution_images`` (default: the disagreements) go to ``attribution_agreement`` when
    its button is pressed (or :meth:`compute_attribution` is called). At most ``max_cards``
    disagreements are shown as cards, most moved first. Problems (no stored predictions,
    versions of different tasks) are shown as ``message``; a part that cannot be computed
    says why in its place.

    View contract: ``ids`` are the disagreement images shown; a click on a card selects its
    image, a group button every disagreement of that group (``selected_ids``, ``on_select``);
    ``show_selection(ids)`` highlights the cards of ``ids``.

    >>> _ = store.materialize(net, ["head.fc1"], images="test", progress=False)
    >>> view = CompareView(store, "cnn@1", "cnn@1", "test", layer="head.fc1")
    >>> view.summary["agreement"], view.ids           # a version agrees with itself everywhere
    (1.0, [])
    >>> round(view.cka["values"][0][0], 6)
    1.0
    """

    _esm = esm_with_thumbs("compare_view.js")
    _css = Path(__file__).with_name("compare_view.css")

    summary = traitlets.Dict().tag(sync=True)          # compare.agreement's row
    deltas = traitlets.List(traitlets.Dict()).tag(sync=True)  # compare.class_deltas' rows
    metric = traitlets.Unicode("f1").tag(sync=True)    # the metric the delta chart shows
    movement = traitlets.Dict().tag(sync=True)         # flips: counts, medians, histograms
    cka = traitlets.Dict().tag(sync=True)              # {layers_a, layers_b, values} or {note}
    attribution = traitlets.Dict().tag(sync=True)      # {state: idle|computing|done|error, ...}
    group = traitlets.Unicode("").tag(sync=True)       # the selected group ("" | a | b | neither)
    groups = traitlets.Dict().tag(sync=True)           # disagreements per group

    def __init__(self, store, model_a, model_b, images=None, *, layer: str | None = None,
                 layers: list[str] | None = None, layers_b: list[str] | None = None,
                 attribution_method: str = "integrated_gradients", attribution_images=None,
                 max_cards: int = 120, thumb_size: int = 64, thumbnails: ThumbnailCache | None = None, **kwargs):
        super().__init__(store, model_a, thumb_size=thumb_size, thumbnails=thumbnails, **kwargs)
        if not isinstance(max_cards, int) or max_cards < 1:
            raise OptionError(f"max_cards must be a positive int, not {max_cards!r}.")
        self.record_b = store.model(model_b)
        self.layer, self.attribution_method = layer, attribution_method
        self._images_text = describe_images(images)
        self._images, self.images = images, None
        self._attribution_images = attribution_images
        self.disagreements = self.flips = self.attribution_frame = None
        self._max_cards = max_cards
        self._group_ids: dict[str, list[str]] = {}
        self.observe(self._on_group, names=["group"])
        self._load(layers, layers_b)

    # -- the parts ------------------------------------------------------------------------------

    def _load(self, layers, layers_b) -> None:
        from odinlab.debug import compare

        a, b = self.record.model_id, self.record_b.model_id
        try:
            self.images = self.store.select(self._images)
            summary = compare.agreement(self.store, a, b, self.images)
            deltas = compare.class_deltas(self.store, a, b, self.images)
            self.disagreements = compare.disagreements(self.store, a, b, self.images)
        except OdinError as error:  # no stored predictions, versions of two tasks, unknown images
            self.message = str(error)
            return
        if summary["images"].item() == 0:
            self.message = "No labelled images selected: there is nothing to compare."
            return
        self.summary = {k: _number(v) for k, v in summary.row(0, named=True).items()}
        self.deltas = [{k: _number(v) for k, v in row.items()} for row in deltas.iter_rows(named=True)]
        self.movement = self._movement()
        self.cka = self._cka(layers, layers_b)
        self.attribution = {"state": "idle", "method": self.attribution_method,
                            "images": self._attribution_count()}
        self._cards()

    def _movement(self) -> dict:
        """How far each image moved between the versions (compare.flips), flipped or not."""
        from odinlab.debug import compare

        if self.layer is None:
            return {"note": "Give layer= to see how far each image moved between the versions in a shared embedding."}
        try:
            self.flips = compare.flips(self.store, self.record, self.record_b, self.layer, self.images)
        except OdinError as error:
            return {"note": f"{error}", "layer": self.layer}
        moved, flipped = self.flips["moved"].to_numpy(), self.flips["flipped"].to_numpy()
        edges = np.linspace(0.0, max(float(moved.max()), 1e-9), HISTOGRAM_BINS + 1)
        return {"layer": self.layer, "images": len(moved), "flipped": int(flipped.sum()),
                "median_flipped": _number(np.median(moved[flipped])) if flipped.any() else None,
                "median_kept": _number(np.median(moved[~flipped])) if (~flipped).any() else None,
                "edges": edges.tolist(), "hist_flipped": _histogram(moved[flipped], edges),
                "hist_kept": _histogram(moved[~flipped], edges)}

    def _cka(self, layers, layers_b) -> dict:
        """Linear CKA between the layers of a and b (compare.cka_matrix), as a matrix."""
        from odinlab.debug import compare

        layers_a = list(layers) if layers is not None else self._stored_layers(self.record)
        layers_b = list(layers_b) if layers_b is not None else (
            list(layers) if layers is not None else self._stored_layers(self.record_b))
        if not layers_a or not layers_b:
            return {"note": f"No stored layers to compare: store some with store.materialize(<model>, "
                            f"['head.fc1', ...], images={self._images_text}), or give layers=[...]."}
        try:
            frame = compare.cka_matrix(self.store, self.record, self.record_b, layers_a, layers_b, self.images)
        except OdinError as error:
            return {"note": str(error)}
        lookup = {(r["layer_a"], r["layer_b"]): r["cka"] for r in frame.iter_rows(named=True)}
        return {"layers_a": layers_a, "layers_b": layers_b,
                "values": [[_number(lookup[(x, y)]) for y in layers_b] for x in layers_a]}

    def _stored_layers(self, record) -> list[str]:
        """The version's layers with stored activations, in the network's order."""
        stored = set(self.store.materialized(record)["layer"].drop_nulls().to_list())
        if self.layer is not None:
            stored.add(self.layer)
        return [name for name in self.store.layers(record) if name in stored]

    def _cards(self) -> None:
        frame = self.disagreements
        if self.flips is not None:  # most moved first: the images the new version changed most
            moved = self.flips.select("image_id", "moved")
            frame = frame.join(moved, on="image_id", how="left", maintain_order="left").sort(
                "moved", descending=True, nulls_last=True, maintain_order=True)
        self._group_ids = {g: frame.filter(pl.col("right") == g)["image_id"].to_list() for g in GROUPS}
        classes = list(self.record.classes)
        shown = frame.head(self._max_cards)
        cards = [{"index": k, "image_id": row["image_id"], "label_name": row["label_name"],
                  "predicted_a": classes[row["predicted_a"]], "predicted_b": classes[row["predicted_b"]],
                  "right": row["right"], "moved": _number(row.get("moved"))}
                 for k, row in enumerate(shown.iter_rows(named=True))]
        self._members = [[card["image_id"]] for card in cards]
        n = frame.height
        with self.hold_trait_notifications():
            self.groups = {g: len(ids) for g, ids in self._group_ids.items()}
            which = "most moved" if self.flips is not None else "first"
            self.title = (f"a = {self.record.model_id} vs b = {self.record_b.model_id} on "
                          f"{self.summary['images']} images: {n} disagreements"
                          + (f" (the {len(cards)} {which} shown)" if n > len(cards) else ""))
            self.cards = cards
            self.version += 1

    def _thumb_ids(self) -> list[str]:
        return [card["image_id"] for card in self.cards]

    # -- attribution agreement (slow: on request) -----------------------------------------------------

    def _attribution_selection(self):
        if self._attribution_images is not None:
            return self.store.select(self._attribution_images)
        return self.store.select(self.disagreements["image_id"].to_list())

    def _attribution_count(self) -> int:
        return len(self._attribution_selection())

    def compute_attribution(self) -> pl.DataFrame | None:
        """What the "attribution agreement" button does: ``compare.attribution_agreement`` on the
        disagreements (or ``attribution_images``), shown as a histogram and on each card.

        While it runs, ``attribution["state"]`` is ``"computing"`` (the browser shows it); then
        ``"done"``, or ``"error"`` with the reason. Returns the frame (None on an error).
        """
        from odinlab.debug import compare

        if self.disagreements is None:  # the view could not be built: its message says why
            self.attribution = {"state": "error", "text": self.message}
            return None
        selection = self._attribution_selection()
        base = {"method": self.attribution_method, "images": len(selection)}
        if len(selection) == 0:
            self.attribution = {**base, "state": "error", "text": "No images to compare attributions on."}
            return None
        self.attribution = {**base, "state": "computing"}
        try:
            frame = compare.attribution_agreement(self.store, self.record, self.record_b, selection,
                                                  method=self.attribution_method)
        except Exception as error:  # noqa: BLE001 - shown in the widget: a button never fails silently
            self.attribution = {**base, "state": "error", "text": f"{type(error).__name__}: {error}"}
            return None
        self.attribution_frame = frame
        rho = frame["spearman"].to_numpy()
        on_cards = set(self._thumb_ids())
        self.attribution = {
            **base, "state": "done", "mean": _number(rho.mean()), "median": _number(np.median(rho)),
            "edges": np.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1).tolist(),
            "hist": _histogram(rho, np.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1)),
            "by_image": {i: _number(r) for i, r in zip(frame["image_id"], rho, strict=True) if i in on_cards}}
        return frame

    # -- the browser and the selection ---------------------------------------------------------------

    def _on_message(self, widget, content, buffers) -> None:
        if isinstance(content, dict) and content.get("kind") == "attribution":
            self.compute_attribution()
        elif isinstance(content, dict) and content.get("kind") == "group":
            self.select_group(content.get("group") if content.get("group") in GROUPS else "")
        else:
            super()._on_message(widget, content, buffers)

    def click(self, index: int) -> None:
        """What a click on card ``index`` does: select its image (a second click clears)."""
        self._quietly(group="")
        super().click(index)

    def select_group(self, right: str) -> None:
        """Select every disagreement that version ``right`` (``"a"``, ``"b"`` or ``"neither"``) gets
        right; ``""`` (or the same group again) clears. What the group buttons do."""
        if right not in ("", *GROUPS):
            raise OptionError(f"A group is one of {', '.join(GROUPS)} (or '' to clear), not {right!r}.")
        self._quietly(chosen=-1)
        self.group = "" if right == self.group else right

    def _quietly(self, **values) -> None:
        self._quiet = True
        try:
            for name, value in values.items():
                setattr(self, name, value)
        finally:
            self._quiet = False

    def _on_group(self, change) -> None:
        self._paint(self.selected_ids or None)
        if not self._quiet:
            self._select_callbacks(self.selected_ids)

    @property
    def selected_ids(self) -> list[str]:
        """The chosen card's image, or every image of the chosen group ([] when none)."""
        if self.group:
            return list(self._group_ids.get(self.group, []))
        return super().selected_ids

    def show_selection(self, ids: list[str] | None) -> None:
        """Highlight the cards of ``ids`` (None clears); a selection that is exactly a group marks
        that group chosen. No callbacks fire."""
        wanted = None if ids is None else {str(i) for i in ids}
        exact = [g for g, members in self._group_ids.items() if wanted and set(members) == wanted]
        self._quietly(group=exact[0] if exact else "")
        if exact:
            self._quietly(chosen=-1)
            self._paint(list(wanted))
        else:
            super().show_selection(ids)

    def __repr__(self) -> str:
        return (f"<CompareView {self.record.model_id} vs {self.record_b.model_id}: "
                f"{len(self.cards)} disagreements shown>")
