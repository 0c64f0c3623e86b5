r"""Random-feature ridge regression on a task of known eigenstructure, solved exactly in JAX.

The linear-Gaussian model of Simon, Karkada, Ghosh & Belkin (2024, "More is Better in
Modern Machine Learning", ICLR 2024, arXiv:2311.14646; their synthetic experiments of
Sec. 4 and App. on Gaussian data), whose kernel eigensystem is exact: inputs ``x ~ N(0,
I_M)`` (so ``phi_i(x) = x_i`` are orthonormal), target ``y = v . x + sigma xi``, and ``k``
random features ``g_j(x) = w_j . Lambda^{1/2} x / sqrt(k)`` with ``w_j ~ N(0, I_M)``, whose
kernel ``\hat K(x, x') = sum_j g_j(x) g_j(x')`` has mean ``K(x, x') = sum_i lambda_i x_i
x'_i``: eigenvalues ``lambda_i`` and target coefficients ``v_i``, the inputs of
``kernels.random_feature_ridge``.

Ridge regression on the ``n x k`` feature matrix ``G`` with ridge ``delta`` (the kernel
form ``f(x) = \hat K(x, X) (\hat K(X, X) + delta I)^{-1} y``, the convention of the
theory) has readout ``a = G^T (G G^T + delta I)^{-1} y = (G^T G + delta I)^{-1} G^T
y`` (the push-through identity), solved by a Cholesky factorisation of the smaller of
the two ridged Gram matrices, one per ridge (``delta > 0``: on CPU a batch of Cholesky
solves costs far less than one symmetric eigendecomposition in JAX, and the ridges used
here keep the condition number below ``1e8``, so float64 solves to ``~1e-8``
relative). The predictor is linear, ``f(x) = beta . x`` with ``beta = Lambda^{1/2} W^T a
/ sqrt(k)``, so its test risk against noisy labels is exactly

.. math::  E_{te} = \|\beta - v\|^2 + \sigma^2,

no test sample needed. Everything runs in float64 (``jax.enable_x64`` for the call only).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.scipy.linalg  # noqa: F401  (cho_factor, cho_solve)
import numpy as np

from dynamics.checks import check_float, check_int


@functools.partial(jax.jit, static_argnames=("pairs",))
def _risks(key, sqrt_lam, v, ridges, noise, pairs):
    """Test and train risks of one seed at every pair and ridge (``rf_ridge_risks``)."""
    n_max = max(n for n, _ in pairs)
    k_max = max(k for _, k in pairs)
    m = sqrt_lam.shape[0]
    kx, kw, kn = jax.random.split(key, 3)
    x = jax.random.normal(kx, (n_max, m), jnp.float64)
    w = jax.random.normal(kw, (k_max, m), jnp.float64)
    y_all = x @ v + jnp.sqrt(noise) * jax.random.normal(kn, (n_max,), jnp.float64)
    g_all = (x * sqrt_lam) @ w.T                                  # (n_max, k_max)
    tests, trains = [], []
    for n, k in pairs:
        g, y = g_all[:n, :k] / jnp.sqrt(k), y_all[:n]
        eye = jnp.eye(min(n, k), dtype=jnp.float64)
        if n <= k:   # a = G^T (G G^T + delta I)^{-1} y
            gram, rhs = g @ g.T, y
        else:        # a = (G^T G + delta I)^{-1} G^T y
            gram, rhs = g.T @ g, g.T @ y
        factor = jax.scipy.linalg.cho_factor(gram[None] + ridges[:, None, None] * eye)
        solved = jax.scipy.linalg.cho_solve(
            factor, jnp.broadcast_to(rhs[:, None], (ridges.size, rhs.size, 1)))[..., 0].T
        a = g.T @ solved if n <= k else solved                    # (k, R)
        beta = sqrt_lam[:, None] * (w[:k].T @ a) / jnp.sqrt(k)    # (M, R)
        tests.append(jnp.sum((beta - v[:, None]) ** 2, axis=0) + noise)
        trains.append(jnp.mean((g @ a - y[:, None]) ** 2, axis=0))
    return jnp.stack(tests), jnp.stack(trains)


def rf_ridge_risks(eigenvalues, coefficients, pairs, ridges, seeds, noise=0.0):
    """``(test, train)``, each ``(len(seeds), len(pairs), len(ridges))``: the exact test
    risk ``|beta - v|^2 + sigma^2`` (module doc) and the training MSE of random-feature
    ridge regression at every ``(n, k)`` of ``pairs`` (samples, features) and every ridge,
    float64. Each seed and pair draws its own samples, label noise and features (key
    ``fold_in(PRNGKey(seed), index of the pair)``), so the points of a curve are
    independent. Seeds run one after the other through one compiled program (the draws of every
    seed at once would not fit in memory at the paper's sizes)."""
    lam = np.asarray(eigenvalues, np.float64)
    v = np.asarray(coefficients, np.float64)
    if lam.ndim != 1 or lam.size == 0 or np.any(~np.isfinite(lam)) or np.any(lam <= 0):
        raise ValueError(f"eigenvalues must be a non-empty 1-D array of finite numbers > 0, "
                         f"got shape {lam.shape}")
    if v.shape != lam.shape or np.any(~np.isfinite(v)):
        raise ValueError(f"coefficients must be finite with shape {lam.shape}, got {v.shape}")
    try:
        pairs = tuple((check_int("n", n), check_int("k", k)) for n, k in pairs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"pairs must be a list of (n, k) pairs of positive ints, got "
                         f"{pairs!r} ({err})") from None
    if not pairs:
        raise ValueError("pairs must hold at least one (n, k), got []")
    noise = check_float("noise", noise, 0.0)
    r = np.asarray(ridges, np.float64).reshape(-1)
    if r.size == 0 or np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"ridges must be a non-empty list of finite numbers > 0, got {ridges!r}")
    seeds = [check_int("seed", s, minimum=0) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one seed, got []")
    with jax.enable_x64(True):
        args = (jnp.sqrt(jnp.asarray(lam)), jnp.asarray(v), jnp.asarray(r), noise, pairs)
        # one compiled program per pair: several Cholesky batches of one shape in one
        # program stalled the XLA CPU compiler (observed with jax 0.10.2)
        runs = [[_risks(jax.random.fold_in(jax.random.PRNGKey(s), i), *args[:-1], (pair,))
                 for i, pair in enumerate(pairs)] for s in seeds]
        runs = [(jnp.concatenate([t for t, _ in r]), jnp.concatenate([t for _, t in r]))
                for r in runs]
        return (np.stack([np.asarray(t) for t, _ in runs]),
                np.stack([np.asarray(t) for _, t in runs]))
