"""The Attributor: one Captum method for one model version, results kept in the store.

Maps are computed in batches (see :mod:`.batches`) for the images not yet stored and kept
per image in Zarr: float16, scaled per image so that tiny gradients keep their precision,
keyed by model version, method, layer, target, baselines and every parameter that changes
the result, together with Captum's convergence delta where the method has one.
"""

from __future__ import annotations

import inspect
import weakref

import numpy as np
import polars as pl
import torch
import xarray as xr
from dask.utils import parse_bytes
from torch import nn
from tqdm.auto import tqdm

from odinlab.debug.attribution.batches import BatchesMixin
from odinlab.debug.attribution.distributed import attribute_on, scale_maps
from odinlab.debug.attribution.methods import (
    _DISTRIBUTION,
    _PERFORMANCE,
    _describe,
    _has_delta,
    _noise_tunnel_args,
    _registry,
    _resolve_method,
)
from odinlab.errors import (
    LabelError,
    OptionError,
    ReadOnlyStoreError,
    TargetError,
    UnknownLayerError,
    UnknownMethodError,
    listing,
)
from odinlab.parallel.context import current_client
from odinlab.store.labelled import labelled
from odinlab.store.layout import digest
from odinlab.store.models import ModelRef
from odinlab.store.pixels import to_model_input
from odinlab.store.selection import ImageSelection, Selection

# Per store (weakly: a store that is dropped is forgotten): result arrays opened in this session.
_OPENED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
FORMAT = 1  # bump when the stored encoding changes, so old results are not reused
MAP_DIMS = ("channel", "y", "x")


# -- the attributor -----------------------------------------------------------------------

class Attributor(BatchesMixin):
    """Captum attributions of one model version over store images, stored and reused.

    ``model`` is anything the store takes as a model: ``"name@N"``, ``"name"`` (its latest
    version), a record from ``store.model(...)`` or a registered module. Computing needs the
    module: a module given here, or the one this session registered or loaded for the version
    (``store.load_weights(MyNet(), "cnn@1")`` in a new session). ``method`` is a name from
    :func:`methods` (``"integrated_gradients"``, ``"saliency"``, ``"input_x_gradient"``,
    ``"gradient_shap"``, ``"deeplift"``, ``"occlusion"``, ``"layer_gradcam"``...), a Captum class
    name or class. ``layer`` (a name from ``named_modules()`` or the module) is for layer
    methods; it defaults to the last ``Conv2d``, and layer maps are summed over channels and
    upsampled to the input (``upsample``, a ``torch.nn.functional.interpolate`` mode).
    ``noise_tunnel`` wraps the method in Captum's NoiseTunnel: ``"smoothgrad"``,
    ``"smoothgrad_sq"``, ``"vargrad"`` or a dict of NoiseTunnel arguments (defaults: 10 samples,
    ``stdevs=0.15``, i.e. 15% of the [0, 1] input range). Other keyword arguments go to the
    Captum constructor or to its ``attribute()``, whichever takes them (``n_steps=``,
    ``sliding_window_shapes=``...). Each forward pass holds about 16 MiB of activations on the
    CPU (faster than bigger passes there) and up to ``memory_budget`` on a GPU; ``seed`` makes
    sampling methods repeatable.

    >>> attr = Attributor(store, net, method="IntegratedGradients", n_steps=16)
    >>> attr
    <Attributor integrated_gradients of cnn@1 (n_steps=16)>
    >>> Attributor(store, "cnn@1", "saliency").record.model_id
    'cnn@1'
    """

    def __init__(self, store, model: ModelRef, method="integrated_gradients", *, layer=None,
                 noise_tunnel=None, upsample: str = "bilinear", memory_budget: int | str = "1GB",
                 seed: int = 0, **method_kwargs):
        # What a worker of a Dask cluster needs to build the same attributor (see .distributed).
        self.settings = {"method": method, "layer": layer, "noise_tunnel": noise_tunnel, "upsample": upsample,
                         "memory_budget": memory_budget, "seed": seed, **method_kwargs}
        self.store = store
        self.record = store.model(model)  # resolved once; every later call passes the record on
        self.model_id = self.record.model_id
        self.module = store.module(model if isinstance(model, nn.Module) else self.record)
        store.check_input_shape(self.record)
        self.pixel_shape = tuple(self.record.input_shape)
        self.method_class = _resolve_method(method)
        self.method = {cls: name for name, cls in _registry().items()}.get(
            self.method_class, self.method_class.__name__)
        self.upsample, self.seed = upsample, int(seed)
        self.memory_budget = parse_bytes(memory_budget) if isinstance(memory_budget, str) else int(memory_budget)
        init = inspect.signature(self.method_class.__init__).parameters
        self.is_layer_method = "layer" in init
        if layer is not None and not self.is_layer_method:
            layered = [n for n, c in _registry().items() if "layer" in inspect.signature(c.__init__).parameters]
            raise UnknownLayerError(f"{self.method} attributes to the input and takes no layer; layer methods: "
                                    f"{listing(layered, 30)}.")
        self.layer = self._resolve_layer(layer) if self.is_layer_method else None
        self.noise_tunnel = _noise_tunnel_args(noise_tunnel)
        self._init_kwargs, self._call_kwargs = self._split_kwargs(method_kwargs, init)
        self._explainers: list = []  # one Captum object per worker thread
        self._channel_mean: np.ndarray | None = None
        c, h, w = self.pixel_shape
        self.shape = (1 if self._upsampled else c, h, w)

    # -- public ---------------------------------------------------------------------------

    def attribute(self, images: ImageSelection = None, target="prediction", baselines=None, *,
                  batch_size: int = 256, progress: bool = True, scheduler=None) -> xr.DataArray:
        """Attribution maps of ``images`` for ``target``, labelled by image id, in the order selected.

        Returns a float32 ``xarray.DataArray`` with dims ``("image_id", "channel", "y", "x")``
        (``.values`` is the numpy array; one channel for layer methods) and attrs ``model_id``,
        ``method`` and ``target``. ``target`` is ``"prediction"`` (the model's top class: what
        made it say that; the default), ``"label"`` (each image's label), a class index or a class
        name. ``baselines`` (for methods that take them, in model-input space where uint8 pixels
        are scaled to [0, 1]) is ``"zeros"``, ``"mean"`` (per-channel mean of the training
        images), ``"zeros+mean"`` (the two as a distribution), a number, or an array
        broadcastable to (C, H, W) or (K, C, H, W) for a distribution; the default is zeros, and
        zeros plus the mean for GradientShap and DeepLiftShap. Images not stored yet for these
        settings are computed ``batch_size`` at a time; with a Dask client (``scheduler=client`` or
        ``with odinlab.parallel(client):``) on the cluster's workers, split by chunk.

        >>> attr = Attributor(store, net, method="saliency")
        >>> maps = attr.attribute("val", progress=False)
        >>> maps.shape, maps.dtype, maps.dims
        ((269, 1, 8, 8), dtype('float32'), ('image_id', 'channel', 'y', 'x'))
        >>> maps.attrs["target"], maps.image_id.values[0] == store.select("val").ids[0]
        ('prediction', True)
        """
        selection = self.store.select(images)
        target = self._check_target(target)
        maps, aux = self._compute(selection, target, baselines, batch_size, progress, scheduler)
        return self._labelled(self._read(maps, aux, selection.rows), selection, target, MAP_DIMS, "attribution")

    def deltas(self, images: ImageSelection = None, target="prediction", baselines=None, *,
               batch_size: int = 256, progress: bool = True, scheduler=None) -> xr.DataArray:
        """Captum's convergence delta of each image's attribution (computed if not stored yet).

        A DataArray over ``image_id``, in the order selected. For Integrated Gradients it is the
        sum of the attributions minus the difference of the target's output between the input
        and the baseline (averaged over samples for sampling methods). Methods without one
        (Saliency, Occlusion...) are refused.

        >>> attr = Attributor(store, net, n_steps=32)
        >>> deltas = attr.deltas(["digits-0000"], progress=False)
        >>> deltas.dims, bool(np.abs(deltas).max() < 0.05)
        (('image_id',), True)
        """
        if not self._has_delta:
            with_delta = [n for n, c in _registry().items() if _has_delta(c)]
            raise UnknownMethodError(f"{self.method} has no convergence delta; methods with one: "
                                     f"{listing(with_delta)}.")
        selection = self.store.select(images)
        target = self._check_target(target)
        _, aux = self._compute(selection, target, baselines, batch_size, progress, scheduler)
        values = aux.read(selection.rows)[:, 1] if len(selection) else np.zeros(0, np.float32)
        return self._labelled(values, selection, target, (), "delta")

    def predictions(self, images: ImageSelection = None) -> pl.DataFrame:
        """image_id, label, label_name and the model's ``predicted`` class (and ``predicted_name``),
        in the order selected: what ``target="prediction"`` explains, and captions for a grid.

        Read with ``store.predictions``; images whose predictions are not stored yet are
        materialized first (computed in memory on a read-only store).

        >>> Attributor(store, net).predictions(["digits-0000"]).columns
        ['image_id', 'label', 'label_name', 'predicted', 'predicted_name']
        """
        selection = self.store.select(images)
        stored = self.store.predictions(self.record, selection).select("image_id", "predicted")
        unique = selection.unique()
        missing = unique.where(~pl.col("image_id").is_in(stored["image_id"].implode()))
        if len(missing) and not self.store.read_only:
            self.store.materialize(self.record, [], missing, progress=False)
            stored = self.store.predictions(self.record, selection).select("image_id", "predicted")
        elif len(missing):
            computed = [self._predict(self._input(chunk)) for chunk in missing.chunks(1024)]
            stored = pl.concat([stored, pl.DataFrame({"image_id": missing.ids, "predicted": np.concatenate(computed)})])
        frame = selection.frame.select("image_id", "label", "label_name").join(
            stored.unique("image_id"), on="image_id", how="left", maintain_order="left")
        return frame.with_columns(predicted_name=self._class_names(frame["predicted"]))

    def _class_names(self, values) -> pl.Series:
        """The class name of each class index (None where there is none)."""
        classes = list(self.record.classes) or self.store.classes
        names = [classes[v] if v is not None and 0 <= v < len(classes) else None
                 for v in pl.Series(values).to_list()]
        return pl.Series(names, dtype=pl.String)

    def cache_key(self, target="prediction", baselines=None) -> dict:
        """Every setting that changes the maps; stored results are found by its digest.

        >>> key = Attributor(store, net, n_steps=16).cache_key(target="prediction")
        >>> key["target"], key["kwargs"], key["baselines"]["kind"]
        ('prediction', {'n_steps': 16}, 'zeros')
        """
        return self._key(self._check_target(target), self._baselines(baselines)[0])

    def _labelled(self, values: np.ndarray, selection: Selection, target, dims, name: str) -> xr.DataArray:
        """Per-image values with their image ids, and what produced them."""
        attrs = {"model_id": self.model_id, "method": self.method, "target": target}
        if self.layer is not None:
            attrs["layer"] = self.layer
        return labelled(values, selection.ids, dims=dims, name=name, **attrs)

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
        layer = self.store.check_layers(self.record, [layer], self.module)[0]
        shapes = dict(zip(*self.store.architecture(self.record).select("layer", "output_shape")
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
            raise OptionError(f"{self.method} takes no argument {listing(wrong)}.{hint} It takes: "
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
        classes = list(self.record.classes)
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
                raise OptionError(f"{self.method} takes no baselines.")
            return None, None
        distribution = self.method_class.__name__ in _DISTRIBUTION
        if baselines is None:
            baselines = "zeros+mean" if distribution else "zeros"
        c, h, w = self.pixel_shape
        if isinstance(baselines, str):
            parts = {"zeros": ["zeros"], "mean": ["mean"], "zeros+mean": ["zeros", "mean"]}.get(baselines)
            if parts is None:
                raise OptionError(f"Unknown baselines {baselines!r}: use 'zeros', 'mean', 'zeros+mean', a number "
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
                raise OptionError(f"baselines of shape {raw.shape} do not broadcast to the images' "
                                 f"{(c, h, w)}.") from error
            array = np.array(array.reshape(-1, c, h, w), np.float32)  # a writable copy
            descriptor = _describe(array)
        if len(array) > 1 and not distribution:
            raise OptionError(f"{self.method} takes one baseline, not a distribution of {len(array)}; "
                             f"distribution methods: {listing(sorted(_DISTRIBUTION))}.")
        if len(array) < 2 and self.method_class.__name__ in ("DeepLiftShap", "LayerDeepLiftShap"):
            raise OptionError(f"{self.method} needs at least two baselines (a distribution).")
        return descriptor, torch.from_numpy(array)

    def _mean(self) -> np.ndarray:
        """Per-channel mean of the training images (all images when there is no train split)."""
        if self._channel_mean is None:
            images = self.store.images
            split = "train" if (images["split"] == "train").any() else None
            params = {"split": split, "n": int((images["split"] == split).sum()) if split else images.height}

            def compute() -> pl.DataFrame:
                total, count = 0.0, 0
                for _, x in self.store.batches(split, batch_size=4096):
                    total, count = total + x.sum(axis=(0, 2, 3), dtype=np.float64), count + len(x) * x[0, 0].size
                return pl.DataFrame({"channel": np.arange(len(total)), "mean": total / count})
            self._channel_mean = self.store.results.table(self.record, "channel-mean", params, compute)["mean"] \
                .to_numpy().astype(np.float32)
        return self._channel_mean

    # -- computing ------------------------------------------------------------------------

    def _compute(self, selection: Selection, target, baselines, batch_size: int, progress: bool, scheduler=None):
        """Arrays holding the maps and (scale, delta) of every selected image, computing those missing."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise OptionError(f"batch_size must be a positive int, not {batch_size!r}.")
        client = current_client(scheduler)
        if target == "label" and (selection.labels < 0).any():
            raise LabelError(f"target='label' but {int((selection.labels < 0).sum())} of the selected images "
                             "have no label; use target='prediction' or a class.")
        descriptor, base = self._baselines(baselines)
        key = self._key(target, descriptor)
        unique = selection.unique()  # each image once, in row order: sequential writes
        try:
            maps, aux = self._stored(key, unique.rows)
        except ReadOnlyStoreError:  # nothing can be stored: read what is, compute the rest in memory
            return self._in_memory(unique, key, target, base, batch_size, progress)
        missing = unique[~maps.done_rows(unique.rows)] if len(unique) else unique
        if client is not None and len(missing):
            attribute_on(client, self, missing, target, base, key, maps, aux, batch_size, progress)
            return maps, aux
        # Batches are written a Zarr chunk of rows at a time (at most ~1 MiB of maps waits):
        # every write rewrites whole chunks, so writing each small batch would repeat that work.
        flush_rows = max(batch_size, maps.values.chunks[0])
        pending: list[tuple] = []
        with tqdm(total=len(missing), desc=f"{self.method} {self.model_id}", unit="img",
                  disable=not progress or not len(missing), delay=2) as bar:
            for batch in missing.chunks(batch_size):
                pending.append((batch.rows, *self._attribute_batch(batch, target, base)))
                bar.update(len(batch))
                if sum(len(p[0]) for p in pending) >= flush_rows:
                    _write_batch(maps, aux, *(np.concatenate(part) for part in zip(*pending)))
                    pending = []
            if pending:
                _write_batch(maps, aux, *(np.concatenate(part) for part in zip(*pending)))
        return maps, aux

    def _stored(self, key: dict, rows: np.ndarray):
        """The (maps, aux) arrays for ``key``; opened once per store and session (opening a Zarr
        array reads its metadata, which would cost more than reading a few hundred maps)."""
        opened = _OPENED.setdefault(self.store, {})
        name = (self.model_id, digest(key))
        pair = opened.get(name)
        if pair is None or (len(rows) and rows.max() >= pair[0].values.shape[0]):  # new images: grow
            pair = (self.store.results.rows(self.record, "attribution", key, self.shape, "float16"),
                    self.store.results.rows(self.record, "attribution-aux", key, (2,), "float32"))
            opened[name] = pair
        return pair

    def _in_memory(self, unique: Selection, key: dict, target, base, batch_size, progress):
        maps, aux = _InMemory(), _InMemory()
        stored = [self.store.results.find_rows(self.record, kind, key) for kind in ("attribution", "attribution-aux")]
        if None not in stored and len(unique):
            done = unique.rows < stored[0].values.shape[0]  # images ingested since may be missing
            done[done] = stored[0].done_rows(unique.rows[done])
            found = unique[done]
            maps.rows.update(zip(found.rows.tolist(), stored[0].read(found.rows)))
            aux.rows.update(zip(found.rows.tolist(), stored[1].read(found.rows)))
            unique = unique[~done]
        for batch in tqdm(unique.chunks(batch_size), total=-(-len(unique) // batch_size), disable=not progress,
                          delay=2, desc=f"{self.method} {self.model_id} (read-only store: not stored)"):
            values, delta = self._attribute_batch(batch, target, base)
            maps.rows.update(zip(batch.rows.tolist(), values))
            aux.rows.update(zip(batch.rows.tolist(), np.stack([np.ones_like(delta), delta], axis=1)))
        return maps, aux

    def _read(self, maps, aux, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros((0, *self.shape), np.float32)
        return maps.read(rows) * aux.read(rows)[:, 0, None, None, None]


class _InMemory:
    """Results of a read-only store, which cannot keep them: read like a RowArray."""

    def __init__(self):
        self.rows: dict[int, np.ndarray] = {}

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([self.rows[int(r)] for r in rows]).astype(np.float32)


def _write_batch(maps, aux, rows: np.ndarray, values: np.ndarray, delta: np.ndarray) -> None:
    """Store one batch: maps in float16 divided by their largest |value| (see :func:`scale_maps`)."""
    scale, scaled = scale_maps(values)
    aux.write(rows, np.stack([scale, delta], axis=1))  # first: the maps' done mask is the commit
    maps.write(rows, scaled)
