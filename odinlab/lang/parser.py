"""Parse ``%%odin`` text into the AST of :mod:`odinlab.lang.ast` (lark, LALR, grammar.lark).

A syntax error is an :class:`OdinSyntaxError` whose message shows the line, a caret under the bad
token and, in words, what could come there.

>>> [type(s.source).__name__ for s in parse("images where split = test\\nmodels")]
['Images', 'Models']
>>> parse("images where")
Traceback (most recent call last):
...
odinlab.lang.errors.OdinSyntaxError: Syntax error on line 1: the line ends too early; expected a condition ...
"""

from __future__ import annotations

import functools
from pathlib import Path

import lark
from lark import Token, Transformer, v_args

from odinlab.lang import ast
from odinlab.lang.errors import OdinSyntaxError, pointed

# How a terminal is described to a user (lark's own names mean nothing to them).
WORDS = {
    "NAME": "a name", "MODEL": "a model (name@version)", "INT": "a whole number", "NUMBER": "a number",
    "STRING": "a quoted string", "OP": "a comparison (=, !=, <, <=, >, >=)", "_NL": "the end of the line",
    "$END": "the end of the line", "VBAR": "'|'", "LPAR": "'('", "RPAR": "')'", "COMMA": "','",
    "HELP_TOPIC": "a verb",
}
CONDITION = {"NAME", "MODEL", "MISCLASSIFIED", "CORRECT", "NEAR", "PREDICTION", "CONFIDENCE", "MARGIN", "LOSS"}


@functools.lru_cache(maxsize=1)
def parser() -> lark.Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text()
    return lark.Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse(text: str) -> list[ast.Statement]:
    """The statements of ``text`` (one per line; a line starting with ``|`` continues one).

    >>> parse("label errors of cnn top 5 -> suspects")[0].bind
    'suspects'
    """
    try:
        tree = parser().parse(text)
    except lark.exceptions.UnexpectedInput as error:
        raise _syntax_error(text, error) from None
    statements = _ToAst(text).transform(tree)
    return statements


def _describe(name: str) -> str:
    if name in WORDS:
        return WORDS[name]
    terminal = next((t for t in parser().terminals if t.name == name), None)
    if terminal is not None and isinstance(terminal.pattern, lark.lexer.PatternStr):
        return repr(terminal.pattern.value.lower())
    return name.lower()


def _expected(names: set[str]) -> str:
    if CONDITION <= names:  # the start of an image condition: say so rather than list ten words
        return "a condition (a column name, misclassified by M, loss of M > x, ...)"
    words = sorted({_describe(n) for n in names}, key=lambda w: (not w.startswith("'"), w))
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_error(text: str, error: lark.exceptions.UnexpectedInput) -> OdinSyntaxError:
    line, column = error.line, error.column
    if isinstance(error, lark.exceptions.UnexpectedToken):
        token = error.token
        expected = _expected(set(error.accepts or error.expected))
        if token.type in ("$END", "_NL"):
            line, column = (token.line, token.column) if token.type == "_NL" else _end_of(text)
            what, width = "the line ends too early", 1
        else:
            what, width = f"unexpected {str(token)!r}", max(1, len(str(token)))
        message = f"Syntax error on line {line}: {what}; expected {expected}."
    else:  # a character no token starts with
        char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else ""
        message, width = f"Syntax error on line {line}: unexpected character {char!r}.", 1
        if getattr(error, "allowed", None):
            message = message[:-1] + f"; expected {_expected(set(error.allowed))}."
    return OdinSyntaxError(pointed(message, text, line, column, width), line=line, column=column)


def _end_of(text: str) -> tuple[int, int]:
    lines = text.rstrip("\n").split("\n") or [""]
    return len(lines), len(lines[-1]) + 1


def _pos(item) -> dict:
    if isinstance(item, Token):
        return {"line": item.line, "column": item.column, "end": item.end_column}
    return {"line": item.line, "column": item.column, "end": item.end}


def _text(token: Token) -> str:
    value = str(token)
    return value[1:-1] if token.type == "STRING" else value


def _pick(children, kind):
    return [c for c in children if isinstance(c, kind)]


def _first(children, kind):
    found = _pick(children, kind)
    return found[0] if found else None


@v_args(meta=True)
class _ToAst(Transformer):
    """lark tree -> AST; positions from tokens, or from rule metadata."""

    def __init__(self, text: str):
        super().__init__()
        self.lines = text.split("\n")

    @staticmethod
    def _meta(meta) -> dict:
        return {"line": meta.line, "column": meta.column, "end": meta.end_column} if not meta.empty \
            else {"line": 1, "column": 1, "end": 1}

    def start(self, meta, children):
        return [c for c in children if isinstance(c, ast.Statement)]

    def statement(self, meta, children):
        children = [c for c in children if c is not None]
        bind = _first(children, _Bind)
        nodes = [c for c in children if not isinstance(c, _Bind)]
        source = nodes[0] if nodes and not isinstance(nodes[0], ast.Stage | ast.Limit) else None
        stages = tuple(nodes[1:] if source is not None else nodes)
        text = "\n".join(self.lines[meta.line - 1 : meta.end_line])
        return ast.Statement(**self._meta(meta), source=source, stages=stages,
                             bind=bind.name if bind else None, text=text)

    def bind(self, meta, children):
        return _Bind(str(children[0]))

    def use(self, meta, children):
        token = children[0]
        return ast.Use(**self._meta(meta), target=_text(token), is_path=token.type == "STRING")

    def help(self, meta, children):
        return ast.Help(**self._meta(meta), topic=str(children[0]).lower() if children and children[0] else None)

    def _source(self, kind, meta, children):
        limit = _first(children, ast.Limit)
        conditions = tuple(c for c in children if isinstance(c, ast.Node) and not isinstance(c, ast.Limit))
        return kind(**self._meta(meta), conditions=conditions, limit=limit.count if limit else None)

    def images(self, meta, children):
        return self._source(ast.Images, meta, children)

    def models(self, meta, children):
        return self._source(ast.Models, meta, children)

    def experiments(self, meta, children):
        return self._source(ast.Experiments, meta, children)

    def sql(self, meta, children):
        return ast.Sql(**self._meta(meta), query=_text(children[0]))

    def limit(self, meta, children):
        return ast.Limit(**self._meta(meta), count=int(children[0]))

    def top(self, meta, children):
        return int(children[0])

    # -- leaves -------------------------------------------------------------------------------
    def model(self, meta, children):
        return ast.ModelRef(**_pos(children[0]), text=str(children[0]))

    def ident(self, meta, children):
        return ast.Ident(**_pos(children[0]), text=str(children[0]))

    def idents(self, meta, children):
        return tuple(children)

    def number(self, meta, children):
        text = str(children[0])
        value = float(text) if any(c in text for c in ".eE") else int(text)
        return ast.Value(**_pos(children[0]), value=value, kind="number")

    def string(self, meta, children):
        return ast.Value(**_pos(children[0]), value=_text(children[0]), kind="string")

    def word(self, meta, children):
        return ast.Value(**_pos(children[0]), value=str(children[0]), kind="word")

    def pred_field(self, meta, children):
        return str(children[0]).lower()

    def target(self, meta, children):
        return (str(children[0]).lower(), children[1])

    # -- conditions ---------------------------------------------------------------------------
    def compare(self, meta, children):
        return ast.Compare(**self._meta(meta), field=children[0], op=str(children[1]), value=children[2])

    def within(self, meta, children):
        return ast.Within(**self._meta(meta), field=children[0], values=tuple(children[1:]))

    def pred_compare(self, meta, children):
        field, model, op, value = children
        return ast.PredCompare(**self._meta(meta), field=field, model=model, op=str(op), value=value)

    def misclassified(self, meta, children):
        return ast.Misclassified(**self._meta(meta), model=children[0])

    def correct(self, meta, children):
        return ast.Misclassified(**self._meta(meta), model=children[0], correct=True)

    def disagree(self, meta, children):
        return ast.Disagree(**self._meta(meta), model_a=children[0], model_b=children[1])

    def mistakes(self, meta, children):
        return ast.Mistakes(**self._meta(meta), model=children[0], label=children[1], predicted=children[2])

    def near_boundary(self, meta, children):
        return ast.NearBoundary(**self._meta(meta), model=children[0], top=children[1])

    def like(self, meta, children):
        return ast.Like(**self._meta(meta), field=children[0], pattern=_text(children[1]))

    def created(self, meta, children):
        return ast.Created(**self._meta(meta), after=str(children[0]).lower() == "after", value=children[1])

    def lineage(self, meta, children):
        return ast.Lineage(**self._meta(meta), ancestors=str(children[0]).lower().startswith("anc"),
                           model=children[1])

    def has_layer(self, meta, children):
        return ast.HasLayer(**self._meta(meta), layer_type=children[0])

    def param_count(self, meta, children):
        return ast.ParamCount(**self._meta(meta), more=str(children[0]).lower() == "more", count=int(children[1]))

    # -- stages -------------------------------------------------------------------------------
    def _stage(self, verb, meta, **fields):
        return ast.Stage(**self._meta(meta), verb=verb, **fields)

    def materialize(self, meta, c):
        return self._stage("materialize", meta, model=c[0], layers=c[1] or ())

    def attribute(self, meta, c):
        return self._stage("attribute", meta, model=c[0], option=c[1], value=c[2])

    def compare_models(self, meta, c):
        return self._stage("compare", meta, model=c[0], model_b=c[1], option=c[2])

    def top_units(self, meta, c):
        return self._stage("top_units", meta, number=int(c[0]) if c[0] else None, model=c[1], layer=c[2],
                           option=c[3])

    def explain(self, meta, c):
        return self._stage("explain", meta, model=c[0], layer=c[1])

    def error_clusters(self, meta, c):
        return self._stage("error_clusters", meta, model=c[0], layer=c[1])

    def label_errors(self, meta, c):
        return self._stage("label_errors", meta, model=c[0], number=c[1])

    def sample(self, meta, c):
        return self._stage("sample", meta, number=float(c[0]), model=c[1], option=c[2], layer=c[3])

    def influence(self, meta, c):
        return self._stage("influence", meta, model=c[0], layer=c[1], value=c[2], number=c[3])

    def embed(self, meta, c):
        return self._stage("embed", meta, model=c[0], layer=c[1], option=c[2])

    def confusion(self, meta, c):
        return self._stage("confusion", meta, model=c[0])

    def maximize(self, meta, c):
        (kind, what), steps = c[2], c[3]
        return self._stage("maximize", meta, model=c[0], layer=c[1], option=ast.Ident(
            **self._meta(meta), text=kind), value=what if kind == "class" else None,
            number=int(what) if kind == "unit" else None, extra=int(steps) if steps else None)

    def show(self, meta, c):
        return self._stage("show", meta, option=c[0], model=c[1], model_b=c[2], layer=c[3])

    def export(self, meta, c):
        return self._stage("export", meta, path=_text(c[0]), model=c[1], model_b=c[2])


class _Bind:
    def __init__(self, name: str):
        self.name = name
