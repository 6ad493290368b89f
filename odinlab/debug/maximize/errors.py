"""Errors of activation maximization (the rest come from :mod:`odinlab.errors`)."""

from __future__ import annotations

from odinlab.errors import OdinError


class UnknownObjectiveError(OdinError, ValueError):
    """An objective name that activation maximization does not know."""


class UnitOutOfRangeError(OdinError, IndexError):
    """A unit (class, channel or neuron) outside the layer's or the model's output."""


class TransformError(OdinError, ValueError):
    """A transformation setting that cannot be used (unknown name, bad range)."""
