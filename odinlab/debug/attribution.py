"""Attribution with Captum, computed in batches, kept in the store and aggregated.

An :class:`Attributor` wraps any Captum attribution method (by name, Captum class name, or
class), optionally inside a NoiseTunnel, for one model version. ``attribute(images, target)``
returns one map per image in model-input space, (N, C, H, W) — (N, 1, H, W) for layer
methods such as Grad-CAM, upsampled to the input. Maps are computed in batches for the images
not yet stored and kept per image in Zarr (float16, scaled per image so that tiny gradients
keep their precision), keyed by model version, method, layer, target, baselines and every
parameter that changes the result, together with Captum's convergence delta where the method
has one. Asking again is a read; asking about more images computes only the new ones.

Two aggregates use the stored maps: :func:`mean_by_confusion` (the mean map of every
confusion cell, e.g. all "3 predicted as 5") and :func:`share_inside` (the share of
|attribution| that falls inside a mask or box, per image: a spurious cue shows up as a share
far above the region's area). :func:`overlay` and :func:`attribution_grid` render them.

>>> attr = Attributor(store, "cnn@1", method="saliency")
>>> attr.attribute(["digits-0000", "digits-0001"], target="label", progress=False).shape
(2, 1, 8, 8)
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import warnings
import weakref
from typing import NamedTuple

import numpy as np
import polars as pl
import torch
from dask.utils import parse_bytes
from torch import nn
from tqdm.auto import tqdm

from odinlab.debug import cache
from odinlab.debug.overlay import attribution_grid, overlay
from odinlab.errors import (ImageFormatError, LabelError, OdinError, ReadOnlyStoreError, UnknownLayerError,
                            closest, listing)
from odinlab.store.arrays import RowArray
from odinlab.store.images import ImageSelection
from odinlab.store.pixels import to_model_input

__all__ = ["Attributor", "RegionError", "RegionShare", "TargetError", "UnknownMethodError", "attribution_grid",
           "mean_by_confusion", "methods", "overlay", "share_inside"]

# Activation bytes of one forward pass on the CPU. Measured with Integrated Gradients on 2 cores:
# passes holding 8-32 MiB ran fastest (digits 0.73 ms/image at 16 MiB, 1.66 at 256 MiB; 32×32
# shapes 10.9 and 31 ms): bigger passes fall out of the caches.
CPU_WORKING_SET = 16 << 20
# Per store (weakly: a store that is dropped is forgotten): result arrays opened in this session,
# and the images' (C, H, W).
_OPENED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
FORMAT = 1  # bump when the stored encoding changes, so old results are not reused


class UnknownMethodError(OdinError, ValueError):
    """An attribution method that Captum does not have, or that cannot explain a class."""


class TargetError(OdinError, ValueError):
    """A target that is not 'label', 'prediction', a class index or a class name."""


class RegionError(OdinError, ValueError):
    """A mask or box that does not fit the images."""


# -- the methods --------------------------------------------------------------------------

_NAMES = {  # Captum class -> the name odinlab lists first; other classes get snake_case names
    "IntegratedGradients": "integrated_gradients", "Saliency": "saliency",
    "InputXGradient": "input_x_gradient", "GradientShap": "gradient_shap", "DeepLift": "deeplift",
    "DeepLiftShap": "deeplift_shap", "Occlusion": "occlusion", "LayerGradCam": "layer_gradcam",
    "GuidedGradCam": "guided_gradcam", "LRP": "lrp", "LayerLRP": "layer_lrp",
    "LayerDeepLift": "layer_deeplift", "LayerDeepLiftShap": "layer_deeplift_shap",
}
_ALIASES = {"ig": "integrated_gradients", "gradcam": "layer_gradcam", "grad_cam": "layer_gradcam",
            "gradient_x_input": "input_x_gradient"}
_ABSTRACT = {"Attribution", "GradientAttribution", "PerturbationAttribution", "LayerAttribution",
             "NeuronAttribution", "InternalAttribution", "LimeBase", "DataLoaderAttribution", "NoiseTunnel"}
# Methods whose baselines are a distribution to sample from, not one reference input.
_DISTRIBUTION = {"GradientShap", "DeepLiftShap", "LayerGradientShap", "LayerDeepLiftShap"}
# Keyword arguments that only trade memory for speed: left out of the cache key.
_PERFORMANCE = {"internal_batch_size", "perturbations_per_eval", "nt_samples_batch_size", "show_progress",
                "verbose"}
_NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def methods() -> list[str]:
    """Names of the Captum methods an :class:`Attributor` takes (Captum's class names work too).

    >>> [m for m in methods() if m in ("integrated_gradients", "layer_gradcam", "occlusion")]
    ['integrated_gradients', 'layer_gradcam', 'occlusion']
    """
    return sorted(_registry())


@functools.cache
def _registry() -> dict[str, type]:
    import captum.attr as ca

    found = {}
    for name in dir(ca):
        cls = getattr(ca, name)
        if (inspect.isclass(cls) and issubclass(cls, ca.Attribution) and name not in _ABSTRACT
                and not name.startswith(("Neuron", "LLM", "Remote"))
                and "target" in inspect.signature(cls.attribute).parameters):
            found[_NAMES.get(name, re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower())] = cls
    return found


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def _resolve_method(method) -> type:
    import captum.attr as ca

    registry = _registry()
    if inspect.isclass(method) and issubclass(method, ca.Attribution):
        if method is ca.NoiseTunnel:
            raise UnknownMethodError("NoiseTunnel wraps another method: pass method=<the method> and "
                                     "noise_tunnel='smoothgrad' (or 'smoothgrad_sq', 'vargrad').")
        if "target" not in inspect.signature(method.attribute).parameters:
            raise UnknownMethodError(
                f"{method.__name__} does not attribute a class (its attribute() takes no target); neuron "
                f"and activation methods are not supported. Methods: {listing(registry, 60)}.")
        return method
    if isinstance(method, str):
        squashed = {_squash(n): cls for n, cls in registry.items()}
        squashed |= {_squash(cls.__name__): cls for cls in registry.values()}
        squashed |= {_squash(a): registry[n] for a, n in _ALIASES.items()}
        if _squash(method) in squashed:
            return squashed[_squash(method)]
        if _squash(method) in ("noisetunnel", "smoothgrad", "vargrad"):
            kind = "smoothgrad" if _squash(method) == "noisetunnel" else method
            raise UnknownMethodError(f"{method!r} is a noise tunnel: pass method='saliency' (or another) "
                                     f"and noise_tunnel={kind!r}.")
    known = sorted(registry)
    raise UnknownMethodError(
        f"Unknown attribution method {method!r}.{closest(str(method), known + list(_ALIASES))} "
        f"Known methods: {listing(known, 60)} (or a Captum attribution class)."
    )


def _describe(value):
    """A JSON-able, content-based description of a parameter for the cache key."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {"array": hashlib.sha256(data.tobytes()).hexdigest()[:16], "shape": list(data.shape),
                "dtype": str(data.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return repr(value)


# -- the attributor -----------------------------------------------------------------------

class Attributor:
    """Captum attributions of one model version over store images, stored and reused.

    ``model`` is a module (registered in the store, or named with ``model_id=``) or a model id
    whose module this session registered or loaded. ``method`` is a name from :func:`methods`
    (``"integrated_gradients"``, ``"saliency"``, ``"input_x_gradient"``, ``"gradient_shap"``,
    ``"deeplift"``, ``"occlusion"``, ``"layer_gradcam"``...), a Captum class name or class.
    ``layer`` (a name from ``named_modules()`` or the module) is for layer methods; it defaults
    to the last ``Conv2d``, and layer maps are summed over channels and upsampled to the input
    (``upsample``, a ``torch.nn.functional.interpolate`` mode). ``noise_tunnel`` wraps the
    method in Captum's NoiseTunnel: ``"smoothgrad"``, ``"smoothgrad_sq"``, ``"vargrad"`` or a
    dict of NoiseTunnel arguments (defaults: 10 samples, ``stdevs=0.15``, i.e. 15% of the
    [0, 1] input range). Other keyword arguments go to the Captum constructor or to its
    ``attribute()``, whichever takes them (``n_steps=``, ``sliding_window_shapes=``...).
    Each forward pass holds about 16 MiB of activations on the CPU (faster than bigger passes
    there) and up to ``memory_budget`` on a GPU; ``seed`` makes sampling methods repeatable.

    >>> attr = Attributor(store, net, method="IntegratedGradients", n_steps=16)
    >>> attr
    <Attributor integrated_gradients of cnn@1 (n_steps=16)>
    """

    def __init__(self, store, model: nn.Module | str, method="integrated_gradients", layer=None,
                 noise_tunnel=None, *, model_id: str | None = None, upsample: str = "bilinear",
                 memory_budget: int | str = "1GB", seed: int = 0, **method_kwargs):
        self.store = store
        self.module, self.model_id = store._module_for(model, model_id)
        opened = _OPENED.setdefault(store, {})
        if "pixel_shape" not in opened:  # (C, H, W) of the store's images; fixed once it has some
            opened["pixel_shape"] = tuple(store.pixel_array.shape[1:])
        self.pixel_shape = opened["pixel_shape"]
        expected = tuple(store._row(self.model_id)["input_shape"])
        if expected != self.pixel_shape:
            raise ImageFormatError(f"{self.model_id} expects input {expected} (C, H, W) but the store's images "
                                   f"are {self.pixel_shape}; attribute with a model trained on these images.")
        self.method_class = _resolve_method(method)
        self.method = {cls: name for name, cls in _registry().items()}.get(
            self.method_class, self.method_class.__name__)
        self.upsample, self.seed = upsample, int(seed)
        self.memory_budget = parse_bytes(memory_budget) if isinstance(memory_budget, str) else int(memory_budget)
        init = inspect.signature(self.method_class.__init__).parameters
        self.is_layer_method = "layer" in init
        self.layer = self._resolve_layer(layer) if self.is_layer_method else None
        if layer is not None and not self.is_layer_method:
            layered = [n for n, c in _registry().items() if "layer" in inspect.signature(c.__init__).parameters]
            raise UnknownLayerError(f"{self.method} attributes to the input and takes no layer; layer methods: "
                                    f"{listing(layered, 30)}.")
        self.noise_tunnel = _noise_tunnel_args(noise_tunnel)
        self._init_kwargs, self._call_kwargs = self._split_kwargs(method_kwargs, init)
        self._explainer = None
        self._channel_mean: np.ndarray | None = None
        c, h, w = self.pixel_shape
        self.shape = (1 if self._upsampled else c, h, w)

    # -- public ---------------------------------------------------------------------------

    def attribute(self, images: ImageSelection = None, target="label", baselines=None, *,
                  batch_size: int = 128, progress: bool = True) -> np.ndarray:
        """Attribution maps of ``images`` for ``target``: float32 (N, C, H, W), in the order selected.

        ``target`` is ``"label"`` (each image's label), ``"prediction"`` (the model's top
        class), a class index or a class name. ``baselines`` (for methods that take them, in
        model-input space where uint8 pixels are scaled to [0, 1]) is ``"zeros"``, ``"mean"``
        (per-channel mean of the training images), ``"zeros+mean"`` (the two as a distribution),
        a number, or an array broadcastable to (C, H, W) or (K, C, H, W) for a distribution;
        the default is zeros, and zeros plus the mean for GradientShap and DeepLiftShap.
        Images not stored yet for these settings are computed ``batch_size`` at a time.

        >>> attr = Attributor(store, net, method="saliency")
        >>> maps = attr.attribute("val", target="prediction", progress=False)
        >>> maps.shape, maps.dtype
        ((269, 1, 8, 8), dtype('float32'))
        """
        selected = self.store._select_rows(images)
        rows = selected["_row"].to_numpy()
        maps, aux = self._compute(selected, target, baselines, batch_size, progress)
        return self._read(maps, aux, rows)

    def deltas(self, images: ImageSelection = None, target="label", baselines=None, *,
               batch_size: int = 128, progress: bool = True) -> np.ndarray:
        """Captum's convergence delta of each image's attribution (computed if not stored yet).

        For Integrated Gradients it is the sum of the attributions minus the difference of the
        target's output between the input and the baseline (averaged over samples for sampling
        methods). Methods without one (Saliency, Occlusion...) are refused.

        >>> attr = Attributor(store, net, n_steps=32)
        >>> bool(np.abs(attr.deltas(["digits-0000"], progress=False)).max() < 0.05)
        True
        """
        if not self._has_delta:
            with_delta = [n for n, c in _registry().items() if _has_delta(c)]
            raise UnknownMethodError(f"{self.method} has no convergence delta; methods with one: "
                                     f"{listing(with_delta)}.")
        selected = self.store._select_rows(images)
        _, aux = self._compute(selected, target, baselines, batch_size, progress)
        rows = selected["_row"].to_numpy()
        return aux.read(rows)[:, 1] if len(rows) else np.zeros(0, np.float32)

    def predictions(self, images: ImageSelection = None) -> pl.DataFrame:
        """image_id, label and the model's predicted class, in the order selected (predictions are
        read from the store and materialized there first where missing)."""
        selected = self.store._select_rows(images)
        ids = selected["image_id"].unique(maintain_order=True)
        stored = self.store.predictions(self.model_id, ids)
        missing = ids.filter(~ids.is_in(stored["image_id"].implode()))
        if missing.len():
            if not self.store.read_only:
                self.store.materialize(self.module, [], missing, model_id=self.model_id, progress=False)
                stored = self.store.predictions(self.model_id, ids)
            else:
                rows = self.store._select_rows(missing)["_row"].to_numpy()
                extra = pl.DataFrame({"image_id": missing, "predicted": self._predict(rows)})
                stored = pl.concat([stored.select("image_id", "predicted"), extra])
        return selected.select("image_id", "label").join(stored.select("image_id", "predicted"), on="image_id",
                                                         how="left", maintain_order="left")

    def cache_key(self, target="label", baselines=None) -> dict:
        """Every setting that changes the maps; stored results are found by its digest."""
        return self._key(self._check_target(target), self._baselines(baselines)[0])

    def _key(self, target, baselines_descriptor) -> dict:
        import captum

        return {"format": FORMAT, "captum": captum.__version__,
                "method": f"{self.method_class.__module__}.{self.method_class.__qualname__}",
                "layer": self.layer, "upsample": self.upsample if self._upsampled else None,
                "init": _describe(self._init_kwargs),
                "kwargs": _describe({k: v for k, v in self._call_kwargs.items() if k not in _PERFORMANCE}),
                "noise_tunnel": _describe({k: v for k, v in (self.noise_tunnel or {}).items()
                                           if k not in _PERFORMANCE}) or None,
                "target": target, "baselines": baselines_descriptor,
                "seed": self.seed if self._random else None}

    def __repr__(self) -> str:
        settings = [f"layer={self.layer}"] if self.layer else []
        settings += [f"{k}={v!r}" for k, v in self._call_kwargs.items() if k not in _PERFORMANCE]
        if self.noise_tunnel:
            settings.append(f"noise_tunnel={self.noise_tunnel['nt_type']!r}")
        described = f" ({', '.join(settings)})" if settings else ""
        return f"<Attributor {self.method} of {self.model_id}{described}>"

    # -- settings -------------------------------------------------------------------------

    @property
    def _upsampled(self) -> bool:
        from captum.attr import LayerAttribution

        return issubclass(self.method_class, LayerAttribution)

    @property
    def _has_delta(self) -> bool:
        return _has_delta(self.method_class)

    @property
    def _random(self) -> bool:
        return bool(self.noise_tunnel) or self.method_class.__name__ in _DISTRIBUTION | {
            "Lime", "KernelShap", "ShapleyValueSampling", "FeaturePermutation", "LayerGradientShap"}

    def _resolve_layer(self, layer) -> str:
        named = dict(self.module.named_modules())
        if layer is None:
            convs = [name for name, m in named.items() if isinstance(m, nn.Conv2d)]
            if not convs:
                raise UnknownLayerError(f"{self.model_id} has no Conv2d layer for {self.method}; pass layer=.")
            layer = convs[-1]
        elif isinstance(layer, nn.Module):
            names = [name for name, m in named.items() if m is layer]
            if not names:
                raise UnknownLayerError(f"The layer module given is not part of {self.model_id}.")
            layer = names[0]
        layer = self.store._check_layers(self.module, self.model_id, [layer])[0]
        shapes = dict(zip(*self.store.architecture(self.model_id).select("layer", "output_shape")
                          .to_dict(as_series=False).values()))
        from captum.attr import LayerAttribution

        if issubclass(self.method_class, LayerAttribution) and len(shapes.get(layer) or []) != 3:
            convs = [n for n, s in shapes.items() if s and len(s) == 3]
            raise UnknownLayerError(
                f"{self.method} maps a layer's (C, h, w) output onto the image, but {layer} gives "
                f"{tuple(shapes.get(layer) or ())}. Layers with spatial outputs: {listing(convs, 30)}.")
        return layer

    def _split_kwargs(self, kwargs: dict, init) -> tuple[dict, dict]:
        call = inspect.signature(self.method_class.attribute).parameters
        reserved = {"inputs", "target", "baselines", "return_convergence_delta"}
        init_names = set(init) - {"self", "layer", next(iter(list(init)[1:]), None)}
        init_kwargs = {k: v for k, v in kwargs.items() if k in init_names}
        call_kwargs = {k: v for k, v in kwargs.items() if k in call and k not in reserved and k not in init_kwargs}
        wrong = [k for k in kwargs if k not in init_kwargs and k not in call_kwargs]
        if wrong:
            hint = " Pass baselines= and target= to attribute()." if set(wrong) & reserved else ""
            raise TypeError(f"{self.method} takes no argument {listing(wrong)}.{hint} It takes: "
                            f"{listing(sorted(init_names | (set(call) - reserved - {'self', 'kwargs'})))}.")
        if self.method_class.__name__ == "IntegratedGradients":
            call_kwargs.setdefault("n_steps", 50)
        if self.method_class.__name__ == "Occlusion":
            c, h, w = self.pixel_shape
            side = max(2, min(h, w) // 8)
            call_kwargs.setdefault("sliding_window_shapes", (c, side, side))
            call_kwargs.setdefault("strides", (c, max(1, side // 2), max(1, side // 2)))
        return init_kwargs, call_kwargs

    def _check_target(self, target):
        classes = list(self.store._row(self.model_id)["classes"])
        if isinstance(target, str) and target in ("label", "prediction"):
            return target
        if isinstance(target, str) and target in classes:
            return classes.index(target)
        if (isinstance(target, int | np.integer) and not isinstance(target, bool | np.bool_)
                and 0 <= int(target) < (len(classes) or int(target) + 1)):
            return int(target)
        choices = f"a class index 0..{len(classes) - 1} or a class name ({listing(classes, 10)})" if classes \
            else "a class index"
        raise TargetError(f"Bad target {target!r} for {self.model_id}: use 'label', 'prediction', {choices}.")

    def _baselines(self, baselines) -> tuple:
        """(descriptor for the key, tensor (K, C, H, W) in model-input space) or (None, None)."""
        takes = "baselines" in inspect.signature(self.method_class.attribute).parameters
        if not takes:
            if baselines is not None:
                raise TypeError(f"{self.method} takes no baselines.")
            return None, None
        distribution = self.method_class.__name__ in _DISTRIBUTION
        if baselines is None:
            baselines = "zeros+mean" if distribution else "zeros"
        c, h, w = self.pixel_shape
        if isinstance(baselines, str):
            parts = {"zeros": ["zeros"], "mean": ["mean"], "zeros+mean": ["zeros", "mean"]}.get(baselines)
            if parts is None:
                raise ValueError(f"Unknown baselines {baselines!r}: use 'zeros', 'mean', 'zeros+mean', a number "
                                 "or an array (model-input space, C×H×W or K×C×H×W).")
            mean = self._mean() if "mean" in parts else None
            stack = [np.zeros((c, h, w), np.float32) if p == "zeros" else
                     np.broadcast_to(mean[:, None, None], (c, h, w)) for p in parts]
            descriptor = {"kind": baselines, "mean": [round(float(v), 6) for v in mean] if mean is not None else None}
            array = np.stack(stack).astype(np.float32)
        elif isinstance(baselines, int | float | np.number) and not isinstance(baselines, bool):
            descriptor, array = {"constant": float(baselines)}, np.full((1, c, h, w), float(baselines), np.float32)
        else:
            raw = baselines.detach().cpu().numpy() if isinstance(baselines, torch.Tensor) else np.asarray(baselines)
            array = to_model_input(raw)
            try:
                array = np.broadcast_to(array, (*array.shape[:-3], c, h, w) if array.ndim > 3 else (c, h, w))
            except ValueError as error:
                raise ValueError(f"baselines of shape {raw.shape} do not broadcast to the images' "
                                 f"{(c, h, w)}.") from error
            array = np.array(array.reshape(-1, c, h, w), np.float32)  # a writable copy
            descriptor = _describe(array)
        if len(array) > 1 and not distribution:
            raise ValueError(f"{self.method} takes one baseline, not a distribution of {len(array)}; "
                             f"distribution methods: {listing(sorted(_DISTRIBUTION))}.")
        if len(array) < 2 and self.method_class.__name__ in ("DeepLiftShap", "LayerDeepLiftShap"):
            raise ValueError(f"{self.method} needs at least two baselines (a distribution).")
        return descriptor, torch.from_numpy(array)

    def _mean(self) -> np.ndarray:
        """Per-channel mean of the training images (all images when there is no train split)."""
        if self._channel_mean is None:
            images = self.store._tables.read("images")
            split = "train" if (images["split"] == "train").any() else None
            params = {"split": split, "n": int((images["split"] == split).sum()) if split else images.height}

            def compute() -> pl.DataFrame:
                total, count = 0.0, 0
                for _, x in self.store.batches(split, batch_size=4096):
                    total, count = total + x.sum(axis=(0, 2, 3), dtype=np.float64), count + len(x) * x[0, 0].size
                return pl.DataFrame({"channel": np.arange(len(total)), "mean": total / count})
            self._channel_mean = cache.frame(self.store, self.model_id, "channel-mean", params, compute)["mean"] \
                .to_numpy().astype(np.float32)
        return self._channel_mean

    # -- computing ------------------------------------------------------------------------

    def _compute(self, selected: pl.DataFrame, target, baselines, batch_size: int, progress: bool):
        """Arrays holding the maps and (scale, delta) of every selected image, computing those missing."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, not {batch_size!r}.")
        target = self._check_target(target)
        if target == "label" and selected["label"].null_count():
            raise LabelError(f"target='label' but {selected['label'].null_count()} of the selected images "
                             "have no label; use target='prediction' or a class.")
        descriptor, base = self._baselines(baselines)
        key = self._key(target, descriptor)
        rows = np.unique(selected["_row"].to_numpy())
        try:
            maps, aux = self._stored(key, rows)
        except ReadOnlyStoreError:  # nothing can be stored: compute everything, keep it in memory
            return self._in_memory(rows, target, base, batch_size, progress)
        missing = rows[~maps.done_rows(rows)] if len(rows) else rows
        # Batches are written a Zarr chunk of rows at a time (at most ~1 MiB of maps waits):
        # every write rewrites whole chunks, so writing each small batch would repeat that work.
        flush_rows = max(batch_size, maps.values.chunks[0])
        pending: list[tuple] = []
        with tqdm(total=len(missing), desc=f"{self.method} {self.model_id}", unit="img",
                  disable=not progress or not len(missing), delay=2) as bar:
            for start in range(0, len(missing), batch_size):
                batch = missing[start : start + batch_size]
                pending.append((batch, *self._attribute_batch(batch, target, base)))
                bar.update(len(batch))
                if sum(len(p[0]) for p in pending) >= flush_rows or start + batch_size >= len(missing):
                    _write_batch(maps, aux, *(np.concatenate(part) for part in zip(*pending)))
                    pending = []
        return maps, aux

    def _stored(self, key: dict, rows: np.ndarray):
        """The (maps, aux) arrays for ``key``; opened once per store and session (opening a Zarr
        array reads its metadata, which would cost more than reading a few hundred maps)."""
        opened = _OPENED.setdefault(self.store, {})
        digest = (self.model_id, cache.digest(key))
        pair = opened.get(digest)
        if pair is None or (len(rows) and rows[-1] >= pair[0].values.shape[0]):  # new images: grow
            pair = (cache.row_array(self.store, self.model_id, "attribution", key, self.shape, "float16"),
                    cache.row_array(self.store, self.model_id, "attribution-aux", key, (2,), "float32"))
            # RowArray.open_or_create grows an existing array through fresh handles but returns the
            # ones it opened before, whose shapes are stale: open them again after a growth.
            pair = tuple(RowArray(a.group) if len(rows) and rows[-1] >= a.values.shape[0] else a for a in pair)
            opened[digest] = pair
        return pair

    def _in_memory(self, rows, target, base, batch_size, progress):
        maps, aux = _InMemory(), _InMemory()
        for start in tqdm(range(0, len(rows), batch_size), disable=not progress, delay=2,
                          desc=f"{self.method} {self.model_id} (read-only store: not stored)"):
            batch = rows[start : start + batch_size]
            values, delta = self._attribute_batch(batch, target, base)
            maps.rows.update(zip(batch.tolist(), values))
            aux.rows.update(zip(batch.tolist(), np.stack([np.ones_like(delta), delta], axis=1)))
        return maps, aux

    def _read(self, maps, aux, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0, *self.shape), np.float32)
        return maps.read(rows) * aux.read(rows)[:, 0, None, None, None]

    def _explainer_for(self):
        if self._explainer is None:
            from captum.attr import NoiseTunnel

            layer = {"layer": dict(self.module.named_modules())[self.layer]} if self.is_layer_method else {}
            explainer = self.method_class(self.module, **layer, **self._init_kwargs)
            _use_summed_gradients(explainer)
            self._explainer = NoiseTunnel(explainer) if self.noise_tunnel else explainer
        return self._explainer

    def _device(self) -> torch.device:
        return next(self.module.parameters(), torch.empty(0)).device

    def _attribute_batch(self, rows: np.ndarray, target, base) -> tuple[np.ndarray, np.ndarray]:
        """Maps (B, *shape) float32 and deltas (B,) (NaN without one) for sorted pixel rows.

        Captum is called on groups of images, and its internal batches are sized, so that one
        forward pass holds about :data:`CPU_WORKING_SET` bytes of activations on the CPU (bigger
        batches run slower there: they fall out of the caches) or ``memory_budget`` on a GPU.
        """
        from captum.attr import GradientAttribution

        device = self._device()
        x = torch.from_numpy(to_model_input(self.store._read_rows(rows))).to(device)
        n = len(rows)
        if target == "label":
            targets = torch.tensor(self.store._labels_for_rows(rows), device=device)
        elif target == "prediction":
            targets = torch.from_numpy(self._predict(rows, x)).to(device)
        else:
            targets = torch.full((n,), int(target), dtype=torch.long, device=device)
        if issubclass(self.method_class, GradientAttribution):
            x.requires_grad_(True)  # what Captum would do, without its warning
        work = self._inputs_per_pass(device)
        expansion = int(self._call_kwargs.get("n_samples", 5)) if self.method_class.__name__ == "GradientShap" else 1
        group = int(np.clip(work // expansion, 1, n))  # images per Captum call
        parameters = inspect.signature(self.method_class.attribute).parameters
        kwargs = dict(self._call_kwargs) | (self.noise_tunnel or {})
        if self.noise_tunnel:
            kwargs.setdefault("nt_samples_batch_size", int(np.clip(work // group, 1, kwargs["nt_samples"])))
        examples = group * kwargs.get("nt_samples_batch_size", 1)  # what Captum's inner method sees
        if "internal_batch_size" in parameters:
            kwargs.setdefault("internal_batch_size", max(examples, work))
        if "perturbations_per_eval" in parameters:
            kwargs.setdefault("perturbations_per_eval", max(1, work // examples))
        if self._has_delta:
            kwargs["return_convergence_delta"] = True
        distribution = self.method_class.__name__ in _DISTRIBUTION
        base = base.to(device) if base is not None else None
        maps, deltas = [], []
        was_training = self.module.training
        try:
            self.module.eval()
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                    warnings.catch_warnings():
                # Captum announces the hooks it sets on ReLUs (DeepLift, guided backprop) on every call.
                warnings.filterwarnings("ignore", message=r"Setting (forward, )?backward hooks", category=UserWarning)
                torch.manual_seed(self.seed * 1_000_003 + int(rows[0]))
                for start in range(0, n, group):
                    part = slice(start, start + group)
                    m = len(x[part])
                    if base is not None:
                        kwargs["baselines"] = base if distribution else base.expand(m, *base.shape[1:])
                    out = self._explainer_for().attribute(x[part], target=targets[part], **kwargs)
                    if self._has_delta:
                        out, d = out
                        deltas.append(torch.as_tensor(d).detach().float().reshape(m, -1).mean(dim=1).cpu())
                    out = out[0] if isinstance(out, tuple) else out
                    maps.append(self._to_input_space(out.detach().float(), x.shape[2:]).cpu())
        finally:
            self.module.train(was_training)
        delta = torch.cat(deltas).numpy() if deltas else np.full(n, np.nan, np.float32)
        return torch.cat(maps).numpy(), delta

    def _inputs_per_pass(self, device: torch.device) -> int:
        """Inputs per forward pass: a cache-sized working set on the CPU, the memory budget on a GPU."""
        if not hasattr(self, "_forward_bytes"):
            arch = self.store.architecture(self.model_id)
            numel = {r["layer"]: int(np.prod(r["output_shape"] or [0])) for r in arch.iter_rows(named=True)}
            leaves = [n for n in numel if not any(other.startswith(n + ".") for other in numel)]
            self._forward_bytes = 4 * (sum(numel[n] for n in leaves) + int(np.prod(self.pixel_shape)))
        budget = self.memory_budget // 3  # activations, their gradients, and what autograd keeps
        if device.type == "cpu":
            budget = min(budget, CPU_WORKING_SET)
        return max(1, budget // self._forward_bytes)

    def _to_input_space(self, out: torch.Tensor, size) -> torch.Tensor:
        if tuple(out.shape[1:]) == self.shape:
            return out
        if out.ndim == 4 and self._upsampled:
            out = out.sum(dim=1, keepdim=True)
            return nn.functional.interpolate(out, size=tuple(size), mode=self.upsample) if \
                tuple(out.shape[2:]) != tuple(size) else out
        raise UnknownMethodError(f"{self.method} returned maps of shape {tuple(out.shape[1:])}, not the "
                                 f"input's {self.shape}; odinlab stores input-space maps only.")

    def _predict(self, rows: np.ndarray, x: torch.Tensor | None = None) -> np.ndarray:
        was_training = self.module.training
        try:
            self.module.eval()
            with torch.no_grad():
                out = []
                for start in range(0, len(rows), 1024):
                    chunk = x[start : start + 1024] if x is not None else torch.from_numpy(
                        to_model_input(self.store._read_rows(rows[start : start + 1024]))).to(self._device())
                    logits = self.module(chunk)
                    out.append((logits[0] if isinstance(logits, tuple | list) else logits).argmax(dim=1).cpu())
        finally:
            self.module.train(was_training)
        return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


class _InMemory:
    """Results of a read-only store, which cannot keep them: read like a RowArray."""

    def __init__(self):
        self.rows: dict[int, np.ndarray] = {}

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([self.rows[int(r)] for r in rows]).astype(np.float32)


def _write_batch(maps, aux, rows: np.ndarray, values: np.ndarray, delta: np.ndarray) -> None:
    """Store one batch: maps in float16 divided by their largest |value| (kept as a float32
    scale beside the delta), so that small and large maps keep float16's relative precision."""
    scale = np.abs(values).reshape(len(rows), -1).max(axis=1)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0).astype(np.float32)
    aux.write(rows, np.stack([scale, delta], axis=1))  # first: the maps' done mask is the commit
    maps.write(rows, values / scale[:, None, None, None])


def _use_summed_gradients(explainer) -> None:
    """Give a Captum method the gradient of the summed outputs instead of Captum's default.

    Captum's ``compute_gradients`` asks autograd for the gradients of ``torch.unbind(outputs)``,
    one scalar per example and step, and autograd adds them up; the gradient of ``outputs.sum()``
    is the same tensor, computed without one graph root per scalar (30-40% of the time of
    Integrated Gradients on a small CNN). Methods with their own gradient function are left alone.
    """
    try:
        from captum._utils.common import _run_forward
        from captum._utils.gradient import compute_gradients
    except ImportError:  # a Captum that moved its internals: keep its own function
        return
    if getattr(explainer, "gradient_func", None) is not compute_gradients:
        return

    def summed_gradients(forward_fn, inputs, target_ind=None, additional_forward_args=None):
        with torch.autograd.set_grad_enabled(True):
            outputs = _run_forward(forward_fn, inputs, target_ind, additional_forward_args)
            if outputs[0].numel() != 1:
                return compute_gradients(forward_fn, inputs, target_ind, additional_forward_args)
            return torch.autograd.grad(outputs.sum(), inputs)
    explainer.gradient_func = summed_gradients


def _has_delta(cls) -> bool:
    try:
        return bool(cls.has_convergence_delta(cls.__new__(cls)))
    except Exception:  # noqa: BLE001 - a method that cannot tell has none we can store
        return False


def _noise_tunnel_args(noise_tunnel) -> dict | None:
    if noise_tunnel in (None, False):
        return None
    args = {"nt_type": "smoothgrad", "nt_samples": 10, "stdevs": 0.15}
    if isinstance(noise_tunnel, str):
        args["nt_type"] = noise_tunnel
    elif isinstance(noise_tunnel, dict):
        given = dict(noise_tunnel)
        if "type" in given:
            given["nt_type"] = given.pop("type")
        allowed = {"nt_type", "nt_samples", "stdevs", "nt_samples_batch_size", "draw_baseline_from_distrib"}
        if set(given) - allowed:
            raise TypeError(f"Unknown noise_tunnel arguments {listing(sorted(set(given) - allowed))}; "
                            f"NoiseTunnel takes {listing(sorted(allowed))}.")
        args |= given
    elif noise_tunnel is not True:
        raise TypeError(f"noise_tunnel must be None, True, one of {', '.join(_NT_TYPES)} or a dict; "
                        f"got {noise_tunnel!r}.")
    if args["nt_type"] not in _NT_TYPES:
        raise ValueError(f"Unknown noise tunnel {args['nt_type']!r}.{closest(str(args['nt_type']), _NT_TYPES)} "
                         f"Use one of {', '.join(_NT_TYPES)}.")
    return args


# -- aggregates ---------------------------------------------------------------------------

def _ids_digest(ids: pl.Series) -> str:
    return hashlib.sha256("\n".join(ids.to_list()).encode()).hexdigest()[:16]


def _map_chunks(attr: Attributor, selected: pl.DataFrame, target, baselines, batch_size, progress, chunk=1024):
    """Compute what is missing, then yield (offsets, maps) for the selection, a chunk at a time."""
    maps, aux = attr._compute(selected, target, baselines, batch_size, progress)
    rows = selected["_row"].to_numpy()
    for start in range(0, len(rows), chunk):
        yield start, attr._read(maps, aux, rows[start : start + chunk])


def mean_by_confusion(attr: Attributor, images: ImageSelection = None, *, target="prediction", baselines=None,
                      batch_size: int = 128, progress: bool = True) -> pl.DataFrame:
    """The mean attribution map of every confusion cell (true label, predicted class).

    One row per cell that has images: ``true``, ``true_name``, ``predicted``,
    ``predicted_name``, ``correct``, ``n``, ``mean`` (the signed mean map, (C, H, W)) and
    ``mean_abs`` (the mean of |map|). By default maps explain the predicted class: what made the
    model say 5 for these 3s. Unlabelled images are left out. The result is stored.

    >>> attr = Attributor(store, net, method="saliency")
    >>> cells = mean_by_confusion(attr, "val", progress=False)
    >>> int(cells["n"].sum()), cells["mean"].dtype
    (269, Array(Float32, shape=(1, 8, 8)))
    """
    store = attr.store
    selected = store._select_rows(images).filter(pl.col("label").is_not_null())
    selected = selected.unique("image_id", maintain_order=True)
    key = attr.cache_key(target, baselines) | {"aggregate": "mean_by_confusion",
                                               "images": _ids_digest(selected["image_id"])}
    classes = list(store._row(attr.model_id)["classes"]) or store.classes

    def compute() -> pl.DataFrame:
        predicted = attr.predictions(selected["image_id"])["predicted"].to_numpy()
        labels = selected["label"].to_numpy()
        k = int(max(labels.max(initial=0), predicted.max(initial=0))) + 1
        codes = labels * k + predicted
        cells = np.unique(codes)
        sums = np.zeros((len(cells), *attr.shape), np.float64)
        sums_abs = np.zeros_like(sums)
        index = np.searchsorted(cells, codes)
        for start, maps in _map_chunks(attr, selected, target, baselines, batch_size, progress):
            where = index[start : start + len(maps)]
            np.add.at(sums, where, maps)
            np.add.at(sums_abs, where, np.abs(maps))
        counts = np.bincount(index, minlength=len(cells))

        def names(values) -> list[str]:
            return [classes[v] if v < len(classes) else str(v) for v in values]
        true, pred = (cells // k).astype(np.int64), (cells % k).astype(np.int64)
        return pl.DataFrame({
            "true": true, "true_name": pl.Series(names(true), dtype=pl.String), "predicted": pred,
            "predicted_name": pl.Series(names(pred), dtype=pl.String),
            "correct": true == pred, "n": counts.astype(np.int64),
            "mean": (sums / np.maximum(counts, 1)[:, None, None, None]).astype(np.float32),
            "mean_abs": (sums_abs / np.maximum(counts, 1)[:, None, None, None]).astype(np.float32),
        })
    return cache.frame(store, attr.model_id, "attribution-confusion", key, compute)


class RegionShare(NamedTuple):
    """What :func:`share_inside` returns: one row per image, and a summary (per group with ``by``)."""

    per_image: pl.DataFrame
    summary: pl.DataFrame


def _region(mask, box, n: int, shape) -> tuple[np.ndarray, dict]:
    """A boolean mask (1 or N, H, W) and its description, from ``mask`` or ``box``."""
    _, h, w = shape
    if (mask is None) == (box is None):
        raise RegionError("Give exactly one of mask= (bool H×W, or N×H×W per image) "
                          "or box=(top, left, height, width).")
    if box is not None:
        if len(box) != 4 or any(int(v) != v for v in box):
            raise RegionError(f"box must be (top, left, height, width) in pixels; got {box!r}.")
        top, left, bh, bw = (int(v) for v in box)
        if top < 0 or left < 0 or bh < 1 or bw < 1 or top + bh > h or left + bw > w:
            raise RegionError(f"box {tuple(box)} does not fit inside the {h}×{w} images.")
        region = np.zeros((1, h, w), bool)
        region[0, top : top + bh, left : left + bw] = True
        return region, {"box": [top, left, bh, bw]}
    region = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    if region.ndim == 2:
        region = region[None]
    if region.ndim != 3 or region.shape[1:] != (h, w) or region.shape[0] not in (1, n):
        raise RegionError(f"mask must be H×W = {h}×{w} (one region for all images) or N×H×W with N = {n} "
                          f"(one per selected image); got shape {region.shape}.")
    return region, {"mask": _describe(region)}


def share_inside(attr: Attributor, images: ImageSelection = None, *, mask=None, box=None, target="label",
                 baselines=None, by: str | None = None, batch_size: int = 128,
                 progress: bool = True) -> RegionShare:
    """Share of each image's |attribution| (summed over channels) that falls inside a region.

    The region is ``box=(top, left, height, width)`` or a boolean ``mask`` (H×W for all
    images, N×H×W per image). ``per_image`` has image_id, label, ``share``, ``area`` (the
    region's share of the pixels: what a map spread evenly would put inside) and ``lift``
    (share / area). ``summary`` has n, mean and median share, area, lift of the mean, and the
    fraction of images whose share exceeds the area; ``by`` groups it by a column of the
    images table (``"label"``, ``"label_name"``, a metadata column) or ``"predicted"``.
    A cue the model relies on gets a lift far above 1 in the images that carry it.

    >>> attr = Attributor(store, net, method="saliency")
    >>> result = share_inside(attr, "val", box=(0, 0, 4, 4), by="label", progress=False)
    >>> result.per_image.columns, result.summary.height
    (['image_id', 'label', 'share', 'area', 'lift'], 10)
    """
    store = attr.store
    selected = store._select_rows(images)
    region, descriptor = _region(mask, box, selected.height, attr.shape)
    key = attr.cache_key(target, baselines) | {"aggregate": "share_inside", "region": descriptor,
                                               "images": _ids_digest(selected["image_id"])}

    def compute() -> pl.DataFrame:
        share, area = np.zeros(selected.height), np.zeros(selected.height)
        for start, maps in _map_chunks(attr, selected, target, baselines, batch_size, progress):
            magnitude = np.abs(maps).sum(axis=1)  # (B, H, W)
            inside = region if len(region) == 1 else region[start : start + len(maps)]
            total = magnitude.reshape(len(maps), -1).sum(axis=1)
            within = (magnitude * inside).reshape(len(maps), -1).sum(axis=1)
            share[start : start + len(maps)] = np.where(total > 0, within / np.where(total > 0, total, 1), np.nan)
            area[start : start + len(maps)] = inside.reshape(len(inside), -1).mean(axis=1)
        return pl.DataFrame({"image_id": selected["image_id"], "label": selected["label"],
                             "share": share, "area": area, "lift": share / area})
    per_image = cache.frame(store, attr.model_id, "attribution-share", key, compute)
    grouped = per_image
    if by is not None:
        if by == "predicted":
            extra = attr.predictions(per_image["image_id"]).select("image_id", "predicted")
        elif by in store.images.columns:
            extra = store.images.select("image_id", by)
        else:
            raise RegionError(f"Cannot group by {by!r}: use 'predicted' or a column of store.images "
                              f"({listing(store.images.columns)}).")
        if by not in per_image.columns:
            grouped = per_image.join(extra.unique("image_id"), on="image_id", how="left", maintain_order="left")
    aggregations = [pl.len().cast(pl.Int64).alias("n"), pl.col("share").mean().alias("mean_share"),
                    pl.col("share").median().alias("median_share"), pl.col("area").mean().alias("area"),
                    (pl.col("share").mean() / pl.col("area").mean()).alias("lift"),
                    (pl.col("share") > pl.col("area")).mean().alias("above_area")]
    summary = grouped.group_by(by).agg(aggregations).sort(by) if by else grouped.select(aggregations)
    return RegionShare(per_image, summary)
