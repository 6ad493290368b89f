"""Where everything of a model version lives in the store: the one place paths are assembled.

Row-aligned arrays live in the Zarr group ``arrays/`` and cached tables under ``results/``::

    models/<name>/v<N>/predictions                      probabilities, loss, done
    models/<name>/v<N>/layers/<layer>/<variant>         materialized activations
    models/<name>/v<N>/debug/<kind>/<digest>            cached per-image debug results
    models/<name>/v<N>/gradients/<layer>/<form>         per-sample gradients
    models/<name>/v<N>/samples/<sample>/<layer>/<variant>   a sample's compact copies
    models/<name>/v<N>/heldout/<set>                    held-out probabilities (cross-validation)
    results/<name>/v<N>/<kind>-<digest>.parquet         cached tables
    models/<name>/v<N>.json                             weights manifest (outside arrays/)

Every name that becomes a path component is checked by :func:`check_name`, so nothing can
escape the store's folder.
"""

from __future__ import annotations

import hashlib
import json

from odinlab.store.fs import check_name
from odinlab.store.records import ModelRecord

AREAS = ("layers", "debug", "gradients", "samples", "heldout")


def split_model_id(model_id: str) -> tuple[str, int]:
    """``"cnn@2"`` -> ``("cnn", 2)``; the only place a model id is taken apart.

    >>> split_model_id("cnn@12")
    ('cnn', 12)
    """
    name, _, version = str(model_id).rpartition("@")
    return check_name(name, "model name"), int(version)


def _name_version(model: ModelRecord | str) -> tuple[str, int]:
    if isinstance(model, ModelRecord):
        return check_name(model.name, "model name"), model.version
    return split_model_id(model)


def model_root(model: ModelRecord | str) -> str:
    """``models/<name>/v<N>``, the Zarr group of one version's arrays.

    >>> model_root("cnn@1")
    'models/cnn/v1'
    """
    name, version = _name_version(model)
    return f"models/{name}/v{version}"


def predictions_path(model: ModelRecord | str) -> str:
    return f"{model_root(model)}/predictions"


def layer_path(model: ModelRecord | str, layer: str, variant: str) -> str:
    """Materialized activations of a layer in one variant (``float16``, ``uint8-pool2``...).

    >>> layer_path("cnn@1", "head.fc1", "float16")
    'models/cnn/v1/layers/head.fc1/float16'
    """
    return f"{model_root(model)}/layers/{check_name(layer, 'layer name')}/{check_name(variant, 'variant')}"


def area_path(model: ModelRecord | str, area: str, *parts: str) -> str:
    """A path in one of a version's result areas (``debug``, ``gradients``, ``samples``).

    >>> area_path("cnn@1", "gradients", "head.fc2", "compact-float32")
    'models/cnn/v1/gradients/head.fc2/compact-float32'
    """
    if area not in AREAS:
        raise ValueError(f"Unknown area {area!r}; areas: {', '.join(AREAS)}.")  # a bug, not a user's mistake
    return "/".join([model_root(model), area, *(check_name(p, "path component") for p in parts)])


def table_parts(model: ModelRecord | str, kind: str, key: str) -> tuple[str, ...]:
    """Where a cached table result lives (outside the Zarr group).

    >>> table_parts("cnn@1", "confusion", "0123")
    ('results', 'cnn', 'v1', 'confusion-0123.parquet')
    """
    name, version = _name_version(model)
    return ("results", name, f"v{version}", f"{check_name(kind, 'result kind')}-{check_name(key, 'key')}.parquet")


def manifest_parts(model: ModelRecord | str) -> tuple[str, ...]:
    """The weights manifest of a version."""
    name, version = _name_version(model)
    return ("models", name, f"v{version}.json")


def digest(params: dict) -> str:
    """A short, stable digest of JSON-able parameters (key order does not matter).

    >>> digest({"method": "saliency", "target": "label"}) == digest({"target": "label", "method": "saliency"})
    True
    """
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
