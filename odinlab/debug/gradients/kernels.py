"""Gradient math on the compact form: restore, norms, dot products and dense queries.

For one layer and sample i, with ``U_i`` (positions × fan-in) and ``G_i`` (positions ×
out-features) from :class:`~odinlab.debug.gradients.layers.LayerSpec`, the gradient of all the
layer's parameters is ``G_iᵀ [U_i | 1]`` (the column of ones gives the bias). Hence

* ``⟨∇_i, ∇_j⟩ = Σ_pq ([U_i|1][U_j|1]ᵀ)_pq (G_i G_jᵀ)_pq`` — for a Linear layer on vectors
  (one position) this is ``(a_i·a_j + 1)(g_i·g_j)``, and ``‖∇_i‖ = ‖g_i‖ √(‖a_i‖² + 1)``;
* ``⟨Q, ∇_i⟩ = Σ_p g_pᵀ Q [u_p|1]`` for a dense query ``Q`` of the (weight | bias) shape.

Norms and dot products include the bias, so they equal those of ``torch.func`` gradients over
all of the layer's parameters. Everything is batched matrix products over blocks of samples.
When a convolution has so many positions that the kernel form costs more arithmetic than
building the gradients (``P²(D+C)`` against ``C·D`` per pair), the block is restored instead:
``method="auto"`` picks the cheaper, ``"kernel"`` or ``"restore"`` force one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from odinlab.debug.gradients.layers import LayerSpec
from odinlab.errors import OptionError

BLOCK_ELEMENTS = 1 << 24  # the largest intermediate of a block product (64 MiB in float32)
METHODS = ("auto", "kernel", "restore")


@dataclass
class Grads:
    """Per-sample gradients of one layer for ``n`` samples: compact (``prefix`` = layer inputs,
    ``suffix`` = output gradients) or full (``flat`` = weight gradient then bias gradient).

    >>> spec = LayerSpec("fc", "Linear", (3,), (2,), (2, 3), True)
    >>> g = Grads(spec, prefix=torch.ones(1, 3), suffix=torch.tensor([[1.0, 2.0]]))
    >>> g.restore()["weight"][0].tolist(), g.restore()["bias"][0].tolist()
    ([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], [1.0, 2.0])
    >>> float(g.sq_norms()[0]) == float(g.to_full().flat.square().sum())
    True
    """

    spec: LayerSpec
    prefix: torch.Tensor | None = None
    suffix: torch.Tensor | None = None
    flat: torch.Tensor | None = None

    @property
    def form(self) -> str:
        return "full" if self.flat is not None else "compact"

    def __len__(self) -> int:
        return len(self.flat if self.flat is not None else self.suffix)

    def take(self, index) -> Grads:
        """The samples at ``index`` (a slice or index tensor)."""
        if self.flat is not None:
            return Grads(self.spec, flat=self.flat[index])
        return Grads(self.spec, prefix=self.prefix[index], suffix=self.suffix[index])

    # -- the pieces ----------------------------------------------------------------------

    def _u(self) -> torch.Tensor:
        """[U | 1]: (n, P, D + bias)."""
        u = self.spec.unfold(self.prefix)
        if self.spec.bias:
            u = torch.cat([u, u.new_ones(*u.shape[:2], 1)], dim=2)
        return u

    def _g(self) -> torch.Tensor:
        return self.spec.per_position(self.suffix)

    def to_full(self) -> Grads:
        """The full form: (n, weight numel + bias numel), built with one batched product."""
        if self.flat is not None:
            return self
        return Grads(self.spec, flat=self._blocked(Grads._flat))

    def _flat(self) -> torch.Tensor:
        wb = torch.bmm(self._g().transpose(1, 2), self._u())  # (n, C, D + 1)
        n, c = len(wb), self.spec.out_features
        d = self.spec.fan_in
        flat = wb[:, :, :d].reshape(n, c * d)
        if self.spec.bias:
            flat = torch.cat([flat, wb[:, :, d]], dim=1)
        return flat

    def restore(self) -> dict[str, torch.Tensor]:
        """``{"weight": (n, *weight_shape), "bias": (n, C)}``, exactly the per-sample gradients."""
        flat = self.to_full().flat
        n, w = len(flat), self.spec.full_values - (self.spec.out_features if self.spec.bias else 0)
        out = {"weight": flat[:, :w].reshape(n, *self.spec.weight_shape)}
        if self.spec.bias:
            out["bias"] = flat[:, w:]
        return out

    # -- operators -----------------------------------------------------------------------

    def sq_norms(self, method: str = "auto") -> torch.Tensor:
        """(n,) squared gradient norms (weight and bias together)."""
        if self.flat is not None:
            return self.flat.square().sum(1)
        if self.spec.positions == 1:
            u, g = self._u()[:, 0], self._g()[:, 0]
            return u.square().sum(1) * g.square().sum(1)
        if _restore_cheaper(self.spec, method, 1, 1, pairs_only=True):
            return self._blocked(lambda part: part.to_full().flat.square().sum(1))
        return self._blocked(lambda part: _self_kernel(part._u(), part._g()))

    def dot(self, other: Grads, method: str = "auto") -> torch.Tensor:
        """(n, m) matrix of gradient dot products against ``other`` (same layer)."""
        a, b = self, other
        if a.form != b.form:
            a, b = a.to_full(), b.to_full()
        if a.form == "full":
            return a.flat @ b.flat.T
        if a.spec.positions == 1:
            ua, ga, ub, gb = a._u()[:, 0], a._g()[:, 0], b._u()[:, 0], b._g()[:, 0]
            return (ua @ ub.T) * (ga @ gb.T)
        if _restore_cheaper(a.spec, method, len(a), len(b)):
            return a.to_full().flat @ b.to_full().flat.T
        return _cross_kernel(a, b)

    def dense(self, query: torch.Tensor) -> torch.Tensor:
        """(n,) scores ⟨Q, ∇_i⟩ for a dense ``query`` flattened like the full form."""
        if self.flat is not None:
            return self.flat @ query
        c, d = self.spec.out_features, self.spec.fan_in
        q = query[: c * d].reshape(c, d)
        if self.spec.bias:
            q = torch.cat([q, query[c * d :, None]], dim=1)  # (C, D + 1)
        return self._blocked(lambda part: (torch.matmul(part._u(), q.T) * part._g()).sum((1, 2)))  # Σ_p g_pᵀ Q u_p

    def _blocked(self, fn) -> torch.Tensor:
        p, width = self.spec.positions, max(self.spec.fan_in + 1, self.spec.out_features)
        size = max(1, BLOCK_ELEMENTS // max(p * max(p, width), 1))
        return torch.cat([fn(self.take(slice(s, s + size))) for s in range(0, len(self), size)])


def _restore_cheaper(spec: LayerSpec, method: str, n: int, m: int, pairs_only: bool = False) -> bool:
    if method not in METHODS:
        raise OptionError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
    if method != "auto":
        return method == "restore"
    p, c, d = spec.positions, spec.out_features, spec.fan_in + 1
    kernel = n * m * p * p * (d + c)
    build = (n if pairs_only else n + m) * p * c * d + n * m * c * d
    return build < kernel


def _self_kernel(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (torch.bmm(u, u.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).sum((1, 2))


def _cross_kernel(a: Grads, b: Grads) -> torch.Tensor:
    """Σ_pq (U_i U_jᵀ ⊙ G_i G_jᵀ) for every pair, two big matrix products per block of pairs."""
    p = q = a.spec.positions
    step_b = max(1, min(len(b), BLOCK_ELEMENTS // (p * q)))
    step_a = max(1, BLOCK_ELEMENTS // (p * q * step_b))
    out = a.suffix.new_empty(len(a), len(b))
    for i in range(0, len(a), step_a):
        part = a.take(slice(i, i + step_a))  # unfolded a block at a time: U is P times the input
        ui, gi, ni = part._u(), part._g(), len(part)
        for j in range(0, len(b), step_b):
            other = b.take(slice(j, j + step_b))
            uj, gj, nj = other._u(), other._g(), len(other)
            ku = ui.reshape(ni * p, -1) @ uj.reshape(nj * q, -1).T  # (ni·P, nj·Q)
            kg = gi.reshape(ni * p, -1) @ gj.reshape(nj * q, -1).T
            out[i : i + ni, j : j + nj] = (ku * kg).reshape(ni, p, nj, q).sum((1, 3))
    return out
