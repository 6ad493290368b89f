"""The AST of the ``%%odin`` language: plain frozen dataclasses, each with its source position.

``line`` and ``column`` are 1-based and point at the node's first character; ``end`` is the
column just past its last character on that line (for carets under the whole token).

>>> from odinlab.lang.parser import parse
>>> parse("images where split = test")[0].source.conditions[0].field.text
'split'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    line: int
    column: int
    end: int


@dataclass(frozen=True)
class Ident(Node):
    """A bare name: a column, a layer, a method, a widget, a class."""
    text: str


@dataclass(frozen=True)
class ModelRef(Node):
    """``name@version``, or ``name`` for its latest version."""
    text: str


@dataclass(frozen=True)
class Value(Node):
    """A literal: a number, a quoted string or a bare word (``kind`` says which)."""
    value: object
    kind: str  # "number", "string" or "word"


# -- sources --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Images(Node):
    conditions: tuple = ()
    limit: int | None = None


@dataclass(frozen=True)
class Models(Node):
    conditions: tuple = ()
    limit: int | None = None


@dataclass(frozen=True)
class Experiments(Node):
    conditions: tuple = ()
    limit: int | None = None


@dataclass(frozen=True)
class Sql(Node):
    query: str


@dataclass(frozen=True)
class Use(Node):
    target: str
    is_path: bool


@dataclass(frozen=True)
class Help(Node):
    topic: str | None


# -- conditions -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Compare(Node):
    field: Ident
    op: str
    value: Value


@dataclass(frozen=True)
class Within(Node):
    field: Ident
    values: tuple


@dataclass(frozen=True)
class PredCompare(Node):
    field: str  # prediction, confidence, margin, loss
    model: ModelRef
    op: str
    value: Value


@dataclass(frozen=True)
class Misclassified(Node):
    model: ModelRef
    correct: bool = False  # True for "correct by M"


@dataclass(frozen=True)
class Disagree(Node):
    model_a: ModelRef
    model_b: ModelRef


@dataclass(frozen=True)
class Mistakes(Node):
    """A confusion cell: images labelled ``label`` that ``model`` predicts as ``predicted``."""
    model: ModelRef
    label: Value
    predicted: Value


@dataclass(frozen=True)
class NearBoundary(Node):
    model: ModelRef
    top: int | None = None


@dataclass(frozen=True)
class Like(Node):
    field: Ident
    pattern: str


@dataclass(frozen=True)
class Created(Node):
    after: bool
    value: Value


@dataclass(frozen=True)
class Lineage(Node):
    ancestors: bool
    model: ModelRef


@dataclass(frozen=True)
class HasLayer(Node):
    layer_type: Ident


@dataclass(frozen=True)
class ParamCount(Node):
    more: bool
    count: int


# -- stages ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage(Node):
    verb: str  # materialize, attribute, compare, top_units, explain, ...
    model: ModelRef | None = None
    model_b: ModelRef | None = None
    layer: Ident | None = None
    option: Ident | None = None  # method, by, estimate, reducer, widget
    value: Value | None = None  # target, "on" images, class
    number: float | None = None  # k, size, unit, steps...
    layers: tuple = ()
    path: str | None = None
    extra: int | None = None


@dataclass(frozen=True)
class Limit(Node):
    count: int


@dataclass(frozen=True)
class Statement(Node):
    source: Node | None  # Images, Models, Experiments, Sql, Use, Help or None (stages on all images)
    stages: tuple = ()
    bind: str | None = None
    text: str = ""  # the statement's source line(s), for messages
