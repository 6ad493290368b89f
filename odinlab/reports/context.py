"""What every section of a report needs: the store, the models, the images, and pictures of them.

Thumbnails and attribution overlays are made once per image and shared by the sections; the
attribution needs the network of the first model in this session, and when there is none the
sections say why instead of showing overlays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from odinlab.errors import OdinError
from odinlab.reports.blocks import image
from odinlab.store.records import ModelRecord
from odinlab.store.selection import Selection

# Columns of store.images that are not metadata (the rest is shown with an image).
NOT_METADATA = ("image_id", "split", "label", "label_name")


@dataclass
class Context:
    """The inputs of a report, resolved once, and the caches its sections share.

    >>> ctx = Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1")
    >>> ctx.model.model_id, len(ctx.selection), ctx.metadata_columns
    ('cnn@1', 269, ['ink', 'source_index'])
    """

    store: object
    records: list[ModelRecord]
    selection: Selection
    layer: str
    unit_layer: str | None = None
    images_label: str = ""
    k: int = 12
    thumb_size: int = 64
    attribution: str | None = "integrated_gradients"
    attribution_options: dict = field(default_factory=lambda: {"n_steps": 32})
    embedding: str = "umap"
    units: int = 3
    max_steps: int = 256
    _thumbs: dict = field(default_factory=dict, repr=False)
    _overlays: dict = field(default_factory=dict, repr=False)
    _attributor: object = field(default=None, repr=False)
    attribution_problem: str = ""

    @property
    def model(self) -> ModelRecord:
        """The first model: the one every single-model section is about."""
        return self.records[0]

    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.store.images.columns if c not in NOT_METADATA]

    def thumbnails(self, ids: list[str]) -> dict[str, bytes]:
        """PNG thumbnails of ``ids`` (``thumb_size`` pixels), made once per image.

        >>> ctx = Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1")
        >>> ctx.thumbnails(["digits-0007"])["digits-0007"][:4]
        b'\\x89PNG'
        """
        missing = [i for i in dict.fromkeys(ids) if i not in self._thumbs]
        if missing:
            self._thumbs.update(zip(missing, self.store.thumbnails(missing, size=self.thumb_size), strict=True))
        return {i: self._thumbs[i] for i in ids}

    def overlays(self, ids: list[str]) -> dict[str, bytes]:
        """Attribution overlays (PNG) of the first model's prediction for ``ids``; empty when they cannot
        be made, with the reason in ``attribution_problem``.

        >>> ctx = Context(store, [store.model("cnn@1")], store.select("val"), "head.fc1",
        ...               attribution="saliency", attribution_options={})
        >>> list(ctx.overlays(["digits-0007"]))
        ['digits-0007']
        """
        missing = [i for i in dict.fromkeys(ids) if i not in self._overlays]
        if missing and self._attributor_or_none() is not None:
            from odinlab.draw.images import overlay
            from odinlab.widgets.detail import _png

            try:
                maps = self._attributor.attribute(missing, progress=False)
            except OdinError as error:
                self.attribution_problem = str(error)
                return {}
            for image_id, pixels, values in zip(missing, self.store.pixels(missing), maps.values, strict=True):
                self._overlays[image_id] = _png(overlay(pixels, values), self.thumb_size)
        return {i: self._overlays[i] for i in ids if i in self._overlays}

    def _attributor_or_none(self):
        if self._attributor is None and not self.attribution_problem:
            if self.attribution is None:
                self.attribution_problem = "Attribution overlays were turned off (attribution=None)."
                return None
            from odinlab.debug.attribution import Attributor

            try:
                self._attributor = Attributor(self.store, self.model, self.attribution, **self.attribution_options)
            except OdinError as error:  # most often: no network for the version in this session
                self.attribution_problem = str(error)
        return self._attributor

    def pictures(self, image_id: str, *, overlay: bool = True) -> list[dict]:
        """The image (and its attribution overlay when there is one) as card pictures."""
        shown = [image(self.thumbnails([image_id])[image_id], image_id, "image")]
        if overlay:
            heat = self.overlays([image_id]).get(image_id)
            if heat is not None:
                shown.append(image(heat, f"attribution of {image_id}", self.attribution or ""))
        return shown

    def metadata_lines(self, row: dict) -> list[str]:
        """``column: value`` lines of an image's metadata (from a row that has its columns)."""
        from odinlab.reports.blocks import cell

        return [f"{c}: {cell(row[c])}" for c in self.metadata_columns if c in row]


def rows_by_id(frame: pl.DataFrame) -> dict[str, dict]:
    """Rows of a frame with ``image_id`` as dicts, by id."""
    return {row["image_id"]: row for row in frame.iter_rows(named=True)}
