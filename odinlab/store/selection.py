"""A resolved image selection: which images, once, in order, ready to travel between calls.

Every function that takes ``images=`` accepts what :meth:`odinlab.Store.select` accepts
(None for all, a split name, an image id, a list of ids, a frame or Series of ``image_id``,
a SQL query returning ``image_id``, a polars expression over the images table) or a
:class:`Selection` that ``store.select`` already resolved. A selection is resolved once:
passing it on costs nothing, so a SQL query is run once however many functions use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from odinlab.errors import SelectionError


class Selection:
    """Images chosen from one store, in the order chosen (repeats allowed).

    ``frame`` is the rows of ``store.images`` (image_id, split, label, label_name, metadata);
    ``rows`` are their positions in the store's row-aligned arrays (pixels, activations,
    attributions...), which is what array readers need; ``ids`` and ``labels`` are shortcuts.
``label_set`` names the label set whose labels ``frame`` and ``labels`` hold (None: the
original labels; ``store.select(images, labels="reviewed")`` makes one).
    Indexing with a slice, an integer array or a boolean mask gives a smaller selection; with a
    column name, that column of ``frame``.

    >>> test = store.select("test")
    >>> len(test), test.ids[:2]
    (270, ['digits-0002', 'digits-0039'])
    >>> len(test[:10]), len(test[test.labels == 3])
    (10, 28)
    """

    __slots__ = ("_frame", "_rows", "store_url", "description", "label_set")

    def __init__(self, frame: pl.DataFrame, rows: np.ndarray, store_url: str, description: str = "",
                 label_set: str | None = None):
        self._frame = frame
        self._rows = np.asarray(rows, dtype=np.int64)
        self._rows.setflags(write=False)
        self.store_url = store_url
        self.description = description
        self.label_set = label_set

    @property
    def frame(self) -> pl.DataFrame:
        """The selected rows of ``store.images``, in selection order."""
        return self._frame

    @property
    def rows(self) -> np.ndarray:
        """Positions of the selected images in the store's row-aligned arrays (read-only)."""
        return self._rows

    @property
    def ids(self) -> list[str]:
        """The selected image ids, in order."""
        return self._frame["image_id"].to_list()

    @property
    def labels(self) -> np.ndarray:
        """Class indices of the selected images, -1 where an image has no label."""
        return self._frame["label"].fill_null(-1).to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index) -> Selection | pl.Series:
        if isinstance(index, str):  # a column of the frame, as with a polars frame
            return self._frame[index]
        if isinstance(index, int | np.integer):
            index = [int(index)]
        if isinstance(index, slice):
            frame, rows = self._frame[index], self._rows[index]
        else:
            index = np.asarray(index)
            if index.dtype == bool:
                index = np.flatnonzero(index)
            frame, rows = self._frame[index.tolist()], self._rows[index]
        return Selection(frame, rows, self.store_url, self.description, self.label_set)

    def where(self, mask: np.ndarray | pl.Series | pl.Expr) -> Selection:
        """The images of this selection where ``mask`` holds (a boolean array or expression).

        >>> len(store.select("test").where(pl.col("label") == 3))
        28
        """
        if isinstance(mask, pl.Expr):
            mask = self._frame.select(mask.fill_null(False)).to_series()
        return self[np.asarray(mask, dtype=bool)]

    def unique(self) -> Selection:
        """The same images once each, in row order (the order arrays are written in).

        >>> len(store.select(["digits-0001", "digits-0000", "digits-0001"]).unique())
        2
        """
        _, first = np.unique(self._rows, return_index=True)
        return self[first]

    def chunks(self, size: int):
        """Consecutive sub-selections of at most ``size`` images (for batched work)."""
        for start in range(0, len(self), size):
            yield self[start : start + size]

    def __iter__(self):
        raise SelectionError("Iterate over selection.ids (image ids) or selection.chunks(n) (batches).")

    def __repr__(self) -> str:
        what = f" {self.description}" if self.description else ""
        labels = f" with labels {self.label_set!r}" if self.label_set is not None else ""
        return f"<Selection of {len(self)} images{what}{labels} from {self.store_url!r}>"

    def _repr_html_(self) -> str:
        labels = f" with labels {self.label_set!r}" if self.label_set is not None else ""
        return f"<p>{len(self)} images{' ' + self.description if self.description else ''}{labels}</p>" + \
            self._frame._repr_html_()


# What `images=` accepts everywhere.
ImageSelection = str | Sequence[str] | pl.DataFrame | pl.Series | pl.Expr | Selection | None


def describe(images) -> str:
    """A short description of what was asked, for reprs and messages.

    >>> describe("test"), describe(["a", "b"])
    ("'test'", '2 ids')
    """
    if images is None:
        return "all"
    if isinstance(images, str):
        return repr(images if len(images) < 60 else images[:57] + "...")
    if isinstance(images, pl.Expr):
        return str(images)
    if isinstance(images, Sequence | pl.Series | np.ndarray):
        return f"{len(images)} ids"
    if isinstance(images, pl.DataFrame):
        return f"{images.height} ids"
    return type(images).__name__
