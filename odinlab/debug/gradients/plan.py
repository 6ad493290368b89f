"""The storage plan: per layer, keep the compact form (input + output gradient) or the full gradient.

The compact form of a Linear(512→10) layer is 522 numbers per image against 5,130 for its full
gradient; the first convolution of a small CNN on 8×8 digits sees 64 positions, so its compact
form (input 1×8×8 plus output gradient 16×8×8 = 1,088 numbers) is bigger than its full gradient
(16×1×3×3 + 16 = 160). ``form="auto"`` keeps whichever is smaller (compact on a tie);
``"compact"`` or ``"full"`` (or ``{layer: form}``) force it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from odinlab.debug.gradients.layers import LayerSpec
from odinlab.errors import FormError

FORMS = ("auto", "compact", "full")


def choose_forms(specs: dict[str, LayerSpec], form: str | dict = "auto") -> dict[str, str]:
    """``{layer: "compact" | "full"}``: the smaller form per layer, or the one forced.

    >>> specs = odinlab.debug.gradients.layer_specs(net, ["features.conv1", "head.fc2"], (1, 8, 8))
    >>> choose_forms(specs)
    {'features.conv1': 'full', 'head.fc2': 'compact'}
    >>> choose_forms(specs, {"features.conv1": "compact"})
    {'features.conv1': 'compact', 'head.fc2': 'compact'}
    """
    wanted = form if isinstance(form, dict) else {layer: form for layer in specs}
    unknown = [layer for layer in wanted if layer not in specs]
    if unknown:
        raise FormError(f"form= names layers {unknown} that are not among the chosen layers {list(specs)}.")
    chosen = {}
    for layer, spec in specs.items():
        value = wanted.get(layer, "auto")
        if value not in FORMS:
            raise FormError(f"Unknown form {value!r} for {layer}; use 'auto', 'compact' or 'full'.")
        if value == "auto":
            value = "compact" if spec.compact_values <= spec.full_values else "full"
        chosen[layer] = value
    return chosen


def plan_frame(specs: dict[str, LayerSpec], forms: dict[str, str], dtype: str = "float32") -> pl.DataFrame:
    """One row per layer: type, positions, bytes per image of each form, the form kept, ratio.

    >>> specs = odinlab.debug.gradients.layer_specs(net, ["head.fc2"], (1, 8, 8))
    >>> plan_frame(specs, {"head.fc2": "compact"}).select("layer", "compact_bytes", "full_bytes", "form").rows()
    [('head.fc2', 296, 2600, 'compact')]
    """
    size = np.dtype(dtype).itemsize
    return pl.DataFrame([{
        "layer": layer, "type": spec.type, "positions": spec.positions,
        "compact_bytes": spec.compact_values * size, "full_bytes": spec.full_values * size,
        "form": forms[layer], "full_over_compact": spec.full_values / spec.compact_values,
    } for layer, spec in specs.items()])
