"""One error hierarchy for odinlab.

Every error is an :class:`OdinError` and also inherits the builtin it resembles, so
``except KeyError`` and ``except OdinError`` both work. Messages name the bad value and
the fix, e.g. ``Unknown model 'cnm'. Did you mean: cnn? Models: cnn, mlp``.

One class per idea, each raised only for its meaning:

>>> issubclass(UnknownLayerError, ValueError), issubclass(UnknownModelError, KeyError)
(True, True)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class OdinError(Exception):
    """Base class of every error odinlab raises on purpose."""

    def __str__(self) -> str:
        # KeyError quotes its message; our messages are sentences, so print them as is.
        return str(self.args[0]) if self.args else ""


# -- the store ------------------------------------------------------------------------------

class StoreError(OdinError, OSError):
    """The path is not an odinlab store, or the store cannot be used as asked."""


class ReadOnlyStoreError(OdinError, PermissionError):
    """A write was attempted on a store opened with ``mode="r"``."""


class CorruptStoreError(OdinError, OSError):
    """Stored bytes are damaged or missing: a chunk, a table, a weights file. Names what and where."""


class StoreBusyError(OdinError, TimeoutError):
    """Another writer held the store for longer than the wait allowed; names that writer."""


class QueryError(OdinError, ValueError):
    """SQL that reaches outside the store's tables (files, table functions) or cannot run."""


class InvalidNameError(OdinError, ValueError):
    """A name that cannot be used (it would escape the store, or is empty)."""


class OptionError(OdinError, ValueError):
    """An option outside the values it accepts (a dtype, a mode, a batch size, a size...)."""


class ImageFormatError(OdinError, ValueError):
    """Images have the wrong shape, dtype or values (NaN, wrong channel count...)."""


class LabelError(OdinError, ValueError):
    """Labels are missing, misaligned or outside the store's classes."""


class DuplicateImageError(OdinError, ValueError):
    """An image id is already in the store (or repeated in the same call)."""


class UnknownImageError(OdinError, KeyError):
    """An image id, or a split, that the store does not hold."""


class SelectionError(OdinError, TypeError):
    """Something given as ``images=`` that is not an image selection, or from another store."""


class UnknownModelError(OdinError, KeyError):
    """A model name or ``name@version`` that the store does not hold."""


class LineageError(OdinError, ValueError):
    """A new version of an existing model name given without its parent."""


class UnknownLayerError(OdinError, ValueError):
    """A layer name that the model does not have."""


class UnknownTableError(OdinError, KeyError):
    """A table name in SQL that the store does not have."""


class UnknownColumnError(OdinError, KeyError):
    """A column (of the images table or a result) that does not exist."""


class UnknownValueError(OdinError, KeyError):
    """A value (a class name, a metadata value) that a column does not hold."""


class NotMaterializedError(OdinError, LookupError):
    """Stored results that do not exist yet, and no module to compute them with."""


class WeightsMismatchError(OdinError, ValueError):
    """Stored weights do not fit the module they are loaded into, or a module given for a
    version does not hold that version's weights."""


# -- debugging ------------------------------------------------------------------------------

class UnknownMethodError(OdinError, ValueError):
    """An attribution method that Captum (or odinlab's list of it) does not have."""


class TargetError(OdinError, ValueError):
    """An attribution or maximization target that is not 'label', 'prediction' or a class."""


class RegionError(OdinError, ValueError):
    """A region (mask or box) that does not fit the images."""


class ComparisonError(OdinError, ValueError):
    """Two models that cannot be compared (different classes, different images)."""


class UnknownUnitError(OdinError, IndexError):
    """A unit (class, channel or neuron) outside the layer's or the model's output."""


class UnknownObjectiveError(OdinError, ValueError):
    """An objective name that activation maximization does not know."""


class TransformError(OdinError, ValueError):
    """A transformation setting that cannot be used (unknown name, bad range)."""


class UnsupportedLayerError(OdinError, TypeError):
    """A layer whose per-sample gradients cannot be kept compactly (only Linear and Conv2d)."""


class FormError(OdinError, ValueError):
    """A gradient form other than 'auto', 'compact' or 'full'."""


class QueryShapeError(OdinError, ValueError):
    """A dense query gradient whose shape does not match the layer's weights."""


# -- sampling -------------------------------------------------------------------------------

class EmbeddingError(OdinError, ValueError):
    """An embedding that cannot be fitted or used as asked."""


class BoundaryError(OdinError, ValueError):
    """Decision-boundary scores that cannot be computed (no predictions, too few images)."""


class SampleSizeError(OdinError, ValueError):
    """A sample larger than the set it is drawn from, or empty."""


# -- warnings -------------------------------------------------------------------------------

class TestSetReuseWarning(UserWarning):
    """The test split was looked at again after hyper-parameters changed."""

    __test__ = False  # not a pytest test class, despite the name


class InSampleWarning(UserWarning):
    """Label quality judged from a model's probabilities on images it trained on (it learned their labels)."""


def closest(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the choices closest to ``value``, or ``""``.

    >>> closest("fc3", ["fc1", "conv1"])
    ' Did you mean: fc1?'
    """
    matches = difflib.get_close_matches(str(value), [str(c) for c in choices], n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""


def listing(choices: Iterable[str], limit: int = 20) -> str:
    """Comma-separated list of choices, shortened past ``limit`` entries.

    >>> listing(["a", "b"])
    'a, b'
    """
    items = [str(c) for c in choices]
    if not items:
        return "(none)"
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


ERRORS = [name for name, value in dict(globals()).items()
          if isinstance(value, type) and issubclass(value, (OdinError, Warning))]
__all__ = [*ERRORS, "closest", "listing"]
