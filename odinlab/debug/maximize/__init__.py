"""Activation maximization: the input that a class logit, a channel or a neuron likes most.

Feature visualization as Lucid / Lucent do it, sized for small inputs (8×8 to 64×64): the
image is a 1/f-scaled Fourier spectrum (:mod:`.param`), its colors mixed by the square root
of the color covariance of the store's own images and squashed by a sigmoid into the
model's input range (the store's pixel scale, what ``store.batches`` feeds the model); at
every step it is padded, jittered, scaled and rotated a little (:mod:`.transforms`) before
the model sees it; :mod:`.objectives` says what to maximize and :mod:`.render` runs Adam.
A seed fixes everything (a local ``torch.Generator``), results are stored under the model
version with every parameter in their key, and :meth:`Maximizer.compare` shows them beside
the real images that activate the same unit most.

>>> m = Maximizer(store, net, steps=16)
>>> m.maximize("class", unit=3).shape
(1, 8, 8)
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
import torch
from plotly.subplots import make_subplots
from torch import nn

from odinlab.debug.maximize import objectives, param, render, results, transforms
from odinlab.debug.maximize.errors import (
    TransformError,
    UnitOutOfRangeError,
    UnknownObjectiveError,
)
from odinlab.debug.maximize.objectives import PSEUDO_LAYERS, Objective
from odinlab.errors import UnknownLayerError, listing
from odinlab.store.images import ImageSelection
from odinlab.store.pixels import to_model_input

_transforms = transforms  # the module; Maximizer's ``transforms=`` argument shadows the name

VERSION = 1  # of the algorithm; part of every cache key, so a change recomputes


class Maximizer:
    """Activation maximization for one model version of a store.

    ``model`` is the module or its model id (the module registered or loaded this session).
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

    def __init__(self, store, model: nn.Module | str, *, model_id: str | None = None, steps: int = 256,
                 lr: float = 0.05, seed: int = 0, decorrelate: bool = True, fourier: bool = True,
                 decay_power: float = 1.0, transforms: object = "default", l1: float = 0.0, tv: float = 0.0,
                 normalize: tuple | None = None, color_sample: int = param.SAMPLE, cache: bool = True):
        self.store = store
        self.module, self.model_id = store._module_for(model, model_id)
        self.input_shape = tuple(int(d) for d in store._row(self.model_id)["input_shape"])
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
                frame = self.store.results.table(self.model_id, "maximize-color", self._color_key(),
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
                    raise UnitOutOfRangeError(f"The 'class' objective needs unit=<a class of {self.model_id}: "
                                              f"0..{self.n_classes - 1}>.")
            else:
                if layer is None:
                    raise UnknownLayerError(f"The {objective!r} objective needs layer=; layers of "
                                            f"{self.model_id}: {listing(self._layer_names(), 40)}.")
                if unit is None:
                    shape = self._shape(layer)
                    raise UnitOutOfRangeError(f"The {objective!r} objective needs unit=<a channel of {layer}: "
                                              f"0..{shape[0] - 1}>.")
            built = objectives.named(objective, layer, unit)
        for kind, layer_name, unit_value in built.units:
            self._check_unit(kind, layer_name, unit_value)
        for layer_name in built.layers:
            if layer_name not in PSEUDO_LAYERS:
                self.store._check_layers(self.module, self.model_id, [layer_name])
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
        device = next(self.module.parameters(), torch.empty(0)).device
        with torch.no_grad(), render.evaluating(self.module):
            x = x.to(device)
            outputs = render.forward(self.module, x, built.layers, self.normalize)
            outputs.update(image=x, input=x)
            return built(outputs).float().cpu().numpy()

    def top_images(self, objective: str = "class", layer: str | None = None, unit=None, k: int = 8,
                   images: ImageSelection = None, lowest: bool = False) -> pl.DataFrame:
        """The ``k`` real images that activate the unit most (least with ``lowest=True``).

        Channels and neurons read the layer's activations from the store
        (``store.activations``; computed and stored when not materialized yet, the channel's
        map averaged over space); class logits take one forward pass over the images.

        >>> m = Maximizer(store, net)
        >>> m.top_images("channel", "features.relu2", 5, k=3, images="val").columns
        ['rank', 'image_id', 'label', 'label_name', 'split', 'activation']
        """
        built = self.objective(objective, layer, unit)
        rows = self.store.select(images)
        values = self._real_scores(built, objective if isinstance(objective, str) else None, layer, unit, rows)
        order = np.argsort(values if lowest else -values, kind="stable")[: max(0, int(k))]
        picked = rows[order.tolist()].select("image_id", "label", "label_name", "split")
        return picked.with_columns(activation=pl.Series(values[order], dtype=pl.Float64)).with_row_index(
            "rank", offset=1).with_columns(pl.col("rank").cast(pl.Int64))

    def compare(self, objective: str | Objective = "class", layer: str | None = None, unit=None, k: int = 8, *,
                n: int = 1, negative: bool = False, diversity: float = 0.0, diversity_layer: str | None = None,
                images: ImageSelection = None, steps: int | None = None, seed: int | None = None) -> go.Figure:
        """A plotly figure: the optimized image(s) next to the top-``k`` real images of the same unit.

        Each panel's title gives the unit's activation; with ``negative=True`` the real images
        are those that activate it least.

        >>> fig = Maximizer(store, net, steps=8).compare("channel", "features.relu2", 5, k=3, images="val")
        >>> len(fig.data), fig.data[0].type
        (4, 'image')
        """
        built = self.objective(objective, layer, unit)
        optimized, values = self._result(objective, layer, unit, n=n, negative=negative, diversity=diversity,
                                         diversity_layer=diversity_layer, steps=steps, seed=seed)
        top = self.top_images(objective, layer, unit, k=k, images=images, lowest=negative)
        real = self.store.pixels(top["image_id"]) if top.height else np.zeros((0, *self.input_shape))
        kind = "minimized" if negative else "optimized"
        panels = [(img, f"{kind}{f' {i + 1}' if n > 1 else ''}<br>{value:.3g}")
                  for i, (img, value) in enumerate(zip(optimized, values, strict=True))]
        panels += [(img, f"#{row['rank']} {row['image_id']}<br>{row['activation']:.3g}")
                   for img, row in zip(to_model_input(real), top.iter_rows(named=True))]
        figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[title for _, title in panels],
                               horizontal_spacing=0.01)
        for column, (img, title) in enumerate(panels, start=1):
            figure.add_trace(go.Image(z=self._display(img), name=title.replace("<br>", " "),
                                      hovertemplate="x %{x}, y %{y}<extra></extra>"), row=1, col=column)
        figure.update_xaxes(visible=False)
        figure.update_yaxes(visible=False)
        figure.update_annotations(font_size=10)
        figure.update_layout(title=f"{built!r} of {self.model_id}: {'minimized' if negative else 'maximized'} "
                                   f"vs {'lowest' if negative else 'top'} {top.height} real images",
                             height=260, width=max(360, 120 * len(panels)), margin={"l": 10, "r": 10, "t": 80, "b": 10})
        return figure

    def stored(self) -> pl.DataFrame:
        """The maximizations stored for this model version (objective spec, n, steps, seed, values).

        >>> m = Maximizer(store, net, steps=4)
        >>> _ = m.maximize("class", unit=1)
        >>> m.stored().height
        1
        """
        return results.stored(self.store, self.model_id)

    @property
    def n_classes(self) -> int:
        """Number of classes (the size of the model's output)."""
        if self._n_classes is None:
            classes = self.store._row(self.model_id)["classes"]
            if classes:
                self._n_classes = len(classes)
            else:
                with torch.no_grad(), render.evaluating(self.module):
                    device = next(self.module.parameters(), torch.empty(0)).device
                    out = render.forward(self.module, torch.zeros(1, *self.input_shape, device=device), [])
                self._n_classes = int(out["logits"].shape[1])
        return self._n_classes

    # -- internals ----------------------------------------------------------------------------

    def _result(self, objective, layer, unit, *, n, negative, diversity, diversity_layer, steps, seed):
        main = self.objective(objective, layer, unit)
        n = _positive_int(n, "n")
        diversity = _non_negative(diversity, "diversity")
        steps = self.steps if steps is None else _positive_int(steps, "steps")
        seed = self.seed if seed is None else _seed(seed)
        if diversity and n > 1:
            diversity_layer = diversity_layer or self._diversity_layer(main)
            if diversity_layer not in PSEUDO_LAYERS:
                self.store._check_layers(self.module, self.model_id, [diversity_layer])
        else:
            diversity, diversity_layer = 0.0, None
        key = {"v": VERSION, "model_id": self.model_id, "objective": main.spec, "negative": bool(negative),
               "n": n, "diversity": diversity, "diversity_layer": diversity_layer, "steps": steps,
               "lr": self.lr, "seed": seed, "fourier": self.fourier, "decay_power": self.decay_power,
               "decorrelate": self.decorrelate, "transforms": self.transforms.spec, "l1": self.l1,
               "tv": self.tv, "normalize": self.normalize, "input_shape": list(self.input_shape),
               "color": self._color_key()}
        found = results.load(self.store, self.model_id, key) if self.cache else None
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
        device = next(self.module.parameters(), torch.empty(0)).device
        image = image.to(device)
        found, _ = render.render(self.module, total, image, self.transforms, steps=steps, lr=self.lr,
                                 generator=generator, normalize=self.normalize)
        images = found.float().cpu().numpy()
        values = self.score(images, main)
        if self.cache:
            results.save(self.store, self.model_id, key, images, values)
        return images, values

    def _color_key(self) -> dict:
        return {"sample": self.color_sample, "images": self.store.images.height}

    def _layer_names(self) -> list[str]:
        return [name for name, _ in self.module.named_modules() if name]

    def _shapes(self) -> dict[str, list[int]]:
        if self._shape_cache is None:
            arch = self.store.architecture(self.model_id)
            self._shape_cache = dict(zip(arch["layer"].to_list(), arch["output_shape"].to_list()))
        return self._shape_cache

    def _shape(self, layer: str) -> list[int]:
        self.store._check_layers(self.module, self.model_id, [layer])
        shape = self._shapes().get(layer)
        if not shape:
            raise UnknownLayerError(f"Layer {layer!r} of {self.model_id} has no tensor output to maximize "
                                    "(no output shape in store.architecture).")
        return shape

    def _check_unit(self, kind: str, layer: str, unit) -> None:
        if kind == "class":
            if not 0 <= unit < self.n_classes:
                raise UnitOutOfRangeError(f"Class {unit} is out of range: {self.model_id} has {self.n_classes} "
                                          f"classes, 0..{self.n_classes - 1}.")
            return
        shape = self._shape(layer)
        if kind == "neuron":
            channel, y, x = unit
        else:
            channel, y, x = unit, None, None
        if not 0 <= channel < shape[0]:
            what = "Channel" if len(shape) > 1 else "Unit"
            raise UnitOutOfRangeError(f"{what} {channel} of {layer} is out of range: valid units are "
                                      f"0..{shape[0] - 1} (output shape {tuple(shape)}).")
        if kind == "neuron" and (y is not None or x is not None):
            if len(shape) != 3:
                raise UnitOutOfRangeError(f"{layer} is flat (output shape {tuple(shape)}): a neuron is one "
                                          f"unit, 0..{shape[0] - 1}, with no (y, x).")
            for name, value, size in (("y", y, shape[1]), ("x", x, shape[2])):
                if value is not None and not 0 <= value < size:
                    raise UnitOutOfRangeError(f"Neuron {name}={value} of {layer} is out of range: valid "
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

    def _real_scores(self, built: Objective, name: str | None, layer, unit, rows: pl.DataFrame) -> np.ndarray:
        if rows.height == 0:
            return np.zeros(0, np.float32)
        if name in ("channel", "neuron"):
            acts = self.store.activations(self.model_id, layer, rows, model=self.module,
                                          store=not self.store.read_only)
            outputs = {layer: torch.from_numpy(np.asarray(acts, np.float32))}
            return built(outputs).numpy()
        values = []  # class logits and composed objectives: one forward pass per batch
        for _, x in self.store.batches(rows, batch_size=256):
            values.append(self.score(x, built))
        return np.concatenate(values)

    def _display(self, image: np.ndarray) -> np.ndarray:
        stats = self.color_stats
        low, high = stats.low[:, None, None], stats.high[:, None, None]
        scaled = np.clip((np.asarray(image, np.float64) - low) / (high - low), 0, 1)
        rgb = scaled.transpose(1, 2, 0)
        rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb[..., :3]
        return np.round(rgb * 255).astype(np.uint8)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}.")
    return int(value)


def _seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"seed must be a non-negative int, not {value!r}.")
    return int(value)


def _positive(value, name: str) -> float:
    if not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, not {value!r}.")
    return float(value)


def _non_negative(value, name: str) -> float:
    if not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, not {value!r}.")
    return float(value)


__all__ = ["Maximizer", "TransformError", "UnitOutOfRangeError", "UnknownObjectiveError", "objectives", "param",
           "render", "results", "transforms"]
