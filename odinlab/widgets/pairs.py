"""Boundary pairs: images close in the embedding but predicted differently, shown two by two.

The pairs come from :func:`odinlab.sampling.boundary_pairs` (closest first). Each card holds
the two thumbnails with their labels and predictions and the distance between them; clicking a
card selects both images. Cards travel as a small JSON list; the thumbnails as PNG buffers of one
custom message (a then b, card by card) that the browser asks for when it renders.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from odinlab.errors import BoundaryError, OdinError, UnknownColumnError
from odinlab.widgets.clusters import _class_name
from odinlab.widgets.cards import CardsView, esm_with_thumbs
from odinlab.widgets.gallery import ThumbnailCache

__all__ = ["PairsView", "pair_cards"]


def pair_cards(pairs: pl.DataFrame, classes: list[str]) -> list[dict]:
    """JSON-ready cards of a ``boundary_pairs`` frame, read by name (extra columns are ignored).

    >>> frame = pl.DataFrame({"image_id_a": ["x"], "image_id_b": ["y"], "distance": [0.5],
    ...                       "predicted_a": [3], "predicted_b": [5], "label_a": [3], "label_b": [3]})
    >>> card = pair_cards(frame, [str(i) for i in range(10)])[0]
    >>> card["a"], card["b"]
    ({'image_id': 'x', 'label_name': '3', 'predicted_name': '3', 'correct': True}, \
{'image_id': 'y', 'label_name': '3', 'predicted_name': '5', 'correct': False})
    """
    for column in ("image_id_a", "image_id_b"):
        if column not in pairs.columns:
            raise UnknownColumnError(f"A boundary-pairs frame needs image_id_a and image_id_b columns; "
                                     f"it has {', '.join(pairs.columns)}.")
    cards = []
    for index, row in enumerate(pairs.iter_rows(named=True)):
        sides = {}
        for side in ("a", "b"):
            fields = {k[:-2]: v for k, v in row.items() if k.endswith(f"_{side}")}
            label, predicted = fields.get("label"), fields.get("predicted")
            sides[side] = {"image_id": str(fields["image_id"]), "label_name": _class_name(fields, "label", classes),
                           "predicted_name": _class_name(fields, "predicted", classes),
                           "correct": None if label is None or predicted is None else bool(label == predicted)}
        distance = row.get("distance")
        cards.append({"index": index, "distance": None if distance is None else float(distance), **sides})
    return cards


class PairsView(CardsView):
    """The ``n`` closest pairs of images across a decision boundary of ``model`` in ``embedding``
    (a fitted :class:`~odinlab.sampling.Embedding`), as a gallery of pairs.

    Clicking a pair selects both images (``selected_ids``, ``on_select``); clicking it again
    clears. A selection shown from elsewhere marks the pairs that hold selected images.
    ``pairs`` takes a precomputed ``boundary_pairs`` frame; ``k`` goes to ``boundary_pairs``.
    Problems (an embedding too small, no two classes predicted) are shown as ``message``.

    >>> emb = odinlab.sampling.Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("test")
    >>> view = PairsView(store, "cnn@1", emb, n=5)
    >>> view.click(0)                         # what a click on the closest pair does
    >>> view.selected_ids == [view.cards[0]["a"]["image_id"], view.cards[0]["b"]["image_id"]]
    True
    """

    _esm = esm_with_thumbs("pairs.js")
    _css = Path(__file__).with_name("pairs.css")

    _count_dtype = "u1"  # 0, 1 or 2 images of a pair selected

    def __init__(self, store, model, embedding=None, *, n: int = 20, k: int = 5, pairs: pl.DataFrame | None = None,
                 thumb_size: int = 64, thumbnails: ThumbnailCache | None = None, **kwargs):
        super().__init__(store, model, thumb_size=thumb_size, thumbnails=thumbnails, **kwargs)
        self.embedding = embedding
        self.pairs = self._load(pairs, n, k)

    def _load(self, pairs, n: int, k: int) -> pl.DataFrame | None:
        if pairs is None:
            if self.embedding is None:
                self.message = ("No embedding to look for pairs in: give a fitted odinlab.sampling.Embedding, e.g. "
                                "Embedding(store, model, 'head.fc1').fit('test').")
                return None
            if not hasattr(self.embedding, "image_ids_"):
                self.message = "The embedding is not fitted yet: call .fit(images) on it first."
                return None
            embedded = len(self.embedding.image_ids_)
            if embedded < 2:
                self.message = (f"The embedding holds {embedded} image{'s' * (embedded != 1)}: boundary pairs "
                                "need at least 2. Fit it on more images.")
                return None
            from odinlab.sampling import boundary_pairs

            try:
                pairs = boundary_pairs(self.store, self.record, self.embedding, n=n, k=k)
            except BoundaryError as error:
                self.message = f"{error} Fit the embedding on more images."
                return None
            except OdinError as error:
                self.message = str(error)
                return None
        cards = pair_cards(pairs, list(self.record.classes))
        if not cards:
            self.message = (f"No boundary pairs: no two nearby images are predicted differently by "
                            f"{self.record.model_id} (it predicts one class for all of them, or k={k} is too small).")
            return pairs
        self._members = [[card["a"]["image_id"], card["b"]["image_id"]] for card in cards]
        with self.hold_trait_notifications():
            self.title = f"{len(cards)} closest pairs across a decision boundary of {self.record.model_id}"
            self.cards = cards
            self.version += 1
        return pairs

    def _thumb_ids(self) -> list[str]:
        return self.ids  # a then b, pair by pair

    def __repr__(self) -> str:
        return f"<PairsView {self.record.model_id}: {len(self.cards)} pairs>"
