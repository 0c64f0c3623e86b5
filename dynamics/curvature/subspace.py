r"""The top eigenspace of the Hessian along training: how much of the gradient lies in
it, and how fast it turns.

Gur-Ari, Roberts & Dyer (2018), "Gradient descent happens in a tiny subspace", Sec. 2:
with ``V_k`` the ``P x k`` matrix of the top-``k`` Hessian eigenvectors (``k`` the number
of classes) and ``g`` the gradient of the training loss, the fraction of the gradient in
the top subspace

    f = ||V_k^T g||^2 / ||g||^2 = g^T P_top g / g^T g,   P_top = V_k V_k^T,

rises to near 1 after a short initial phase, and the top subspace changes slowly. The
change between two log points is measured by the overlap of the two subspaces,

    overlap(V, V') = ||V^T V'||_F^2 / k = tr(P_top P'_top) / k   in [0, 1],

1 for the same subspace and ``k/P`` on average for random ones (the mean of the squared
cosines of the principal angles; Golub & Van Loan, *Matrix Computations*, 4th ed.,
Sec. 6.4.3).

``V_k`` are the Ritz vectors of ``iterations`` Lanczos steps (``curvature.lanczos``); the
observables carry them from one log point to the next (their state, checkpointed with
the run) and, with ``warm_start``, start the next Lanczos at the sum of the carried
vectors (the first one at a Gaussian vector): when the subspace turns slowly, the start
vector already lies close to it and fewer iterations suffice. Directions that enter the
top subspace are reached through the products (and through the random restarts of
``lanczos.tridiagonalize`` when the start spans an invariant subspace).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from dynamics.curvature import lanczos, operators
from dynamics.curvature.observables import _need_int, _need_rows
from dynamics.observables import Observable

_TOP = ("the k largest eigenvalues of the Hessian ∇²_θ L_train of the full-batch training "
        "loss train_loss, Ritz vectors of `iterations` Lanczos steps")


@dataclasses.dataclass(frozen=True)
class _TopSubspace(Observable):
    k: int = 10
    iterations: int = 40
    rows_per_pass: int | None = None
    warm_start: bool = True

    def __post_init__(self):
        owner = type(self).__name__
        _need_int(owner, "k", self.k, 1)
        _need_int(owner, "iterations", self.iterations, self.k)
        _need_rows(owner, self.rows_per_pass)
        if not isinstance(self.warm_start, bool):
            raise ValueError(f"{owner}.warm_start must be a bool, got {self.warm_start!r}")

    def init(self, ctx):
        """``(vectors (k, P), valid)``: no previous vectors before the first log point."""
        flat = ravel_pytree(ctx.params)[0]
        k = min(self.k, flat.shape[0])
        return jnp.zeros((k, flat.shape[0]), flat.dtype), jnp.zeros((), bool)

    def top_vectors(self, ctx, state):
        """The top-``k`` Ritz vectors (rows, flat) at this log point."""
        previous, valid = state
        flat = ravel_pytree(ctx.params)[0]
        k_start, k_lanczos = jax.random.split(ctx.key)
        start = None
        if self.warm_start:
            cold = jax.random.normal(k_start, flat.shape, flat.dtype)
            start = jnp.where(valid, jnp.sum(previous, axis=0), cold)
        matvec = operators.from_context(ctx, "hessian", rows_per_pass=self.rows_per_pass)
        eig = lanczos.eigenpairs(matvec, ctx.params, k_lanczos, k=previous.shape[0],
                                 order=self.iterations, start=start)
        return jax.vmap(lambda v: ravel_pytree(v)[0])(eig.vectors)

    def update(self, ctx, state):
        vectors = self.top_vectors(ctx, state)
        return self.measure(ctx, state, vectors), (vectors, jnp.ones((), bool))

    def measure(self, ctx, state, vectors) -> dict:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class GradientInTopSubspace(_TopSubspace):
    """``top_subspace_gradient_fraction = ||V_k^T g||^2 / ||g||^2``: the fraction of the
    squared norm of the full-batch gradient ``g`` in the span of the top-``k`` Hessian
    eigenvectors (Gur-Ari, Roberts & Dyer 2018, Sec. 2; see ``curvature.subspace``)."""

    descriptions: ClassVar = {
        "top_subspace_gradient_fraction": (
            "gradient fraction in the top Hessian subspace",
            f"||V_kᵀ g||² / ||g||², g the gradient of train_loss and V_k the eigenvectors of "
            f"{_TOP} (Gur-Ari et al. 2018)"),
    }

    def measure(self, ctx, state, vectors):
        g = ravel_pytree(ctx.train_loss_and_grad[1])[0]
        return {"top_subspace_gradient_fraction":
                jnp.sum((vectors @ g) ** 2) / jnp.sum(g**2)}


@dataclasses.dataclass(frozen=True)
class TopSubspaceOverlap(_TopSubspace):
    """``top_subspace_overlap = ||V_prev^T V_now||_F^2 / k``: the overlap of the top-``k``
    Hessian eigenspaces at this log point and at the observable's previous one (1: the
    same subspace; NaN at the first log point), as Gur-Ari, Roberts & Dyer (2018, Sec. 2)
    track the top subspace; see ``curvature.subspace``."""

    descriptions: ClassVar = {
        "top_subspace_overlap": (
            "overlap of consecutive top Hessian subspaces",
            f"||V_prevᵀ V_now||_F² / k, V the eigenvectors of {_TOP}, at this log point and "
            "at the previous one the observable measured (NaN at the first); 1 for the same "
            "subspace, about k/P for unrelated ones"),
    }

    def measure(self, ctx, state, vectors):
        previous, valid = state
        overlap = jnp.sum((previous @ vectors.T) ** 2) / vectors.shape[0]
        return {"top_subspace_overlap": jnp.where(valid, overlap, jnp.nan)}
