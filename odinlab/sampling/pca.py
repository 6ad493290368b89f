"""PCA by row blocks of a Dask array: the features of an embedding never all in memory.

Used by :class:`~odinlab.sampling.embedding.Embedding` when a layer's features are bigger than
``odinlab.in-memory-limit``: fitted from sums over chunks, applied chunk by chunk.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from odinlab.store.lazy import compute

# Out-of-core PCA is exact (from the features × features covariance, as scikit-learn does for
# tall data) up to this many features (a 128 MB matrix); beyond, Dask's randomized svd_compressed.
COVARIANCE_FEATURES = 4096
# Fitted reducers of this session, per store object and embedding key (never written to the store).


class BlockPCA:
    """PCA fitted and applied by row blocks of a Dask array (or a numpy one), scikit-learn style.

    Exact for up to :data:`COVARIANCE_FEATURES` features: the eigenvectors of the covariance
    summed over chunks in float64, with scikit-learn's sign convention, so the components equal
    ``PCA(svd_solver="covariance_eigh")``'s; wider features use ``dask.array.linalg.svd_compressed``.
    ``transform`` of a Dask array returns numpy (images × components), computed by blocks.

    >>> x = np.random.default_rng(0).normal(size=(100, 5)).astype(np.float32)
    >>> BlockPCA(2).fit(da.from_array(x, chunks=25)).transform(x).shape
    (100, 2)
    """

    def __init__(self, n_components: int, seed: int = 0):
        self.n_components, self.seed = n_components, seed

    def fit(self, x, scheduler=None) -> BlockPCA:
        x = (x if isinstance(x, da.Array) else da.from_array(np.asarray(x))).astype(np.float64)
        n, d = x.shape
        k = min(self.n_components, n, d)
        self.mean_, = compute(x.mean(axis=0), scheduler=scheduler)  # its own pass: see compare._streamed_cka
        centred = x - self.mean_
        if d <= COVARIANCE_FEATURES:
            covariance, = compute(centred.T @ centred, scheduler=scheduler)
            values, vectors = np.linalg.eigh(covariance / max(n - 1, 1))
            values, components = np.clip(values[::-1][:k], 0, None), vectors[:, ::-1][:, :k].T
        else:
            wide = centred.rechunk({1: -1}, method="tasks")  # not p2p: see odinlab.store.lazy
            _, s, v = da.linalg.svd_compressed(wide, k, n_power_iter=4, seed=self.seed)
            s, components = compute(s, v, scheduler=scheduler)
            values = s**2 / max(n - 1, 1)
        # scikit-learn's svd_flip: the largest entry of each component is positive
        signs = np.sign(components[np.arange(k), np.abs(components).argmax(axis=1)])
        self.components_ = components * np.where(signs == 0, 1, signs)[:, None]
        self.explained_variance_, self.n_components_ = values, k
        return self

    def transform(self, x) -> np.ndarray:
        return by_blocks(self, x)

    def _project(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean_) @ self.components_.T).astype(np.float32)

    def inverse_transform(self, z) -> np.ndarray:
        return (np.asarray(z, np.float64) @ self.components_ + self.mean_).astype(np.float32)


def by_blocks(pca, x, scheduler=None) -> np.ndarray:
    """``pca.transform(x)`` (scikit-learn's or a BlockPCA), row block by row block when ``x`` is lazy.

    >>> x = da.from_array(np.random.default_rng(1).normal(size=(60, 4)), chunks=20)
    >>> by_blocks(BlockPCA(2).fit(x), x).shape
    (60, 2)
    """
    project = pca._project if isinstance(pca, BlockPCA) else pca.transform
    if not isinstance(x, da.Array):
        return project(x)
    x = x.rechunk({1: -1}, method="tasks")
    out = x.map_blocks(project, dtype=np.float32, chunks=(x.chunks[0], (pca.n_components_,)))
    return compute(out, scheduler=scheduler)[0]
