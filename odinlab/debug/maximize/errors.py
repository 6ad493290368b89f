"""Errors of activation maximization, kept importable here; they live in :mod:`odinlab.errors`."""

from odinlab.errors import TransformError, UnknownObjectiveError, UnknownUnitError

UnitOutOfRangeError = UnknownUnitError  # one name per idea: a unit outside the output

__all__ = ["TransformError", "UnitOutOfRangeError", "UnknownObjectiveError", "UnknownUnitError"]
