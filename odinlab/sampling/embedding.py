"""The model's learned space in two dimensions: UMAP of a layer's activations, cached in the store.

An :class:`Embedding` is fitted on the activations of one layer for one image set (optionally
after PCA to ~50 dimensions). Its coordinates are stored as a Parquet result keyed by (model
version, layer, parameters, image set), so fitting again, in this session or a later one, is a
read. Nothing is pickled into the store (a store is data, never code): the fitted reducer lives
in this session only; on a reopened store, ``transform`` and ``inverse_transform`` refit it
once with the same seed, which reproduces the stored coordinates.

Features are out-of-core: when a layer's rows exceed ``odinlab.in-memory-limit`` (Dask config,
see :mod:`odinlab.store.lazy`), :func:`layer_features` returns them lazily (a Dask-backed
DataArray over ``dask.array.from_zarr``) and :class:`Embedding` reduces them with
:class:`BlockPCA` by Zarr chunks, so only the images × ``pca`` matrix is ever in memory.
"""

from __future__ import annotations

import warnings
import weakref

import dask.array as da
import numpy as np
import polars as pl
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from odinlab.errors import EmbeddingError
from odinlab.sampling.pca import BlockPCA, by_blocks
from odinlab.store.labelled import labelled
from odinlab.store.layout import digest
from odinlab.store.lazy import compute, lazy_layer
from odinlab.store.selection import ImageSelection
from odinlab.torch_helpers import evaluating, hooks, module_device

REDUCERS = ("umap", "pca", None)
_SESSION: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layer_features(store, model, layer: str, images: ImageSelection = None, *, spatial: str = "flatten",
                   module: nn.Module | None = None) -> xr.DataArray:
    """(images, features) float32 activations of ``layer``: conv maps flattened or averaged.

    Labelled by image id (``.values`` is the numpy matrix). Computed on demand with
    ``module`` (or this session's module of ``model``); a layer never materialized with no
    module raises :class:`~odinlab.errors.NotMaterializedError`.

    Out-of-core: above ``odinlab.in-memory-limit`` the DataArray wraps a lazy Dask array read
    through ``dask.array.from_zarr`` (``.data``; ``.values`` would load it all), materializing
    missing rows first.

    >>> feats = layer_features(store, "cnn@1", "features.relu2", ["digits-0000"], spatial="mean")
    >>> feats.dims, feats.shape
    (('image_id', 'feature'), (1, 32))
    """
    if spatial not in ("flatten", "mean"):
        raise EmbeddingError(f"spatial must be 'flatten' or 'mean', not {spatial!r}.")
    selection = store.select(images)
    lazy = lazy_layer(store, model, layer, selection, module=module, units=spatial == "mean")
    if lazy is not None:
        values = lazy.reshape(lazy.shape[0], -1)
        return labelled(values, selection.ids, dims=("feature",), name=layer, model_id=store.model(model).model_id)
    acts = store.activations(model, layer, selection, module=module)
    values = acts.values
    if values.ndim > 2:
        values = values.reshape(len(values), values.shape[1], -1)
        values = values.mean(axis=2) if spatial == "mean" else values.reshape(len(values), -1)
    return labelled(np.ascontiguousarray(values, dtype=np.float32), acts.image_id.values.tolist(),
                    dims=("feature",), name=layer, **acts.attrs)


class Embedding:
    """UMAP (or PCA) of a layer's activations, scikit-learn style, cached in the store.

    ``model`` is a model id, name, record or registered module; ``module=`` is the network to
    compute activations never materialized with (this session's module of ``model`` when
    omitted). ``pca`` reduces to that many dimensions before UMAP (None: off); ``reducer`` is
    ``"umap"``, ``"pca"`` (a linear map straight to ``n_components``) or None. Features that
    already have ``n_components`` dimensions (a 2-unit layer) are used as they are.
    Deterministic for a ``seed`` (UMAP then runs single-threaded). After ``fit``:
    ``embedding_`` (numpy, images × n_components), ``image_ids_`` (their ids), ``selection_``
    and ``from_cache_`` (True when the coordinates were read); :meth:`coordinates` gives them
    labelled by image id.

    >>> emb = Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val")
    >>> emb.embedding_.shape, emb.from_cache_
    ((269, 2), False)
    >>> Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val").from_cache_
    True
    """

    def __init__(self, store, model, layer: str, *, n_components: int = 2, pca: int | None = 50,
                 n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "euclidean",
                 reducer: str | None = "umap", spatial: str = "flatten", seed: int = 0,
                 module: nn.Module | None = None, progress: bool = True):
        if reducer not in REDUCERS:
            raise EmbeddingError(f"reducer must be one of 'umap', 'pca' or None, not {reducer!r}.")
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise EmbeddingError(f"n_components must be a positive int, not {n_components!r}.")
        if pca is not None and (not isinstance(pca, int) or pca < n_components):
            raise EmbeddingError(f"pca must be None or an int >= n_components ({n_components}), not {pca!r}.")
        if spatial not in ("flatten", "mean"):
            raise EmbeddingError(f"spatial must be 'flatten' or 'mean', not {spatial!r}.")
        self.store, self.record = store, store.model(model)  # resolved once, used by every call
        self.model_id, self.layer = self.record.model_id, store.check_layers(self.record, [layer])[0]
        self.n_components, self.pca, self.n_neighbors, self.min_dist = n_components, pca, n_neighbors, min_dist
        self.metric, self.reducer, self.spatial, self.seed = metric, reducer, spatial, seed
        self.module = module if module is not None else model if isinstance(model, nn.Module) else None
        self.progress = progress

    # -- fitting -----------------------------------------------------------------------------

    @property
    def params(self) -> dict:
        """The parameters that key the cached coordinates (besides model version and images)."""
        return {"layer": self.layer, "n_components": self.n_components, "pca": self.pca,
                "n_neighbors": self.n_neighbors, "min_dist": self.min_dist, "metric": self.metric,
                "reducer": self.reducer, "spatial": self.spatial, "seed": self.seed}

    def fit(self, images: ImageSelection = None) -> Embedding:
        """Fit on ``images`` (None: all), or read the stored coordinates of the same fit; return self.

        >>> Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val").image_ids_[0]
        'digits-0007'
        """
        selection = self.store.select(images)
        if len(selection) == 0:
            raise EmbeddingError("The image selection is empty; nothing to embed.")
        self.key = digest({**self.params, "images": digest({"ids": selection.ids})})
        computed = []

        def compute() -> pl.DataFrame:
            computed.append(True)
            coords = self._fit_features(self._features(selection))
            return pl.DataFrame({"image_id": selection.ids,
                                 **{f"c{j}": coords[:, j] for j in range(coords.shape[1])}})

        frame = self.store.results.table(self.record, "embedding", {**self.params, "key": self.key}, compute)
        self.selection_ = selection
        self.image_ids_ = frame["image_id"].to_list()
        self.embedding_ = frame.drop("image_id").to_numpy().astype(np.float32)
        self.from_cache_ = not computed
        self._index = {image_id: i for i, image_id in enumerate(self.image_ids_)}
        return self

    def fit_transform(self, images: ImageSelection = None) -> xr.DataArray:
        """``fit(images).coordinates()``: the fitted coordinates, labelled by image id.

        >>> Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit_transform("val").shape
        (269, 2)
        """
        return self.fit(images).coordinates()

    def _features(self, images: ImageSelection):
        """(images, features): numpy, or a Dask array when they go out of core."""
        return layer_features(self.store, self.record, self.layer, images, spatial=self.spatial,
                              module=self.module).data

    def _fit_features(self, x) -> np.ndarray:
        """Fit the reducer on features ``x`` (numpy or Dask) and keep it in this session; return the coordinates."""
        n, d = x.shape
        self.feature_dim_ = d
        lazy = isinstance(x, da.Array)
        if d == self.n_components:
            self._remember(None, None)  # used as is
            return _in_memory(x).astype(np.float32)
        if self.reducer is None:
            raise EmbeddingError(f"{self.layer} has {d} features but reducer=None needs exactly "
                                 f"n_components={self.n_components}; use reducer='umap' or 'pca'.")
        from sklearn.decomposition import PCA

        steps = 2 if self.reducer == "umap" else 1
        with tqdm(total=steps, desc=f"embed {self.layer} ({n} images)", disable=not self.progress,
                  unit="step", delay=1) as bar:
            if self.reducer == "pca":
                k = min(self.n_components, n, d)
                pca = BlockPCA(k, self.seed).fit(x) if lazy else PCA(n_components=k, random_state=self.seed).fit(x)
                self._remember(pca, None)
                coords = by_blocks(pca, x)
                bar.update(1)
                return _pad(coords, self.n_components).astype(np.float32)
            if n <= self.n_neighbors:
                raise EmbeddingError(f"UMAP with n_neighbors={self.n_neighbors} needs more than "
                                     f"{self.n_neighbors} images, got {n}; pass a smaller n_neighbors.")
            pca = None
            if self.pca is not None and d > self.pca and n > self.pca:
                bar.set_postfix_str(f"PCA {d}→{self.pca}")
                pca = BlockPCA(self.pca, self.seed) if lazy else PCA(n_components=self.pca, random_state=self.seed)
                x = by_blocks(pca.fit(x), x)  # out of core: only images × pca in memory
            x = _in_memory(x)
            bar.update(1)
            bar.set_postfix_str("UMAP")
            reducer = self._umap().fit(x)
            bar.update(1)
        self._remember(pca, reducer)
        return np.asarray(reducer.embedding_, np.float32)

    def _umap(self):
        import umap

        return umap.UMAP(n_components=self.n_components, n_neighbors=self.n_neighbors,
                         min_dist=self.min_dist, metric=self.metric, random_state=self.seed, n_jobs=1)

    def _remember(self, pca, reducer) -> None:
        _SESSION.setdefault(self.store, {})[(self.model_id, self.key)] = (pca, reducer)

    def _fitted(self):
        """The session's fitted (pca, umap); refitted once, with the same seed, when not there."""
        self._check_fitted()
        found = _SESSION.get(self.store, {}).get((self.model_id, self.key))
        if found is None:
            self._fit_features(self._features(self.selection_))
            found = _SESSION[self.store][(self.model_id, self.key)]
        return found

    def _check_fitted(self) -> None:
        if not hasattr(self, "embedding_"):
            raise EmbeddingError("This Embedding is not fitted yet; call .fit(images) first.")

    def _labelled(self, coords: np.ndarray, image_ids) -> xr.DataArray:
        return labelled(np.asarray(coords, np.float32), image_ids, dims=("component",), name="embedding",
                        model_id=self.model_id, layer=self.layer)

    # -- using it ----------------------------------------------------------------------------

    def coordinates(self, images: ImageSelection = None) -> xr.DataArray:
        """Coordinates of ``images`` (None: the fitted ones), dims (image_id, component): stored
        ones read, others transformed.

        >>> emb = Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val")
        >>> coords = emb.coordinates(emb.image_ids_[:3])
        >>> coords.dims, bool(np.allclose(coords.values, emb.embedding_[:3]))
        (('image_id', 'component'), True)
        """
        self._check_fitted()
        if images is None:
            return self._labelled(self.embedding_, self.image_ids_)
        selection = self.store.select(images)
        ids = selection.ids
        known = np.array([i in self._index for i in ids], bool)
        out = np.empty((len(ids), self.embedding_.shape[1]), np.float32)
        if known.any():
            out[known] = self.embedding_[[self._index[i] for i in np.asarray(ids)[known]]]
        if (~known).any():
            out[~known] = self.transform(selection[~known]).values
        return self._labelled(out, ids)

    def transform(self, images: ImageSelection) -> xr.DataArray:
        """Place images into the fitted embedding (UMAP's ``transform``; PCA's projection),
        dims (image_id, component).

        On a store reopened in a new session the reducer is refitted once first (same seed,
        same coordinates), since fitted reducers are never stored.

        >>> emb = Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val")
        >>> emb.transform("test").shape
        (270, 2)
        """
        pca, reducer = self._fitted()
        selection = self.store.select(images)
        x = self._features(selection)
        if x.shape[1] != self.feature_dim_:
            raise EmbeddingError(f"Features of {self.layer} have {x.shape[1]} dimensions, the embedding "
                                 f"was fitted on {self.feature_dim_}.")
        if pca is not None:
            x = by_blocks(pca, x)
        x = _in_memory(x)
        if reducer is not None:
            with warnings.catch_warnings():  # umap's transform warns about its own internals
                warnings.simplefilter("ignore")
                x = reducer.transform(x)
        elif pca is not None:
            x = _pad(x, self.n_components)
        return self._labelled(x, selection.ids)

    def inverse_transform(self, points: np.ndarray) -> np.ndarray:
        """Map embedding points back to the layer's feature space (UMAP's inverse transform).

        >>> emb = Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val")
        >>> emb.inverse_transform(emb.embedding_[:2]).shape
        (2, 64)
        """
        pca, reducer = self._fitted()
        points = np.asarray(points, np.float32).reshape(-1, self.embedding_.shape[1])
        if pca is None and reducer is None:
            return points
        if reducer is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                points = np.asarray(reducer.inverse_transform(points), np.float32)
        elif points.shape[1] > pca.n_components_:
            points = points[:, : pca.n_components_]
        return (pca.inverse_transform(points) if pca is not None else points).astype(np.float32)

    def predict(self, points: np.ndarray, module: nn.Module | None = None) -> np.ndarray:
        """Class probabilities of embedding points: inverse-transformed, then run through the
        rest of the network from the layer on (its output is replaced by the points' features).

        Needs the module (``module=``, the one given to the Embedding, or this session's) and
        flattened, unpooled features. For networks with skip connections around the layer, the
        result is only an approximation.

        >>> emb = Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val")
        >>> emb.predict(emb.embedding_[:2]).shape
        (2, 10)
        """
        features = self.inverse_transform(points)
        if module is None:
            module = self.module if self.module is not None else self.store.module(self.record)
        shape = self._layer_shape()
        if int(np.prod(shape)) != features.shape[1] or self.spatial != "flatten":
            raise EmbeddingError(f"The embedding's features ({features.shape[1]} values) are not {self.layer}'s "
                                 f"output {shape}; refit with spatial='flatten' on an unpooled layer to predict.")
        replacement = torch.from_numpy(features.reshape(len(features), *shape))

        def replace(name, output, inputs):
            return replacement.to(output.device, output.dtype)

        with evaluating(module), torch.no_grad(), hooks(module, [self.layer], replace):
            # the input only drives the network up to the layer, whose output is replaced
            dummy = torch.zeros(len(features), *self.record.input_shape, device=module_device(module))
            logits = module(dummy)
        logits = logits[0] if isinstance(logits, tuple | list) else logits
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def _layer_shape(self) -> tuple[int, ...]:
        arch = self.store.architecture(self.record)
        return tuple(dict(zip(arch["layer"].to_list(), arch["output_shape"].to_list()))[self.layer])

    def frame(self) -> pl.DataFrame:
        """One row per embedded image: image_id, x, y, split, label, label_name, predicted,
        confidence, margin, correct (prediction columns null where none is stored).

        >>> _ = store.materialize(net, images="val", progress=False)
        >>> Embedding(store, "cnn@1", "head.fc1", reducer="pca", progress=False).fit("val").frame().columns[:4]
        ['image_id', 'x', 'y', 'split']
        """
        self._check_fitted()
        d = self.embedding_.shape[1]
        names = ["x", "y", "z"][:d] if d <= 3 else [f"c{j}" for j in range(d)]
        coords = pl.DataFrame({"image_id": self.image_ids_, **{name: self.embedding_[:, j] for j, name in enumerate(names)}})
        info = self.selection_.frame.select("image_id", "split", "label", "label_name")
        preds = self.store.predictions(self.record, self.selection_)
        preds = preds.select("image_id", "predicted", "confidence", "margin", "correct").unique("image_id")
        return coords.hstack(info.drop("image_id")) \
                     .join(preds, on="image_id", how="left", maintain_order="left")

    def __repr__(self) -> str:
        fitted = f"{len(self.image_ids_)} images" if hasattr(self, "image_ids_") else "not fitted"
        return f"<Embedding {self.model_id} {self.layer} {self.reducer} ({fitted})>"


def _in_memory(x) -> np.ndarray:
    return compute(x)[0] if isinstance(x, da.Array) else x


def _pad(x: np.ndarray, k: int) -> np.ndarray:
    return x if x.shape[1] >= k else np.hstack([x, np.zeros((len(x), k - x.shape[1]), x.dtype)])
