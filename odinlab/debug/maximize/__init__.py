"""Activation maximization: the input that a class logit, a channel or a neuron likes most.

Feature visualization as Lucid / Lucent do it, sized for small inputs (8×8 to 64×64): the
image is a 1/f-scaled Fourier spectrum (:mod:`.param`), its colors mixed by the square root
of the color covariance of the store's own images and squashed by a sigmoid into the
model's input range (the store's pixel scale, what ``store.batches`` feeds the model); at
every step it is padded, jittered, scaled and rotated a little (:mod:`.transforms`) before
the model sees it; :mod:`.objectives` says what to maximize and :mod:`.render` runs Adam.
A seed fixes everything (a local ``torch.Generator``), results are stored under the model
version with every parameter in their key, and :meth:`Maximizer.comparison` puts them beside
the real images that activate the same unit most (drawn by
:func:`odinlab.draw.maximize.comparison_figure`).

>>> m = Maximizer(store, net, steps=16)
>>> m.maximize("class", unit=3).shape
(1, 8, 8)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from odinlab.debug import units
from odinlab.debug.maximize import objectives, param, render, results, transforms
from odinlab.debug.maximize.objectives import PSEUDO_LAYERS, Objective
from odinlab.errors import (
    OptionError,
    TransformError,
    UnknownLayerError,
    UnknownObjectiveError,
    UnknownUnitError,
    listing,
)
from odinlab.store.selection import ImageSelection, Selection
from odinlab.torch_helpers import evaluating, module_device

_transforms = transforms  # the module; Maximizer's ``transforms=`` argument shadows the name

VERSION = 1  # of the algorithm; part of every cache key, so a change recomputes


@dataclass(frozen=True, eq=False)
class Comparison:
    """What :meth:`Maximizer.comparison` returns: optimized images beside the unit's top real images.

    ``optimized`` (n, C, H, W) and ``real`` (k, C, H, W) are in the model's input range, ``values``
    the objective each optimized image reached, ``top`` the frame of :meth:`Maximizer.top_images`
    (one row per real image, or one ``dead`` row), ``low``/``high`` the per-channel display range.
    """

    model_id: str
    objective: str
    negative: bool
    optimized: np.ndarray
    values: np.ndarray
    top: pl.DataFrame
    real: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @property
    def dead(self) -> bool:
        """True when the unit has the same value on every image (no real image ranks above another)."""
        return bool(self.top["dead"].any())


class Maximizer:
    """Activation maximization for one model version of a store.

    ``model`` is the module, its model id or its record (resolved once; an id needs the module
    that this session registered or loaded for it, ``store.module(model)``).
    Settings: ``steps`` and ``lr`` of Adam; ``seed``; ``fourier`` (1/f-scaled spectrum,
    else pixels) with ``decay_power``; ``decorrelate`` (colors mixed by the store's color
    covariance; identity for one channel); ``transforms`` (``"default"``, ``"none"`` or a
    list from :mod:`.transforms`); penalties ``l1`` (distance from the store's mean color)
    and ``tv`` (total variation), weighted like ``diversity`` relative to the objective's
    current magnitude (``tv=0.1``: a total variation of 1 costs a tenth of what the unit
    gives), so one weight suits any layer; ``normalize=(mean, std)`` for a model that expects
    standardized input (images stay in the store's pixel scale); ``color_sample`` images
    estimate the color statistics (stored, so estimated once); ``cache=False`` neither reads
    nor stores results (each call optimizes again).

    >>> m = Maximizer(store, "cnn@1", steps=8, seed=1)
    >>> m.model_id, m.input_shape
    ('cnn@1', (1, 8, 8))
    """

    def __init__(self, store, model, *, steps: int = 256,
                 lr: float = 0.05, seed: int = 0, decorrelate: bool = True, fourier: bool = True,
                 decay_power: float = 1.0, transforms: object = "default", l1: float = 0.0, tv: float = 0.0,
                 normalize: tuple | None = None, color_sample: int = param.SAMPLE, cache: bool = True):
        self.store = store
        self.record = store.model(model)
        self.module: nn.Module = store.module(model)
        self.model_id = self.record.model_id
        self.input_shape = tuple(self.record.input_shape)
        self.steps, self.seed = _positive_int(steps, "steps"), _seed(seed)
        self.lr = _positive(lr, "lr")
        self.l1, self.tv = _non_negative(l1, "l1"), _non_negative(tv, "tv")
        self.decorrelate, self.fourier, self.decay_power = bool(decorrelate), bool(fourier), float(decay_power)
        self.transforms = _transforms.resolve(transforms, *self.input_shape[1:])
        self.normalize = None if normalize is None else tuple(tuple(float(v) for v in np.atleast_1d(part))
                                                              for part in normalize)
        self.color_sample = _positive_int(color_sample, "color_sample")
        self.cache = bool(cache)
        self._stats: param.ColorStats | None = None
        self._n_classes: int | None = None
        self._shape_cache: dict[str, list[int]] | None = None

    def __repr__(self) -> str:
        return (f"<Maximizer {self.model_id} input {self.input_shape}: steps={self.steps}, lr={self.lr}, "
                f"seed={self.seed}, fourier={self.fourier}, decorrelate={self.decorrelate}, l1={self.l1}, "
                f"tv={self.tv}>")

    # -- public API ---------------------------------------------------------------------------

    @property
    def color_stats(self) -> param.ColorStats:
        """Mean color, valid range and normalized color covariance root of the store's images (stored).

        >>> Maximizer(store, net).color_stats.sqrt
        array([[1.]])
        """
        if self._stats is None:
            channels = self.input_shape[0]
            store_channels = self.store.pixel_array.shape[1] if self.store.images.height else None
            if store_channels != channels:  # images that this model cannot take: a neutral start
                self._stats = param.ColorStats(np.full(channels, 0.5), np.zeros(channels), np.ones(channels),
                                               np.eye(channels))
            else:
                frame = self.store.results.table(self.record, "maximize-color", self._color_key(),
                                    lambda: param.color_stats(self.store, self.color_sample).to_frame())
                self._stats = param.ColorStats.from_frame(frame)
        return self._stats

    def objective(self, objective: str | Objective = "class", layer: str | None = None, unit=None) -> Objective:
        """The checked :class:`~.objectives.Objective` for a name, layer and unit (or a composed one).

        Unknown layers are refused with the closest names and the model's layers; units with
        their valid range.

        >>> Maximizer(store, net).objective("neuron", "features.conv2", 5)
        neuron('features.conv2', 5)
        """
        if isinstance(objective, Objective):
            built = objective
        elif not isinstance(objective, str) or objective not in objectives.NAMES:
            objectives.named(str(objective), layer, unit)  # raises UnknownObjectiveError, with names
            raise UnknownObjectiveError(f"Unknown objective {objective!r}.")
        else:
            if objective == "class":
                if layer is not None:
                    raise UnknownLayerError(f"The 'class' objective reads the model's output; leave layer=None "
                                            f"(got layer={layer!r}), or use 'channel' / 'neuron' for a layer.")
                if unit is None:
                    raise UnknownUnitError(f"The 'class' objective needs unit=<a class of {self.model_id}: "
                                           f"0..{self.n_classes - 1}>.")
            else:
                if layer is None:
                    raise UnknownLayerError(f"The {objective!r} objective needs layer=; layers of "
                                            f"{self.model_id}: {listing(self._layer_names(), 40)}.")
                if unit is None:
                    shape = self._shape(layer)
                    raise UnknownUnitError(f"The {objective!r} objective needs unit=<a channel of {layer}: "
                                           f"0..{shape[0] - 1}>.")
            built = objectives.named(objective, layer, unit)
        for kind, layer_name, unit_value in built.units:
            self._check_unit(kind, layer_name, unit_value)
        for layer_name in built.layers:
            if layer_name not in PSEUDO_LAYERS:
                self.store.check_layers(self.record, [layer_name], self.module)
        return built

    def maximize(self, objective: str | Objective = "class", layer: str | None = None, unit=None, *, n: int = 1,
                 negative: bool = False, diversity: float = 0.0, diversity_layer: str | None = None,
                 steps: int | None = None, seed: int | None = None) -> np.ndarray:
        """The input that maximizes ``objective`` (minimizes it with ``negative=True``).

        ``objective`` is ``"class"`` (logit ``unit``), ``"channel"`` (mean of channel ``unit``
        of ``layer``), ``"neuron"`` (unit ``unit`` of a flat layer; of a map the centre of
        channel ``unit``, or ``unit=(c, y, x)``) or an :class:`~.objectives.Objective`.
        ``n`` images at once; ``diversity`` > 0 pushes them apart in ``diversity_layer``
        (default: the objective's map, else the last convolutional map of at least 4×4),
        ``diversity=1`` making two identical images cost what the unit gives. A class
        objective is optimized as its logit plus its log-odds, so that no other class overtakes
        it; ``negative`` minimizes the plain logit. Returns float32
        (C, H, W) for ``n=1``, else (n, C, H, W), in the model's input range. Stored in the
        store: asking again reads the result without optimizing.

        >>> m = Maximizer(store, net, steps=8)
        >>> m.maximize("channel", "features.relu2", 5, n=2, diversity=1.0).shape
        (2, 1, 8, 8)
        >>> m.maximize("neuron", "head.fc1", 7, negative=True).dtype
        dtype('float32')
        """
        images, _ = self._result(objective, layer, unit, n=n, negative=negative, diversity=diversity,
                                 diversity_layer=diversity_layer, steps=steps, seed=seed)
        return images[0] if n == 1 else images

    def score(self, images, objective: str | Objective = "class", layer: str | None = None, unit=None) -> np.ndarray:
        """The objective's value (the unit's activation) for each image, without transformations.

        ``images``: (C, H, W) or (N, C, H, W) in the model's input range (what :meth:`maximize`
        returns, or ``next(store.batches(...))[1]``).

        >>> m = Maximizer(store, net, steps=8)
        >>> m.score(np.zeros((2, 1, 8, 8), np.float32), "channel", "features.relu2", 5).shape
        (2,)
        """
        built = self.objective(objective, layer, unit)
        x = torch.as_tensor(np.asarray(images, np.float32))
        x = x[None] if x.ndim == 3 else x
        with torch.no_grad(), evaluating(self.module):
            x = x.to(module_device(self.module))
            outputs = render.forward(self.module, x, built.layers, self.normalize)
            outputs.update(image=x, input=x)
            return built(outputs).float().cpu().numpy()

    def top_images(self, objective: str | Objective = "class", layer: str | None = None, unit=None,
                   images: ImageSelection = None, *, k: int = 8, lowest: bool = False) -> pl.DataFrame:
        """The ``k`` real images that activate the unit most (least with ``lowest=True``).

        Columns: rank, image_id, label, label_name, activation, dead; the rules are
        :func:`odinlab.debug.units.top_images`' (a channel, or a flat layer's neuron, is that
        function's unit): images tied at the unit's floor are not ranked, and a unit with the
        same value on every image is ``dead`` (one row, no image, a logged warning). Layers
        are read from the store (computed and stored when not materialized yet); class logits
        and objectives over the input take one forward pass over the images.

        >>> m = Maximizer(store, net)
        >>> m.top_images("channel", "features.relu2", 5, "val", k=3).columns
        ['rank', 'image_id', 'label', 'label_name', 'activation', 'dead']
        """
        built = self.objective(objective, layer, unit)
        selection = self.store.select(images)
        spec = built.spec
        if spec["op"] == "channel" or (spec["op"] == "neuron" and len(self._shape(spec["layer"])) == 1):
            top = units.top_images(self.store, self.record, spec["layer"], selection, unit=spec["unit"], k=k,
                                   lowest=lowest)
        else:
            values = self._real_scores(built, selection)
            top = units.rank_images(values[:, None], selection, k=k, lowest=lowest,
                                    what=f"{built!r} of {self.model_id}")
        return top.drop("unit")

    def comparison(self, objective: str | Objective = "class", layer: str | None = None, unit=None,
                   images: ImageSelection = None, *, k: int = 8, n: int = 1, negative: bool = False,
                   diversity: float = 0.0, diversity_layer: str | None = None, steps: int | None = None,
                   seed: int | None = None) -> Comparison:
        """The optimized image(s) and the top-``k`` real images of the same unit, as one result.

        With ``negative=True`` the image is minimized and the real images are those that
        activate the unit least. A dead unit (one value on every image) has no real images
        and says so (``result.dead``). Draw it with
        :func:`odinlab.draw.maximize.comparison_figure`.

        >>> result = Maximizer(store, net, steps=8).comparison("channel", "features.relu2", 5, "val", k=3)
        >>> result.optimized.shape, result.real.shape[1:], result.top.height <= 3
        ((1, 1, 8, 8), (1, 8, 8), True)
        """
        built = self.objective(objective, layer, unit)
        optimized, values = self._result(objective, layer, unit, n=n, negative=negative, diversity=diversity,
                                         diversity_layer=diversity_layer, steps=steps, seed=seed)
        top = self.top_images(objective, layer, unit, images, k=k, lowest=negative)
        live = top.filter(~pl.col("dead"))
        real = self.store.model_input(live["image_id"]) if live.height else \
            np.zeros((0, *self.input_shape), np.float32)
        stats = self.color_stats
        return Comparison(model_id=self.model_id, objective=repr(built), negative=bool(negative),
                          optimized=optimized, values=values, top=top, real=real, low=stats.low, high=stats.high)

    def compare(self, objective: str | Objective = "class", layer: str | None = None, unit=None,
                images: ImageSelection = None, *, k: int = 8, **options):
        """Deprecated: ``odinlab.draw.maximize.comparison_figure(m.comparison(...))``, which this returns.

        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     fig = Maximizer(store, net, steps=8).compare("channel", "features.relu2", 5, "val", k=3)
        >>> fig.data[0].type
        'image'
        """
        from odinlab.draw.maximize import comparison_figure

        warnings.warn("Maximizer.compare(...) is deprecated: draw the result of Maximizer.comparison(...) with "
                      "odinlab.draw.maximize.comparison_figure.", DeprecationWarning, stacklevel=2)
        return comparison_figure(self.comparison(objective, layer, unit, images, k=k, **options))

    def stored(self) -> pl.DataFrame:
        """The maximizations stored for this model version (objective spec, n, steps, seed, values).

        >>> m = Maximizer(store, net, steps=4)
        >>> _ = m.maximize("class", unit=1)
        >>> m.stored().height
        1
        """
        return results.stored(self.store, self.record)

    @property
    def n_classes(self) -> int:
        """Number of classes (the size of the model's output)."""
        if self._n_classes is None:
            if self.record.num_classes:
                self._n_classes = self.record.num_classes
            else:  # a version registered without class names: ask the network
                with torch.no_grad(), evaluating(self.module):
                    x = torch.zeros(1, *self.input_shape, device=module_device(self.module))
                    out = render.forward(self.module, x, [])
                self._n_classes = int(out["logits"].shape[1])
        return self._n_classes

    # -- internals ----------------------------------------------------------------------------

    def is_stored(self, objective: str | Objective = "class", layer: str | None = None, unit=None, *, n: int = 1,
                  negative: bool = False, diversity: float = 0.0, diversity_layer: str | None = None,
                  steps: int | None = None, seed: int | None = None) -> bool:
        """Whether :meth:`maximize` with these arguments would read its answer from the store (no optimizing).

        >>> m = Maximizer(store, net, steps=4)
        >>> m.is_stored("class", unit=2), m.maximize("class", unit=2).shape, m.is_stored("class", unit=2)
        (False, (1, 8, 8), True)
        """
        _, key = self._key(objective, layer, unit, n=n, negative=negative, diversity=diversity,
                           diversity_layer=diversity_layer, steps=steps, seed=seed)
        return self.cache and results.load(self.store, self.record, key) is not None

    def _key(self, objective, layer, unit, *, n, negative, diversity, diversity_layer, steps, seed):
        """The objective and the store key of a maximization: every setting that changes its answer."""
        main = self.objective(objective, layer, unit)
        n = _positive_int(n, "n")
        diversity = _non_negative(diversity, "diversity")
        steps = self.steps if steps is None else _positive_int(steps, "steps")
        seed = self.seed if seed is None else _seed(seed)
        if diversity and n > 1:
            diversity_layer = diversity_layer or self._diversity_layer(main)
            if diversity_layer not in PSEUDO_LAYERS:
                self.store.check_layers(self.record, [diversity_layer], self.module)
        else:
            diversity, diversity_layer = 0.0, None
        key = {"v": VERSION, "model_id": self.model_id, "objective": main.spec, "negative": bool(negative),
               "n": n, "diversity": diversity, "diversity_layer": diversity_layer, "steps": steps,
               "lr": self.lr, "seed": seed, "fourier": self.fourier, "decay_power": self.decay_power,
               "decorrelate": self.decorrelate, "transforms": self.transforms.spec, "l1": self.l1,
               "tv": self.tv, "normalize": self.normalize, "input_shape": list(self.input_shape),
               "color": self._color_key()}
        return main, key

    def _result(self, objective, layer, unit, *, n, negative, diversity, diversity_layer, steps, seed):
        main, key = self._key(objective, layer, unit, n=n, negative=negative, diversity=diversity,
                              diversity_layer=diversity_layer, steps=steps, seed=seed)
        n, diversity, diversity_layer = key["n"], key["diversity"], key["diversity_layer"]
        steps, seed = key["steps"], key["seed"]
        found = results.load(self.store, self.record, key) if self.cache else None
        if found is not None:
            return found
        total = -main if negative else main
        if objective == "class" and not negative:  # the logit, kept from being overtaken by another class
            total = total + objectives.class_log_odds(unit)
        if diversity:
            total = total + objectives.relative(objectives.diversity(diversity_layer), main, diversity)
        if self.l1:
            total = total - objectives.relative(objectives.l1(self.color_stats.mean.tolist()), main, self.l1)
        if self.tv:
            total = total - objectives.relative(objectives.total_variation(), main, self.tv)
        generator = torch.Generator().manual_seed(seed)
        _, height, width = self.input_shape
        image = param.ImageParam(self.color_stats, n, height, width, fourier=self.fourier,
                                 decorrelate=self.decorrelate, decay_power=self.decay_power, generator=generator)
        image = image.to(module_device(self.module))
        found, _ = render.render(self.module, total, image, self.transforms, steps=steps, lr=self.lr,
                                 generator=generator, normalize=self.normalize)
        images = found.float().cpu().numpy()
        values = self.score(images, main)
        if self.cache:
            results.save(self.store, self.record, key, images, values)
        return images, values

    def _color_key(self) -> dict:
        return {"sample": self.color_sample, "images": self.store.images.height}

    def _layer_names(self) -> list[str]:
        return [name for name, _ in self.module.named_modules() if name]

    def _shapes(self) -> dict[str, list[int]]:
        if self._shape_cache is None:
            arch = self.store.architecture(self.record)
            self._shape_cache = dict(zip(arch["layer"].to_list(), arch["output_shape"].to_list()))
        return self._shape_cache

    def _shape(self, layer: str) -> list[int]:
        self.store.check_layers(self.record, [layer], self.module)
        shape = self._shapes().get(layer)
        if not shape:
            raise UnknownLayerError(f"Layer {layer!r} of {self.model_id} has no tensor output to maximize "
                                    "(no output shape in store.architecture).")
        return shape

    def _check_unit(self, kind: str, layer: str, unit) -> None:
        if kind == "class":
            if not 0 <= unit < self.n_classes:
                raise UnknownUnitError(f"Class {unit} is out of range: {self.model_id} has {self.n_classes} "
                                          f"classes, 0..{self.n_classes - 1}.")
            return
        shape = self._shape(layer)
        if kind == "neuron":
            channel, y, x = unit
        else:
            channel, y, x = unit, None, None
        if not 0 <= channel < shape[0]:
            what = "Channel" if len(shape) > 1 else "Unit"
            raise UnknownUnitError(f"{what} {channel} of {layer} is out of range: valid units are "
                                      f"0..{shape[0] - 1} (output shape {tuple(shape)}).")
        if kind == "neuron" and (y is not None or x is not None):
            if len(shape) != 3:
                raise UnknownUnitError(f"{layer} is flat (output shape {tuple(shape)}): a neuron is one "
                                          f"unit, 0..{shape[0] - 1}, with no (y, x).")
            for name, value, size in (("y", y, shape[1]), ("x", x, shape[2])):
                if value is not None and not 0 <= value < size:
                    raise UnknownUnitError(f"Neuron {name}={value} of {layer} is out of range: valid "
                                              f"{name} is 0..{size - 1} (output shape {tuple(shape)}).")

    def _diversity_layer(self, main: Objective) -> str:
        shapes = self._shapes()
        for layer in main.layers:
            if layer not in PSEUDO_LAYERS and len(shapes.get(layer) or []) == 3:
                return layer
        names = self._layer_names()
        leaves = [name for name in names if not any(other.startswith(name + ".") for other in names)]
        maps = [name for name in leaves if len(shapes.get(name) or []) == 3]
        area = min(16, self.input_shape[1] * self.input_shape[2] // 4)
        large = [name for name in maps if shapes[name][1] * shapes[name][2] >= area]
        return (large or maps or ["input"])[-1]

    def _real_scores(self, built: Objective, selection: Selection) -> np.ndarray:
        """The objective's value for each selected image (no transformations)."""
        if len(selection) == 0:
            return np.zeros(0, np.float32)
        if built.layers and not set(built.layers) & set(PSEUDO_LAYERS):  # layers only: read from the store
            outputs = {layer: torch.from_numpy(np.asarray(self.store.activations(
                self.record, layer, selection, module=self.module, store=not self.store.read_only).values,
                np.float32)) for layer in built.layers}
            return built(outputs).numpy()
        # class logits, objectives over the input: one forward pass per batch
        return np.concatenate([self.score(x, built) for _, x in self.store.batches(selection, batch_size=256)])


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise OptionError(f"{name} must be a positive int, not {value!r}.")
    return int(value)


def _seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise OptionError(f"seed must be a non-negative int, not {value!r}.")
    return int(value)


def _positive(value, name: str) -> float:
    if not isinstance(value, int | float) or not value > 0:
        raise OptionError(f"{name} must be a positive number, not {value!r}.")
    return float(value)


def _non_negative(value, name: str) -> float:
    if not isinstance(value, int | float) or not value >= 0:
        raise OptionError(f"{name} must be a number >= 0, not {value!r}.")
    return float(value)


__all__ = ["Comparison", "Maximizer", "TransformError", "UnknownObjectiveError",
           "UnknownUnitError", "objectives", "param", "render", "results", "transforms"]
