"""What to maximize: class logits, channels, neurons, and the terms that shape the result.

An :class:`Objective` maps what one forward pass saw to one value per image, to be
*maximized*. Objectives compose like numbers (``channel(...) - 0.1 * l1()``,
``-class_logit(3)``), and each carries a JSON-able ``spec`` that keys its cached results.

What an objective reads (``outputs``): the named layers it hooked, ``"logits"`` (the
model's output), ``"input"`` (the transformed image the model received) and ``"image"``
(the image being optimized, before transformations).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from odinlab.errors import UnknownObjectiveError, UnknownUnitError, closest

NAMES = ("class", "channel", "neuron")
PSEUDO_LAYERS = ("logits", "input", "image")


class Objective:
    """A value per image to maximize, built from model outputs; compose with ``+ - *``.

    ``units`` lists the (objective, layer, unit) triples it reads, so that they can be
    checked against the model before any optimization.

    >>> objective = channel("features.relu2", 5) - 0.5 * l1()
    >>> objective
    channel('features.relu2', 5) - 0.5 * l1(0.0)
    >>> objective.layers
    ('features.relu2', 'image')
    """

    def __init__(self, fn: Callable[[dict], torch.Tensor], spec: dict, text: str,
                 layers: tuple[str, ...] = (), units: tuple = ()):
        self.fn, self.spec, self.text = fn, spec, text
        self.layers = tuple(dict.fromkeys(layers))
        self.units = tuple(units)

    def __call__(self, outputs: dict) -> torch.Tensor:
        return self.fn(outputs)

    def __add__(self, other: Objective | float) -> Objective:
        if not isinstance(other, Objective):
            return self + constant(other)
        return Objective(lambda out: self(out) + other(out), {"op": "add", "terms": [self.spec, other.spec]},
                         f"{self.text} + {other.text}", self.layers + other.layers, self.units + other.units)

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return Objective(lambda out: -self(out), {"op": "neg", "term": self.spec}, f"-{_wrap(self.text)}",
                         self.layers, self.units)

    def __sub__(self, other: Objective | float) -> Objective:
        other = other if isinstance(other, Objective) else constant(other)
        return Objective(lambda out: self(out) - other(out), {"op": "sub", "terms": [self.spec, other.spec]},
                         f"{self.text} - {_wrap(other.text)}", self.layers + other.layers, self.units + other.units)

    def __rsub__(self, other: float) -> Objective:
        return constant(other) - self

    def __mul__(self, weight: float) -> Objective:
        if isinstance(weight, Objective) or not isinstance(weight, int | float):
            return NotImplemented
        weight = float(weight)
        return Objective(lambda out: weight * self(out), {"op": "mul", "weight": weight, "term": self.spec},
                         f"{weight:g} * {_wrap(self.text)}", self.layers, self.units)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return self.text


def _wrap(text: str) -> str:
    return f"({text})" if (" + " in text or " - " in text) else text


def constant(value: float) -> Objective:
    """A constant (the same value for every image); mostly what ``objective + 1.0`` builds.

    >>> constant(2.0)({"image": torch.zeros(3, 1, 8, 8)}).tolist()
    [2.0, 2.0, 2.0]
    """
    value = float(value)
    return Objective(lambda out: torch.full((len(out["image"]),), value, device=out["image"].device),
                     {"op": "constant", "value": value}, f"{value:g}", ("image",))


def class_logit(unit: int) -> Objective:
    """The logit of class ``unit`` (the model's output before softmax).

    >>> class_logit(3)({"logits": torch.arange(20.0).reshape(2, 10)}).tolist()
    [3.0, 13.0]
    """
    unit = _int(unit)
    return Objective(lambda out: out["logits"][:, unit], {"op": "class", "unit": unit}, f"class_logit({unit})",
                     ("logits",), (("class", "logits", unit),))


def class_log_odds(unit: int) -> Objective:
    """The log-odds ``log(p / (1 - p))`` of class ``unit``: its logit minus the log-sum-exp of the others.

    Added to a class logit it keeps the other classes down (pushing one logit up often
    pushes another one up faster), and unlike a log-probability it does not fade as the
    class starts to win, so the image ends up classified as the class.

    >>> class_log_odds(0)({"logits": torch.tensor([[2.0, 0.0, 0.0]])}).tolist()  # p = e²/(e²+2)
    [1.306...]
    """
    unit = _int(unit)

    def fn(out):
        logits = out["logits"]
        others = torch.cat([logits[:, :unit], logits[:, unit + 1 :]], dim=1)
        if others.shape[1] == 0:
            return torch.zeros(len(logits), device=logits.device)
        return logits[:, unit] - torch.logsumexp(others, dim=1)

    return Objective(fn, {"op": "class_log_odds", "unit": unit}, f"class_log_odds({unit})",
                     ("logits",), (("class", "logits", unit),))


def channel(layer: str, unit: int) -> Objective:
    """The mean activation of channel ``unit`` of ``layer`` (over space for a convolutional map).

    >>> channel("conv", 1)({"conv": torch.ones(2, 4, 3, 3) * torch.arange(4.0)[:, None, None]}).tolist()
    [1.0, 1.0]
    """
    unit = _int(unit)

    def fn(out):
        values = out[layer][:, unit]
        return values.flatten(1).mean(1) if values.ndim > 1 else values

    return Objective(fn, {"op": "channel", "layer": layer, "unit": unit}, f"channel({layer!r}, {unit})",
                     (layer,), (("channel", layer, unit),))


def neuron(layer: str, unit, y: int | None = None, x: int | None = None) -> Objective:
    """One activation of ``layer``: unit ``i`` of a flat layer, or of a (C, H, W) map the
    channel ``unit`` at (``y``, ``x``), the centre by default; ``unit=(c, y, x)`` also works.

    >>> acts = torch.arange(2 * 2 * 3 * 3.0).reshape(2, 2, 3, 3)
    >>> neuron("conv", 1)({"conv": acts}).tolist(), neuron("conv", (0, 0, 2))({"conv": acts}).tolist()
    ([13.0, 31.0], [2.0, 20.0])
    """
    if isinstance(unit, tuple | list):
        if len(unit) != 3 or y is not None or x is not None:
            raise UnknownUnitError(f"A neuron of a convolutional map is unit=(channel, y, x); got unit={unit!r}.")
        unit, y, x = (_int(u) for u in unit)
    else:
        unit = _int(unit)
        y, x = (None if v is None else _int(v) for v in (y, x))

    def fn(out):
        values = out[layer][:, unit]
        if values.ndim == 1:
            return values
        h, w = values.shape[-2:]
        return values[:, h // 2 if y is None else y, w // 2 if x is None else x]

    where = "" if y is None and x is None else f", y={y}, x={x}"
    return Objective(fn, {"op": "neuron", "layer": layer, "unit": unit, "y": y, "x": x},
                     f"neuron({layer!r}, {unit}{where})", (layer,), (("neuron", layer, (unit, y, x)),))


def diversity(layer: str) -> Objective:
    """Minus each image's mean cosine similarity to the other images of the batch, in ``layer``
    (its channel Gram matrix for a convolutional map, as in Lucid); add it to spread a batch out.

    Zero for a single image.

    >>> float(diversity("conv")({"conv": torch.stack([torch.ones(2, 3, 3), -torch.ones(2, 3, 3)])}).sum())
    -2.0
    >>> diversity("fc")({"fc": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}).tolist()
    [-0.0, -0.0]
    """

    def fn(out):
        acts = out[layer]
        n = acts.shape[0]
        if n < 2:
            return torch.zeros(n, device=acts.device)
        if acts.ndim == 4:
            flat = acts.flatten(2)
            vectors = (flat @ flat.transpose(1, 2)).flatten(1) / flat.shape[-1]
        else:
            vectors = acts.flatten(1)
        vectors = F.normalize(vectors, dim=1)
        similarity = vectors @ vectors.T
        return -(similarity.sum(1) - similarity.diagonal()) / (n - 1)

    return Objective(fn, {"op": "diversity", "layer": layer}, f"diversity({layer!r})", (layer,))


def l1(center=0.0) -> Objective:
    """Mean absolute difference of each image from ``center`` (a value or one per channel).

    A penalty: subtract it (``objective - weight * l1(...)``) to keep images near ``center``.

    >>> l1(0.5)({"image": torch.ones(2, 1, 4, 4)}).tolist()
    [0.5, 0.5]
    """
    values = [float(v) for v in center] if isinstance(center, list | tuple) else float(center)

    def fn(out):
        image = out["image"]
        reference = torch.as_tensor(values, dtype=image.dtype, device=image.device)
        reference = reference[:, None, None] if reference.ndim else reference
        return (image - reference).abs().flatten(1).mean(1)

    text = f"l1({values!r})"
    return Objective(fn, {"op": "l1", "center": values}, text, ("image",))


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels of each image (anisotropic TV).

    A penalty: subtract it to smooth the images.

    >>> stripes = torch.tensor([0.0, 1.0]).repeat(4)[None, None].repeat(1, 1, 8, 1)
    >>> total_variation()({"image": stripes}).tolist()
    [0.5]
    """

    def fn(out):
        image = out["image"]
        dy = (image[..., 1:, :] - image[..., :-1, :]).abs().flatten(1).mean(1)
        dx = (image[..., :, 1:] - image[..., :, :-1]).abs().flatten(1).mean(1)
        return (dy + dx) / 2

    return Objective(fn, {"op": "total_variation"}, "total_variation()", ("image",))


def relative(term: Objective, reference: Objective, weight: float = 1.0) -> Objective:
    """``weight × term``, scaled by the current mean magnitude of ``reference`` over the batch.

    The scale is a constant for the gradient (detached), so ``weight`` says how much of the
    reference objective the term is worth, whatever the units of a layer: with
    ``channel(...) + relative(diversity(...), channel(...), 0.5)``, two identical images cost
    half of what the channel gives.

    >>> out = {"logits": torch.tensor([[4.0], [-2.0]]), "image": torch.ones(2, 1, 2, 2)}
    >>> relative(l1(), class_logit(0), 0.5)(out).tolist()
    [1.5, 1.5]
    """
    weight = float(weight)

    def fn(out):
        scale = reference(out).detach().abs().mean()
        return weight * scale * term(out)

    return Objective(fn, {"op": "relative", "weight": weight, "term": term.spec, "reference": reference.spec},
                     f"{weight:g} * |{reference.text}| * {_wrap(term.text)}", term.layers + reference.layers,
                     term.units + reference.units)


def named(objective: str, layer: str | None, unit) -> Objective:
    """The objective for a name (``"class"``, ``"channel"``, ``"neuron"``), layer and unit.

    >>> named("channel", "features.relu2", 5)
    channel('features.relu2', 5)
    """
    if objective == "class":
        return class_logit(unit)
    if objective == "channel":
        return channel(layer, unit)
    if objective == "neuron":
        return neuron(layer, unit)
    raise UnknownObjectiveError(
        f"Unknown objective {objective!r}.{closest(str(objective), NAMES)} Objectives: {', '.join(NAMES)} "
        "(or an odinlab.debug.maximize.objectives.Objective)."
    )


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not (hasattr(value, "__index__")):
        raise UnknownUnitError(f"A unit index must be an int, not {value!r}.")
    return int(value)


__all__ = ["Objective", "channel", "class_log_odds", "class_logit", "constant", "diversity", "l1", "named", "neuron",
           "relative", "total_variation"]
