r"""Extreme eigenpairs of a symmetric operator by Lanczos; power iteration for comparison.

``tridiagonalize(matvec, v0, order)`` runs ``order`` steps of the Lanczos recurrence
(Lanczos 1950; Golub & Van Loan, *Matrix Computations*, 4th ed., Alg. 10.1.1)

    w = A q_j - beta_{j-1} q_{j-1},  alpha_j = q_j . w,  w -= alpha_j q_j,
    beta_j = ||w||,  q_{j+1} = w / beta_j,

on flat vectors, with full reorthogonalisation of ``w`` against all previous Lanczos
vectors, done twice ("twice is enough": Giraud, Langou & Rozloznik 2005) and vectorised as
``w -= Q^T (Q w)`` (Golub & Van Loan, Sec. 10.3.1). Then ``Q^T A Q = T``, the tridiagonal
matrix of ``alpha`` (diagonal) and ``beta`` (off-diagonal). When ``beta_j`` falls to
rounding level the Krylov space is invariant; the recurrence restarts from a random vector
orthogonal to ``Q`` and records ``beta_j = 0``, so ``T`` becomes block-diagonal and
``order = P`` (the dimension) reproduces the whole spectrum even with repeated eigenvalues.

The small eigenproblem ``T = Y diag(theta) Y^T`` is solved in float64 when JAX has 64-bit
enabled (``jax.enable_x64``); otherwise in the widest float available, float32 (inside a
compiled training loop there is no float64 without x64, and a host call would leave the
device). Ritz pairs are ``(theta_i, x_i = Q y_i)`` and their residual is
``||A x_i - theta_i x_i|| = beta_m |y_{m,i}|`` (Paige 1971; Golub & Van Loan Eq. 10.1.10),
reported per pair without extra products.

Cost: one product per step, and ``O(order * P)`` memory for the basis (a float32 MLP
of a million parameters with ``order = 20`` holds 80 MB).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from dynamics import runtime

WHICH = ("largest", "smallest")


class Tridiagonal(NamedTuple):
    """``alphas (m,)``, ``betas (m,)`` (``betas[:-1]`` the off-diagonal of ``T``,
    ``betas[-1]`` the norm of the final residual) and ``basis (m, P)``, the Lanczos
    vectors as rows."""

    alphas: jax.Array
    betas: jax.Array
    basis: jax.Array


class Eigen(NamedTuple):
    """Ritz pairs: ``values (k,)``, ``vectors`` (a pytree like the parameters, leading
    axis ``k``, unit norm), ``residuals (k,) = ||A x - theta x||`` and
    ``relative_residuals = residuals / |values|``."""

    values: jax.Array
    vectors: Any
    residuals: jax.Array
    relative_residuals: jax.Array


def small_dtype(dtype):
    """float64 when 64-bit is enabled, else ``dtype`` (the tridiagonal's precision)."""
    wide = jax.dtypes.canonicalize_dtype(jnp.float64)
    return jnp.promote_types(dtype, wide)


def flat_operator(matvec: Callable, like):
    """``(matvec on flat vectors, flat like, unravel)`` for a pytree operator."""
    flat, unravel = ravel_pytree(like)

    def flat_matvec(x):
        return ravel_pytree(matvec(unravel(x.astype(flat.dtype))))[0].astype(flat.dtype)

    return flat_matvec, flat, unravel


def _orthogonalise(w, basis):
    for _ in range(2):  # twice is enough
        w = w - basis.T @ (basis @ w)
    return w


def tridiagonalize(flat_matvec: Callable, v0, order: int, key=None) -> Tridiagonal:
    """``order`` Lanczos steps from ``v0`` (flat, nonzero) with full reorthogonalisation;
    ``key`` draws restart vectors on breakdown (default: a fixed key)."""
    n = v0.shape[0]
    if not isinstance(order, int) or not 1 <= order <= n:
        raise ValueError(f"order must be an int in [1, {n}] (the dimension), got {order!r}")
    dtype = v0.dtype
    tdt = small_dtype(dtype)
    key = jax.random.PRNGKey(0) if key is None else key
    eps = jnp.finfo(dtype).eps
    basis = jnp.zeros((order, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))

    def step(j, carry):
        basis, alphas, betas, scale = carry
        q = basis[j]
        w = flat_matvec(q)
        alpha = jnp.dot(q.astype(tdt), w.astype(tdt))
        beta_prev = jnp.where(j > 0, betas[j - 1], 0.0)
        w = w - alpha.astype(dtype) * q - beta_prev.astype(dtype) * basis[j - 1]
        w = _orthogonalise(w, basis)
        beta = jnp.linalg.norm(w.astype(tdt))
        scale = jnp.maximum(scale, jnp.abs(alpha) + beta + beta_prev)
        last = j == order - 1
        broke = (beta <= 100 * eps * scale) & ~last
        fresh = _orthogonalise(jax.random.normal(jax.random.fold_in(key, j), (n,), dtype), basis)
        nxt = jnp.where(broke, fresh / jnp.linalg.norm(fresh), w / jnp.where(beta > 0, beta, 1).astype(dtype))
        basis = jnp.where(last, basis, basis.at[jnp.minimum(j + 1, order - 1)].set(nxt))
        alphas = alphas.at[j].set(alpha)
        betas = betas.at[j].set(jnp.where(broke, 0.0, beta))
        return basis, alphas, betas, scale

    init = (basis, jnp.zeros(order, tdt), jnp.zeros(order, tdt), jnp.zeros((), tdt))
    basis, alphas, betas, _ = jax.lax.fori_loop(0, order, step, init)
    return Tridiagonal(alphas, betas, basis)


def tridiagonal_matrix(alphas, betas):
    """The dense symmetric tridiagonal matrix with diagonal ``alphas`` and off-diagonal
    ``betas[:len(alphas) - 1]``."""
    off = betas[: alphas.shape[0] - 1]
    return jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)


def ritz(tri: Tridiagonal):
    """``(theta (m,) ascending, Y (m, m), residuals (m,))`` of the Lanczos tridiagonal."""
    theta, y = runtime.unbatched_lapack(jnp.linalg.eigh)(
        tridiagonal_matrix(tri.alphas, tri.betas))
    return theta, y, jnp.abs(tri.betas[-1] * y[-1, :])


def eigenpairs(
    matvec: Callable, like, key, *, k: int = 1, order: int = 20, which: str = "largest",
    start=None,
) -> Eigen:
    """The ``k`` largest (descending) or smallest (ascending) eigenvalues of the symmetric
    operator ``matvec`` on pytrees shaped like ``like``, from ``order`` Lanczos steps
    started at a Gaussian vector drawn from ``key``, or at ``start`` (a flat nonzero
    vector of the ``P`` parameters, e.g. built from previous Ritz vectors to warm-start)
    when given (``order`` is capped at the dimension ``P``; ``order = P`` gives the exact
    spectrum up to rounding)."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {list(WHICH)}, got {which!r}")
    flat_matvec, flat, unravel = flat_operator(matvec, like)
    n = flat.shape[0]
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an int >= 1, got {order!r}")
    order = min(order, n)
    if not isinstance(k, int) or not 1 <= k <= order:
        raise ValueError(f"k must be an int in [1, order={order}], got {k!r}")
    k_start, k_restart = jax.random.split(key)
    v0 = jax.random.normal(k_start, (n,), flat.dtype) if start is None else start
    tri = tridiagonalize(flat_matvec, v0.astype(flat.dtype), order, k_restart)
    theta, y, res = ritz(tri)
    idx = jnp.arange(order - 1, order - 1 - k, -1) if which == "largest" else jnp.arange(k)
    values, res = theta[idx], res[idx]
    vectors = (tri.basis.T @ y[:, idx].astype(flat.dtype)).T
    return Eigen(
        values=values,
        vectors=jax.vmap(unravel)(vectors),
        residuals=res,
        relative_residuals=res / jnp.abs(values),
    )


def power_iteration(matvec: Callable, like, key, *, iterations: int = 20):
    """Power iteration (von Mises 1929; PyHessian's ``eigenvalues``): ``v <- A v / ||A v||``
    from a Gaussian vector. Returns ``(value, vector, history)``: the Rayleigh quotient
    ``v^T A v`` after the last product, the unit vector (a pytree), and the quotient after
    each of the ``iterations`` products. It converges to the eigenvalue of largest
    *magnitude* at rate ``|lambda_2 / lambda_1|`` per product."""
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    flat_matvec, flat, unravel = flat_operator(matvec, like)
    v = jax.random.normal(key, flat.shape, flat.dtype)
    v = v / jnp.linalg.norm(v)

    def step(v, _):
        w = flat_matvec(v)
        quotient = jnp.dot(v, w)
        return w / jnp.linalg.norm(w), quotient

    v, history = jax.lax.scan(step, v, None, length=iterations)
    return history[-1], unravel(v), history
