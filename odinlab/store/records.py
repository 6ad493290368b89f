"""A model version as a frozen record: resolved once, then passed anywhere a model is asked for."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class ModelRecord:
    """One registered model version (a row of ``store.models``), immutable.

    Every function that takes ``model`` accepts a record as well as ``"name@N"``, ``"name"``
    (the latest version) or a registered ``nn.Module``; a record is already resolved, so passing
    it on costs nothing. ``lineage`` is the chain of ancestors, parent first.

    >>> record = store.model("cnn")
    >>> record.model_id, record.version, record.classes[:3], record.input_shape
    ('cnn@1', 1, ('0', '1', '2'), (1, 8, 8))
    >>> str(record)
    'cnn@1'
    """

    model_id: str
    name: str
    version: int
    parent: str | None
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]
    hyperparams: MappingProxyType = field(compare=False)
    num_params: int = 0
    num_layers: int = 0
    created_at: datetime | None = None
    description: str | None = None
    weights_digest: str = ""
    lineage: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: dict[str, Any], lineage: tuple[str, ...] = ()) -> ModelRecord:
        """Build a record from a row of the models table."""
        return cls(
            model_id=row["model_id"], name=row["name"], version=int(row["version"]), parent=row["parent"],
            classes=tuple(row["classes"] or ()), input_shape=tuple(int(d) for d in row["input_shape"] or ()),
            hyperparams=MappingProxyType(json.loads(row["hyperparams"] or "{}")),
            num_params=int(row["num_params"] or 0), num_layers=int(row["num_layers"] or 0),
            created_at=row["created_at"], description=row["description"],
            weights_digest=row["weights_digest"] or "", lineage=tuple(lineage),
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __str__(self) -> str:
        return self.model_id
