r"""Low-rank initial weights at a fixed Frobenius norm.

Liu, Baratin, Cornford, Mihalas, Shea-Brown & Lajoie (2024, "How connectivity structure
shapes rich and lazy learning in neural circuits", ICLR 2024; its simulations) compare initial
connectivities of different rank at the *same* weight norm: a rank-``r`` matrix is the
truncated singular value decomposition of an i.i.d. Gaussian draw, rescaled to the
Frobenius norm of the full-rank initialisation, so that only the structure (the rank)
changes and not the scale that also sets the rich or lazy regime. The exception they
study is a low-rank initialisation *aligned* with the task: its input singular vectors
span the task's top directions.

For a weight ``w`` of shape ``(n_in, n_out)`` (used as ``h @ w``, the convention of
``dynamics.models.mlp``), ``low_rank_weight`` returns

.. math::  w = \frac{\text{norm}}{\|S_r\|_F}\; U_r S_r V_r^T,

with ``U_r S_r V_r^T`` the top ``r`` singular triples of ``G ~ N(0, 1)^{n_in x n_out}``
(``basis=None``), or, given an orthonormal ``basis`` ``B (n_in, r)``, ``w = norm / sqrt(r)
* B Q^T`` with ``Q (n_out, r)`` Haar-orthonormal columns (equal singular values on the
aligned subspace). ``rank == min(n_in, n_out)`` with ``basis=None`` is the Gaussian draw
itself rescaled to ``norm``. The target norm of ``td.MLP(init_rank=r)`` is the expected
Frobenius norm of its full-rank initialisation, ``weight_std * sqrt(n_in n_out)``.

``task_directions(x, y, k)`` gives the top ``k`` left singular vectors of the
input-output cross-covariance ``X^T Y / P`` (``(n_in, k)``; for whitened inputs and a
linear teacher ``y = x beta``, ``beta / ||beta||``), and ``LowRankInit`` is an
``init(key, x, hparams)`` for ``Spec(init=...)`` that replaces one weight of a model's
own initialisation by a low-rank one (random or aligned).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dynamics import runtime
from dynamics.checks import check_float, check_int


def check_rank(name: str, rank: Any, shape) -> int:
    """``rank`` if it is an int in ``1 .. min(shape)``."""
    rank = check_int(name, rank)
    if rank > min(shape):
        raise ValueError(f"{name} must be <= min{tuple(shape)} = {min(shape)} (the largest "
                         f"rank of a {shape[0]} x {shape[1]} weight), got {rank}")
    return rank


def low_rank_weight(key, shape, rank: int, norm: float, basis=None, dtype=jnp.float32):
    """A rank-``rank`` weight of shape ``(n_in, n_out)`` with Frobenius norm ``norm`` (see
    the module doc): the truncated SVD of a Gaussian draw, or, with an orthonormal
    ``basis`` ``(n_in, rank)``, equal singular values on that input subspace. Computed in
    ``dtype`` (float64 under ``jax_enable_x64`` for exact checks)."""
    shape = tuple(int(s) for s in shape)
    rank = check_rank("rank", rank, shape)
    if basis is None:
        g = jax.random.normal(key, shape, dtype)
        u, s, vt = runtime.unbatched_lapack(
            functools.partial(jnp.linalg.svd, full_matrices=False))(g)
        w = (u[:, :rank] * s[:rank]) @ vt[:rank]
        return norm * w / jnp.linalg.norm(s[:rank])
    basis = jnp.asarray(basis, dtype)
    if basis.shape != (shape[0], rank):
        raise ValueError(f"basis must have shape (n_in, rank) = {(shape[0], rank)}, got "
                         f"{tuple(basis.shape)}")
    q, r = runtime.unbatched_lapack(jnp.linalg.qr)(
        jax.random.normal(key, (shape[1], rank), dtype))
    q = q * jnp.sign(jnp.diagonal(r))  # Haar-distributed orthonormal columns
    return norm / np.sqrt(rank) * basis @ q.T


def task_directions(x, y, k: int) -> np.ndarray:
    """The top ``k`` left singular vectors ``(n_in, k)`` of the cross-covariance
    ``X^T Y / P`` of inputs ``x (P, n_in)`` and targets ``y (P, K)`` (float64), each
    signed so that its largest entry in absolute value is positive."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    k = check_int("k", k)
    if k > min(x.shape[1], y.shape[1]):
        raise ValueError(f"k must be <= min(n_in, K) = {min(x.shape[1], y.shape[1])} (the "
                         f"rank of X^T Y), got {k}")
    u = np.linalg.svd(x.T @ y / len(x), full_matrices=False)[0][:, :k]
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(k)])
    return u * signs


@dataclasses.dataclass(frozen=True)
class LowRankInit:
    """``init(key, x, hparams)`` for ``Spec(init=...)``: ``model.init`` with the weight
    ``params[layer]["w"]`` replaced by ``low_rank_weight`` of rank ``rank`` at the
    Frobenius norm ``norm`` (``None``: the norm of the model's own draw of that weight).
    ``basis``: ``None`` for a random subspace, else the aligned input subspace as a
    nested tuple ``(n_in, rank)`` (hashable: the init is part of the compiled program's
    key; ``task_directions`` gives one)."""

    model: Any
    layer: int
    rank: int
    norm: float | None = None
    basis: tuple | None = None

    def __post_init__(self):
        check_int("layer", self.layer, minimum=0)
        check_int("rank", self.rank)
        if self.norm is not None:
            check_float("norm", self.norm, 0.0, low_open=True)
        if self.basis is not None:
            b = np.asarray(self.basis, np.float64)
            if b.ndim != 2 or b.shape[1] != self.rank:
                raise ValueError(f"basis must be (n_in, rank={self.rank}), got shape {b.shape}")
            if not np.allclose(b.T @ b, np.eye(self.rank), atol=1e-5):
                raise ValueError("basis must have orthonormal columns")
            object.__setattr__(self, "basis", tuple(map(tuple, b.tolist())))

    @property
    def __name__(self):  # what Spec.config records
        kind = "aligned" if self.basis is not None else "random"
        return f"LowRankInit(layer={self.layer}, rank={self.rank}, {kind})"

    def __call__(self, key, x, hparams=None):
        params = self.model.init(key, x, hparams)
        if not 0 <= self.layer < len(params):
            raise ValueError(f"layer must be in 0..{len(params) - 1}, got {self.layer}")
        w = params[self.layer]["w"]
        norm = jnp.linalg.norm(w) if self.norm is None else self.norm
        k = jax.random.fold_in(jax.random.fold_in(key, self.layer), 7919)
        new = low_rank_weight(k, w.shape, self.rank, norm, self.basis, w.dtype)
        layer = {**params[self.layer], "w": new}
        return params[: self.layer] + (layer,) + params[self.layer + 1:]
