"""The error clusters: one card per cluster of a model's mistakes, its medoid's thumbnail, its
size and its dominant (true → predicted) pair; clicking a card selects the cluster's members.

The clusters come from :func:`odinlab.debug.error_analysis.error_exemplars` (cached in the
store). Its columns are read by name and extra ones are tolerated (shown in the card's
tooltip), so a later change of how clusters are computed needs no change here. Cards travel
as a small JSON list (tens of rows); the medoid thumbnails travel as PNG buffers of one custom
message that the browser asks for when it renders.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from odinlab.errors import NotMaterializedError, OdinError, UnknownColumnError
from odinlab.widgets.cards import CardsView, esm_with_thumbs
from odinlab.widgets.gallery import ThumbnailCache, describe_images

__all__ = ["ClusterView", "cluster_cards"]

# Columns a card shows itself; any other scalar column goes to the card's tooltip.
CARD_COLUMNS = ("cluster", "image_id", "size", "label", "label_name", "predicted", "predicted_name", "pair_share")


def _class_name(row: dict, column: str, classes: list[str]) -> str | None:
    """``row[column + "_name"]``, or the class name of the index ``row[column]``, or None."""
    name = row.get(f"{column}_name")
    if name is not None:
        return str(name)
    index = row.get(column)
    if isinstance(index, int) and 0 <= index < len(classes):
        return classes[index]
    return None if index is None else str(index)


def _plain(value):
    if isinstance(value, float):
        return round(value, 4)
    return value if isinstance(value, str | int | bool) or value is None else str(value)


def cluster_cards(clusters: pl.DataFrame, classes: list[str]) -> tuple[list[dict], list[list[str]]]:
    """The cards (JSON-ready dicts) and member ids of an ``error_exemplars`` frame, read by name.

    Needs ``image_ids`` (the members); ``image_id`` (the medoid) defaults to the first member,
    ``cluster`` to the row number, ``size`` to the number of members.

    >>> frame = pl.DataFrame({"cluster": [4], "image_id": ["b"], "size": [2], "label": [3], "predicted": [5],
    ...                       "pair_share": [0.5], "image_ids": [["a", "b"]], "new_score": [0.25]})
    >>> cards, members = cluster_cards(frame, [str(i) for i in range(10)])
    >>> cards[0]["label_name"], cards[0]["predicted_name"], cards[0]["extra"], members
    ('3', '5', {'new_score': 0.25}, [['a', 'b']])
    """
    if "image_ids" not in clusters.columns:
        raise UnknownColumnError(f"An error-clusters frame needs an image_ids column (each cluster's members); "
                                 f"it has {', '.join(clusters.columns)}.")
    cards, members = [], []
    scalar = [c for c, t in clusters.schema.items()
              if c not in CARD_COLUMNS and c != "image_ids" and not isinstance(t, pl.List | pl.Array | pl.Struct)]
    for index, row in enumerate(clusters.iter_rows(named=True)):
        ids = [str(i) for i in (row["image_ids"] or [])]
        share = row.get("pair_share")
        cards.append({
            "index": index, "cluster": row.get("cluster", index), "image_id": str(row.get("image_id") or ids[0]),
            "size": int(row.get("size") or len(ids)), "label_name": _class_name(row, "label", classes),
            "predicted_name": _class_name(row, "predicted", classes),
            "pair_share": None if share is None else float(share),
            "extra": {c: _plain(row[c]) for c in scalar},
        })
        members.append(ids)
    return cards, members


class ClusterView(CardsView):
    """The error clusters of ``model`` on ``images`` in ``layer``'s space, largest first.

    Each card shows the medoid's thumbnail, the cluster's size and its dominant (true →
    predicted) pair with the share of the cluster it covers. Clicking a card selects the
    cluster's members (``selected_ids``, ``on_select``); clicking it again clears. A selection
    shown from elsewhere (``show_selection``) marks on each card how many of its members are
    selected. ``clusters`` takes a precomputed ``error_exemplars`` frame; ``n_clusters`` and
    ``seed`` go to ``error_exemplars``. Problems (no stored predictions, an unknown layer, a
    model without mistakes) are shown as ``message``.

    >>> _ = store.materialize(net, ["head.fc1"], images="test", progress=False)
    >>> view = ClusterView(store, "cnn@1", "head.fc1", "test")
    >>> view.click(0)                              # what a click on the largest cluster does
    >>> len(view.selected_ids) == view.cards[0]["size"]
    True
    """

    _esm = esm_with_thumbs("clusters.js")
    _css = Path(__file__).with_name("clusters.css")

    def __init__(self, store, model, layer: str = "head.fc1", images=None, *, clusters: pl.DataFrame | None = None,
                 n_clusters: int | None = None, seed: int = 0, thumb_size: int = 64,
                 thumbnails: ThumbnailCache | None = None, **kwargs):
        super().__init__(store, model, thumb_size=thumb_size, thumbnails=thumbnails, **kwargs)
        self.layer = layer
        self.clusters = self._load(images, clusters, n_clusters, seed)

    def _load(self, images, clusters, n_clusters, seed) -> pl.DataFrame | None:
        model_id = self.record.model_id
        if clusters is None:
            selection = self.store.select(images)
            if len(selection) == 0:
                self.message = "No images selected: there are no mistakes to cluster."
                return None
            try:
                self.store.check_layers(self.record, [self.layer])
                clusters = _exemplars(self.store, self.record, self.layer, selection, n_clusters, seed)
            except NotMaterializedError as error:
                self.message = (f"{error}\nStore the predictions and the layer first: store.materialize("
                                f"{model_id!r}, [{self.layer!r}], images={describe_images(images)})")
                return None
            except OdinError as error:
                self.message = str(error)
                return None
        cards, self._members = cluster_cards(clusters, list(self.record.classes))
        if not cards:
            self.message = (f"{model_id} makes no mistakes on these images: there are no error clusters to show. "
                            "Try harder images, or a less trained version.")
            return clusters
        mistakes = sum(len(m) for m in self._members)
        with self.hold_trait_notifications():
            self.title = f"{len(cards)} clusters of the {mistakes} mistakes of {model_id} in {self.layer}"
            self.cards = cards
            self.version += 1
        return clusters

    def _thumb_ids(self) -> list[str]:
        return [card["image_id"] for card in self.cards]  # the medoids

    def __repr__(self) -> str:
        return f"<ClusterView {self.record.model_id} {self.layer}: {len(self.cards)} clusters>"


def _exemplars(store, record, layer: str, selection, n_clusters, seed) -> pl.DataFrame:
    # imported here: the analyses pull sklearn, which the other views never need
    from odinlab.debug.error_analysis import error_exemplars

    return error_exemplars(store, record, layer, selection, n_clusters=n_clusters, seed=seed)
