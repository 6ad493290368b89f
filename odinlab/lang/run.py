"""Run parsed ``%%odin`` statements through odinlab's public Python API, as a user would.

A :class:`Runner` holds the store and the namespace that ``-> name`` binds into. Nothing from the
cell is evaluated as Python: names are looked up (models, layers, columns, classes), checked, and
passed to the API; a mistake raises :class:`OdinLanguageError` pointed at its token.

>>> runner = Runner(store)
>>> runner.run("images where split = test -> test")[-1] is runner.namespace["test"]
True
"""

from __future__ import annotations

import polars as pl

import odinlab
from odinlab.errors import OdinError, UnknownModelError, closest, listing
from odinlab.lang import ast, help as help_text, verbs
from odinlab.lang.errors import OdinLanguageError, pointed
from odinlab.lang.parser import parse
from odinlab.lang.select import select_experiments, select_images, select_models
from odinlab.store import Selection, Store


class Runner:
    """Runs ``%%odin`` text against ``store``; ``namespace`` receives ``-> name`` bindings.

    >>> Runner(store).run("models where name = cnn")[-1]["model_id"].to_list()
    ['cnn@1']
    """

    def __init__(self, store: Store | None = None, namespace: dict | None = None):
        self.store = store
        self.namespace = {} if namespace is None else namespace
        self.text = ""

    # -- entry points -------------------------------------------------------------------------
    def run(self, text: str) -> list:
        """Parse and run every statement of ``text``; return their results, in order."""
        return self.statements_and_results(text)[1]

    def statements_and_results(self, text: str) -> tuple[list, list]:
        """The parsed statements of ``text`` and their results (all parsed before any runs)."""
        self.text = text
        statements = parse(text)
        return statements, [self.execute(statement) for statement in statements]

    def execute(self, statement: ast.Statement):
        """Run one statement: its source, then each stage on the result before it; bind ``-> name``."""
        source = statement.source
        if isinstance(source, ast.Help):
            return help_text.text(source.topic)
        if isinstance(source, ast.Use):
            return self.use(source)
        self.require_store(statement)
        context = verbs.Context()
        value = self.source(source) if source is not None else None
        for condition in getattr(source, "conditions", ()):  # "misclassified by cnn | show gallery": cnn's
            for name in ("model", "model_a", "model_b"):
                if isinstance(getattr(condition, name, None), ast.ModelRef):
                    model = self.model(getattr(condition, name))
                    context.models.extend([model] if model not in context.models else [])
        for stage in statement.stages:
            value = verbs.run_stage(self, stage, value, context)
        if statement.bind:
            self.namespace[statement.bind] = value
        return value

    def source(self, node):
        if isinstance(node, ast.Images):
            return select_images(self, node)
        if isinstance(node, ast.Models):
            return select_models(self, node)
        if isinstance(node, ast.Experiments):
            return select_experiments(self, node)
        return self.call(node, self.store.sql, node.query)  # ast.Sql

    def use(self, node: ast.Use) -> Store:
        """``use 'path'`` opens a store; ``use name`` takes the Store held by a variable."""
        if node.is_path:
            self.store = self.call(node, odinlab.open_store, node.target)
            return self.store
        if node.target not in self.namespace:
            names = [k for k, v in self.namespace.items() if isinstance(v, Store)]
            raise self.fail(node, f"No variable {node.target!r}.{closest(node.target, names)} "
                                  f"Variables holding a store: {listing(names)}.")
        store = self.namespace[node.target]
        if not isinstance(store, Store):
            raise self.fail(node, f"{node.target!r} is a {type(store).__name__}, not an odinlab Store.")
        self.store = store
        return store

    def require_store(self, node) -> None:
        if self.store is None:
            raise self.fail(node, "No store yet: start with  %odin use 'path/to/store'  or  %odin use variable.")

    # -- names the statements use --------------------------------------------------------------
    def model(self, ref: ast.ModelRef) -> str:
        """The model id of ``name@N`` or ``name`` (latest version)."""
        try:
            return self.store.resolve_model(ref.text)
        except UnknownModelError as error:
            raise self.fail(ref, str(error)) from None

    def layer(self, model_id: str, ident: ast.Ident) -> str:
        layers = self.store.layers(model_id)
        if ident.text not in layers:
            raise self.fail(ident, f"Unknown layer {ident.text!r} of {model_id}.{closest(ident.text, layers)}"
                                   f" Layers: {listing(layers)}.")
        return ident.text

    def column(self, ident: ast.Ident) -> str:
        columns = self.store.images.columns
        if ident.text not in columns:
            raise self.fail(ident, f"Unknown column {ident.text!r} of the images table."
                                   f"{closest(ident.text, columns)} Columns: {listing(columns)}.")
        return ident.text

    def class_index(self, value: ast.Value) -> int:
        """A class given by index (``3``) or name (``'cat'``, ``cat``)."""
        classes = self.store.classes
        if str(value.value) in classes:
            return classes.index(str(value.value))
        if value.kind == "number" and isinstance(value.value, int) and 0 <= value.value < len(classes):
            return value.value
        raise self.fail(value, f"Unknown class {str(value.value)!r}.{closest(str(value.value), classes)}"
                               f" Classes: {listing(classes)}.")

    def number(self, value: ast.Value) -> float:
        if value.kind != "number":
            raise self.fail(value, f"Expected a number here, not {str(value.value)!r}.")
        return value.value

    def predictions(self, ref: ast.ModelRef, images: Selection) -> pl.DataFrame:
        return self.call(ref, self.store.predictions, self.model(ref), images)

    def images_of(self, node, value) -> Selection:
        """The images a stage works on: all (nothing before it), a selection, or a result's image_id."""
        if value is None:
            return self.store.select(None)
        if isinstance(value, Selection):
            return value
        if isinstance(value, pl.DataFrame) and "image_id" in value.columns:
            return self.store.select(value["image_id"].unique(maintain_order=True))
        raise self.fail(node, f"{node.verb.replace('_', ' ')} needs images, and what comes before it "
                              f"({type(value).__name__}) has no image_id.")

    # -- errors -------------------------------------------------------------------------------
    def call(self, node, function, *args, **kwargs):
        """``function(*args, **kwargs)``; an odinlab error it raises is pointed at ``node``."""
        try:
            return function(*args, **kwargs)
        except OdinLanguageError:
            raise
        except OdinError as error:
            raise self.fail(node, str(error)) from None

    def fail(self, node, message: str) -> OdinLanguageError:
        """An error for ``node``: its line, and a caret under it."""
        width = node.end - node.column if node.end > node.column else 1
        return OdinLanguageError(pointed(message, self.text, node.line, node.column, width),
                                 line=node.line, column=node.column)
