"""odinlab: debug PyTorch image classifiers in JupyterLab, with a store that remembers.

>>> import odinlab
>>> store = odinlab.open_store("memory://quick")
>>> store.ingest(odinlab.datasets.digits()).height
1797
"""

from odinlab import datasets
from odinlab.errors import (
    DuplicateImageError,
    ImageFormatError,
    InvalidNameError,
    LabelError,
    NotMaterializedError,
    OdinError,
    ReadOnlyStoreError,
    StoreError,
    TestSetReuseWarning,
    UnknownImageError,
    UnknownLayerError,
    UnknownModelError,
    WeightsMismatchError,
)
from odinlab.store import Store, open_store

__version__ = "0.1.0"

__all__ = [
    "DuplicateImageError", "ImageFormatError", "InvalidNameError", "LabelError", "NotMaterializedError", "OdinError",
    "ReadOnlyStoreError", "Store", "StoreError", "TestSetReuseWarning", "UnknownImageError",
    "UnknownLayerError", "UnknownModelError", "WeightsMismatchError", "datasets", "open_store",
]
