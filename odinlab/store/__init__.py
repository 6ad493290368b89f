"""The odinlab store: Zarr arrays and polars tables for images, models, experiments and results."""

from odinlab.store.records import ModelRecord
from odinlab.store.selection import ImageSelection, Selection
from odinlab.store.store import Store, open_store

__all__ = ["ImageSelection", "ModelRecord", "Selection", "Store", "open_store"]
