"""Errors of the ``%%odin`` language: every message points at the line and token it is about.

>>> print(pointed("Unknown layer 'fc9'.", "top units of cnn at fc9", 1, 21, 3))
line 1: Unknown layer 'fc9'.
    top units of cnn at fc9
                        ^^^
"""

from __future__ import annotations

from odinlab.errors import OdinError


class OdinLanguageError(OdinError, ValueError):
    """A mistake in a ``%%odin`` statement (unknown name, wrong kind of value...), pointed at its token."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.line, self.column = line, column


class OdinSyntaxError(OdinLanguageError):
    """Text that is not a ``%%odin`` statement: the message shows the line, a caret and what was expected."""


def pointed(message: str, text: str, line: int, column: int, width: int = 1) -> str:
    """``message`` preceded by its line number, followed by the source line and a caret under the token."""
    lines = text.split("\n")
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    prefix = "" if message.startswith(("Syntax error", "line ")) else f"line {line}: "
    caret = " " * (column - 1) + "^" * max(1, width)
    return f"{prefix}{message}\n    {source}\n    {caret}"
