"""One error hierarchy for odinlab.

Every error is an :class:`OdinError` and also inherits the builtin it resembles, so
``except KeyError`` and ``except OdinError`` both work. Messages name the bad value and
the fix, e.g. ``Unknown model 'cnm'. Did you mean: cnn? Models: cnn, mlp``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class OdinError(Exception):
    """Base class of every error odinlab raises on purpose."""

    def __str__(self) -> str:
        # KeyError quotes its message; our messages are sentences, so print them as is.
        return str(self.args[0]) if self.args else ""


class StoreError(OdinError, OSError):
    """The path is not an odinlab store, or the store cannot be used as asked."""


class ReadOnlyStoreError(OdinError, PermissionError):
    """A write was attempted on a store opened with ``mode="r"``."""


class ImageFormatError(OdinError, ValueError):
    """Images have the wrong shape, dtype or values (NaN, wrong channel count...)."""


class LabelError(OdinError, ValueError):
    """Labels are missing, misaligned or outside the store's classes."""


class DuplicateImageError(OdinError, ValueError):
    """An image id is already in the store (or repeated in the same call)."""


class UnknownImageError(OdinError, KeyError):
    """An image id, or a split, that the store does not hold."""


class UnknownModelError(OdinError, KeyError):
    """A model name or ``name@version`` that the store does not hold."""


class UnknownLayerError(OdinError, ValueError):
    """A layer name that the model does not have."""


class NotMaterializedError(OdinError, LookupError):
    """Stored results that do not exist yet, and no module to compute them with."""


class WeightsMismatchError(OdinError, ValueError):
    """Stored weights do not fit the module they are loaded into."""


class InvalidNameError(OdinError, ValueError):
    """A name that cannot be used (it would escape the store, or is empty)."""


class TestSetReuseWarning(UserWarning):
    """The test split was looked at again after hyper-parameters changed."""

    __test__ = False  # not a pytest test class, despite the name


def closest(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the choices closest to ``value``, or ``""``.

    >>> closest("fc3", ["fc1", "conv1"])
    ' Did you mean: fc1?'
    """
    matches = difflib.get_close_matches(value, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""


def listing(choices: Iterable[str], limit: int = 20) -> str:
    """Comma-separated list of choices, shortened past ``limit`` entries.

    >>> listing(["a", "b"])
    'a, b'
    """
    items = list(choices)
    if not items:
        return "(none)"
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")
