"""Per-image arrays that carry their image ids: xarray DataArrays with an ``image_id`` axis.

A result with one row per image (activations, attribution maps, gradient norms, coordinates)
comes back labelled, so it joins the images table without guessing which row is which:
``result.image_id`` holds the ids, ``result.values`` the numpy array, ``result.sel(image_id=...)``
picks by id, and ``result.to_pandas()`` or :func:`to_frame` give a table. xarray also wraps
Dask arrays, so lazy reads keep their labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import xarray as xr

# Names for the per-image axes of common shapes.
DIMS = {1: ("unit",), 2: ("y", "x"), 3: ("channel", "y", "x")}


def labelled(values, image_ids: Sequence[str], dims: Sequence[str] | None = None, name: str | None = None,
             **attrs) -> xr.DataArray:
    """``values`` (N, ...) as a DataArray whose first axis is ``image_id``.

    >>> a = labelled(np.zeros((2, 3)), ["a", "b"], name="head.fc1")
    >>> a.dims, a.image_id.values.tolist()
    (('image_id', 'unit'), ['a', 'b'])
    """
    if dims is None:
        dims = DIMS.get(values.ndim - 1, tuple(f"dim_{i}" for i in range(1, values.ndim)))
    return xr.DataArray(values, dims=("image_id", *dims), coords={"image_id": list(image_ids)},
                        name=name, attrs=attrs)


def to_frame(array: xr.DataArray, column: str | None = None) -> pl.DataFrame:
    """A labelled array as a polars frame: ``image_id`` and one column (a list column when an
    image has more than one value).

    >>> to_frame(labelled(np.array([1.0, 2.0]), ["a", "b"], dims=(), name="norm")).rows()
    [('a', 1.0), ('b', 2.0)]
    """
    column = column or array.name or "value"
    values = np.asarray(array.values)
    flat = values if values.ndim == 1 else values.reshape(len(values), -1)
    return pl.DataFrame({"image_id": array.image_id.values.tolist(), column: flat})
