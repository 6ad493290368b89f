"""The unit view: one unit (a channel of a convolutional layer, a neuron of a flat one) of a model.

It shows the unit's activation-maximization image (:class:`odinlab.debug.maximize.Maximizer`,
stored in the store: a stored image is shown at once, otherwise a button computes it), beside
its top-activating and least-activating real images (:func:`odinlab.debug.units.top_images`,
``lowest=True`` for the least) and the labels and metadata values it tracks best
(:func:`odinlab.debug.units.unit_scores`, by the label and by each metadata column; cached, all
units at once, so switching units is cheap). A button selects its top images.

The thumbnails (top then least, at ``thumb_size``) travel as PNG buffers of one custom message
that the browser asks for when the unit changes; the optimized image as a PNG trait.
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import numpy as np
import polars as pl
import traitlets

from odinlab.errors import NotMaterializedError, OdinError, OptionError, UnknownUnitError
from odinlab.widgets.cards import esm_with_thumbs
from odinlab.widgets.detail import _png
from odinlab.widgets.gallery import ThumbnailCache, _Callbacks, describe_images, pack_mask

__all__ = ["UnitView"]

NOT_TRACKED = ("image_id", "label_name", "split")  # columns whose scores say nothing about a unit


class UnitView(anywidget.AnyWidget):
    """Unit ``unit`` of ``layer`` of ``model`` on ``images``: what makes it fire.

    ``unit=None`` shows the unit that best separates one label from the others. ``k`` top and
    least-activating images are shown; ``by`` lists the columns whose values it tracks
    (default: the label and every metadata column but ids and the split), ``n_scores`` the
    best values shown per column. The maximization uses ``steps`` and ``seed`` (or a given
    ``maximizer``); ``maximize=True`` computes it for every unit shown, otherwise only a stored
    one is shown and the "maximize" button computes it (it needs the network in this session:
    ``store.load_weights(MyNet(), model_id)``). :meth:`show_unit` switches unit. Problems (a
    layer that is not stored and no network, an unknown layer or unit) are shown as ``message``.

    View contract: ``ids`` are the top then the least-activating images; the "select top images"
    button (:meth:`select_top`) selects the top images (``selected_ids``, ``on_select``);
    ``show_selection(ids)`` marks the shown images that are in ``ids``.

    >>> _ = store.materialize(net, ["features.relu2"], images="test", progress=False)
    >>> view = UnitView(store, "cnn@1", "features.relu2", 5, "test", k=4, steps=8)
    >>> len(view.top) <= 4, view.scores[0]["by"]
    (True, 'label')
    >>> view.select_top()                  # what the button does
    >>> view.selected_ids == [row["image_id"] for row in view.top]
    True
    >>> view.compute_maximization(); view.maximized[:4]
    b'\\x89PNG'
    """

    _esm = esm_with_thumbs("unit_view.js")
    _css = Path(__file__).with_name("unit_view.css")

    message = traitlets.Unicode("").tag(sync=True)     # shown instead of the view when not empty
    title = traitlets.Unicode("").tag(sync=True)
    unit = traitlets.Int(0).tag(sync=True)
    n_units = traitlets.Int(0).tag(sync=True)
    top = traitlets.List(traitlets.Dict()).tag(sync=True)   # [{rank, image_id, label_name, activation}]
    low = traitlets.List(traitlets.Dict()).tag(sync=True)
    dead = traitlets.Unicode("").tag(sync=True)        # why there are no top images ("" = a live unit)
    scores = traitlets.List(traitlets.Dict()).tag(sync=True)  # [{by, value, auc|rho, score}]
    scores_note = traitlets.Unicode("").tag(sync=True)
    maximized = traitlets.Bytes(b"").tag(sync=True)    # PNG of the optimized image ("" = none yet)
    max_status = traitlets.Unicode("").tag(sync=True)  # "", "computing", or why there is no image
    max_value = traitlets.Float(None, allow_none=True).tag(sync=True)
    selected = traitlets.Bool(False).tag(sync=True)    # the top images are the view's selection
    shown = traitlets.Bytes(b"").tag(sync=True)        # mask over ids of a selection shown from elsewhere
    shown_total = traitlets.Int(-1).tag(sync=True)
    thumb_size = traitlets.Int(64).tag(sync=True)
    image_size = traitlets.Int(160).tag(sync=True)
    version = traitlets.Int(0).tag(sync=True)          # bumped when the images change: the browser re-asks

    def __init__(self, store, model, layer: str, unit: int | None = None, images=None, *, k: int = 8,
                 by: list[str] | None = None, n_scores: int = 3, steps: int = 256, seed: int = 0,
                 maximize: bool = False, maximizer=None, thumb_size: int = 64, image_size: int = 160,
                 thumbnails: ThumbnailCache | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise OptionError(f"k must be a positive int, not {k!r}.")
        self.store, self.record, self.layer = store, store.model(model), layer
        self.k, self.n_scores, self.steps, self.seed = k, int(n_scores), steps, seed
        self.auto_maximize, self._maximizer = bool(maximize), maximizer
        self.thumb_size, self.image_size = int(thumb_size), int(image_size)
        self._thumbs = thumbnails if thumbnails is not None and thumbnails.size == thumb_size else \
            ThumbnailCache(store, thumb_size)
        self._images_text = describe_images(images)
        self._select_callbacks = _Callbacks()
        self._quiet = False  # True while Python shows a selection: no on_select (no ping-pong)
        self.images, self._by = None, by
        self.observe(self._on_selected, names=["selected"])
        self.on_msg(self._on_message)
        try:
            self._prepare(images)
            self.show_unit(self._best_unit() if unit is None else unit)
        except NotMaterializedError as error:
            self.message = (f"{error}\nStore the layer first: store.materialize({self.record.model_id!r}, "
                            f"[{layer!r}], images={self._images_text})")
        except OdinError as error:
            self.message = str(error)

    # -- data -------------------------------------------------------------------------------------

    def _prepare(self, images) -> None:
        from odinlab.debug import units

        self.store.check_layers(self.record, [self.layer])
        self.images = self.store.select(images)
        if len(self.images) == 0:
            raise OptionError("No images selected: a unit needs images to rank.")
        architecture = self.store.architecture(self.record)
        shape = dict(zip(architecture["layer"].to_list(), architecture["output_shape"].to_list()))[self.layer]
        self.objective = "channel" if shape and len(shape) == 3 else "neuron"
        self.n_units = int(units.unit_activations(self.store, self.record, self.layer, self.images[:1]).shape[1])
        self.by = list(self._by) if self._by is not None else _tracked_columns(self.images.frame)

    def _best_unit(self) -> int:
        from odinlab.debug import units

        try:
            return int(units.unit_scores(self.store, self.record, self.layer, self.images, by="label")["unit"][0])
        except OdinError:  # one label only: nothing separates; start at the first unit
            return 0

    def show_unit(self, unit: int) -> None:
        """Show unit ``unit`` (its images, scores and maximization); an unknown unit raises
        :class:`~odinlab.errors.UnknownUnitError` and leaves the view as it was."""
        from odinlab.debug import units

        if isinstance(unit, bool) or not isinstance(unit, int | np.integer) or not 0 <= unit < self.n_units:
            raise UnknownUnitError(f"Unit {unit!r} is out of range for {self.layer}: it has units "
                                   f"0..{self.n_units - 1}.")
        unit = int(unit)
        top = units.top_images(self.store, self.record, self.layer, self.images, unit=unit, k=self.k)
        low = units.top_images(self.store, self.record, self.layer, self.images, unit=unit, k=self.k, lowest=True)
        dead = bool(top["dead"].any())
        self._quiet = True
        try:
            with self.hold_trait_notifications():
                self.unit, self.selected, self.shown, self.shown_total = unit, False, b"", -1
                self.top, self.low = ([] if dead else _rows(top)), ([] if dead else _rows(low))
                self.dead = (f"Unit {unit} is dead on these images: {top['activation'][0]:.3g} on every one, "
                             "so no image ranks above another.") if dead else ""
                self.title = (f"{self.objective} {unit} of {self.layer} ({self.record.model_id}), "
                              f"on {len(self.images)} images")
                self.scores, self.scores_note = self._scores(unit)
                self.message = ""
                self.version += 1
        finally:
            self._quiet = False
        self._show_maximization(compute=self.auto_maximize)

    def _scores(self, unit: int) -> tuple[list[dict], str]:
        """The ``n_scores`` values of each ``by`` column that the unit separates best (unit_scores)."""
        from odinlab.debug import units

        rows, problems = [], []
        for column in self.by:
            try:
                frame = units.unit_scores(self.store, self.record, self.layer, self.images, by=column)
            except OdinError as error:  # a column with one value: nothing to separate
                problems.append(f"{column}: {error}")
                continue
            best = frame.filter(pl.col("unit") == unit).head(self.n_scores)
            for row in best.iter_rows(named=True):
                value = row.get("label_name") if column == "label" else row.get(column)
                rows.append({"by": column, "value": None if value is None else str(value),
                             "auc": _float(row.get("auc")), "rho": _float(row.get("rho")),
                             "score": _float(row["score"])})
        return rows, "; ".join(problems)

    # -- the maximization --------------------------------------------------------------------------

    def maximizer(self):
        """The :class:`~odinlab.debug.maximize.Maximizer` used (built on first use; needs the network)."""
        from odinlab.debug.maximize import Maximizer

        if self._maximizer is None:
            self._maximizer = Maximizer(self.store, self.record, steps=self.steps, seed=self.seed)
        return self._maximizer

    def _show_maximization(self, compute: bool) -> None:
        with self.hold_trait_notifications():
            self.maximized, self.max_value = b"", None
            try:
                maximizer = self.maximizer()
                if not compute and not maximizer.is_stored(self.objective, self.layer, self.unit):
                    self.max_status = "not computed yet"
                    return
            except OdinError as error:  # no network in this session, a layer it cannot optimize
                self.max_status = str(error)
                return
        self.max_status = "computing"
        try:
            image = maximizer.maximize(self.objective, self.layer, self.unit)
            value = maximizer.score(image, self.objective, self.layer, self.unit)
        except Exception as error:  # noqa: BLE001 - shown in the widget: a button never fails silently
            self.max_status = f"{type(error).__name__}: {error}"
            return
        from odinlab.draw.maximize import display_image

        stats = maximizer.color_stats
        with self.hold_trait_notifications():
            self.maximized = _png(display_image(image, stats.low, stats.high), self.image_size)
            self.max_value, self.max_status = float(value[0]), ""

    def compute_maximization(self) -> None:
        """What the "maximize" button does: optimize the unit's image (or read it from the store)."""
        if self.message:
            return
        self._show_maximization(compute=True)

    # -- the browser --------------------------------------------------------------------------------

    def thumbnails(self) -> tuple[dict, list[bytes]]:
        """The message and PNGs (top images, then the least-activating) answering the browser."""
        return {"kind": "thumbs", "version": self.version}, self._thumbs(self.ids)

    def _on_message(self, widget, content, buffers) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("kind")
        if kind == "thumbs":
            reply, pngs = self.thumbnails()
            self.send(reply, buffers=pngs)
        elif kind == "maximize":
            self.compute_maximization()
        elif kind == "select":
            self.select_top(not self.selected)
        elif kind == "unit" and isinstance(content.get("unit"), int) and 0 <= content["unit"] < self.n_units:
            self.show_unit(content["unit"])

    # -- the contract ---------------------------------------------------------------------------------

    def select_top(self, on: bool = True) -> None:
        """Select the unit's top images (``on=False``: clear); what the button does."""
        self.selected = bool(on) and bool(self.top)

    def _on_selected(self, change) -> None:
        if not self._quiet:  # the user's own selection replaces any shown from elsewhere
            chosen = self.selected_ids
            self.shown = pack_mask(range(len(chosen)), len(self.ids)) if chosen else b""
            self.shown_total = len(chosen) if chosen else -1
            self._select_callbacks(chosen)

    @property
    def ids(self) -> list[str]:
        """The top images, then the least-activating ones."""
        return [row["image_id"] for row in self.top] + [row["image_id"] for row in self.low]

    @property
    def selected_ids(self) -> list[str]:
        """The top images when they are selected, else []."""
        return [row["image_id"] for row in self.top] if self.selected else []

    def show_selection(self, ids: list[str] | None) -> None:
        """Mark the shown images that are in ``ids`` (None clears); exactly the top images marks
        them selected. No callbacks fire."""
        self._quiet = True
        try:
            wanted = None if ids is None else {str(i) for i in ids}
            top = {row["image_id"] for row in self.top}
            self.selected = bool(wanted) and wanted == top
            positions = [k for k, i in enumerate(self.ids) if wanted and i in wanted]
            self.shown = pack_mask(positions, len(self.ids)) if wanted is not None else b""
            self.shown_total = -1 if wanted is None else len(wanted)
        finally:
            self._quiet = False

    def on_select(self, callback) -> object:
        """Call ``callback(ids)`` when the user selects (or clears) the top images in the browser."""
        return self._select_callbacks.add(callback)

    def __repr__(self) -> str:
        return f"<UnitView {self.record.model_id} {self.layer} unit {self.unit}>"


def _tracked_columns(frame: pl.DataFrame) -> list[str]:
    """The label and the metadata columns a unit can track: not ids (a unique value per image,
    unless a measurement such as a float), not the split.

    >>> _tracked_columns(pl.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "ink": [0.5, 0.7],
    ...                                "source_index": [7, 9], "split": ["test", "test"]}))
    ['label', 'ink']
    """
    columns = ["label"] if "label" in frame.columns else []
    for name, dtype in frame.schema.items():
        identifier = frame[name].n_unique() == frame.height and not dtype.is_float()
        if name not in (*NOT_TRACKED, "label") and not identifier and not isinstance(dtype, pl.List | pl.Array):
            columns.append(name)
    return columns


def _float(value) -> float | None:
    return None if value is None else float(value)


def _rows(frame: pl.DataFrame) -> list[dict]:
    return [{"rank": int(r["rank"]), "image_id": r["image_id"], "label_name": r["label_name"],
             "activation": float(r["activation"])} for r in frame.iter_rows(named=True)]
