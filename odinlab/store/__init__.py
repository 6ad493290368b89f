"""The odinlab store: Zarr arrays and polars tables for images, models and experiments."""

from odinlab.store.store import Store, open_store

__all__ = ["Store", "open_store"]
