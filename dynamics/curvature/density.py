r"""Spectral density by stochastic Lanczos quadrature (SLQ).

The spectral density of a symmetric ``P x P`` operator ``A`` with eigenvalues
``lambda_k`` is ``phi(t) = (1/P) sum_k delta(t - lambda_k)``. For a random unit vector
``v`` (Gaussian, normalised), ``v^T delta(t - A) v = sum_k (v . u_k)^2 delta(t - lambda_k)``
has expectation ``phi(t)``, and ``m`` Lanczos steps from ``v`` give the Gauss quadrature
of it: nodes ``theta_j`` (the Ritz values) and weights ``tau_j = (e_1^T y_j)^2`` (first
components of the eigenvectors of ``T``), exact for polynomials of degree ``2m - 1``
(Golub & Meurant 2010, Thm 6.2; Lin, Saad & Yang 2016, "Approximating spectral densities
of large matrices", Sec. 3.2; Ghorbani, Krishnan & Xiao 2019, Eq. 4-6). Averaging over
``probes`` vectors and broadening each node with a Gaussian,

    phi_sigma(t) = (1/probes) sum_v sum_j tau_j^(v) N(t; theta_j^(v), sigma^2),
    N(t; mu, sigma^2) = exp(-(t - mu)^2 / (2 sigma^2)) / (sigma sqrt(2 pi)),

a density that integrates to 1 over the real line (``sum_j tau_j = 1``) and whose first
moment is ``mean_v v^T A v`` (the ``(1,1)`` entry of ``T``), an unbiased estimate of
``tr(A) / P``.

**sigma is a standard deviation** (in the units of the eigenvalues). Some reference
implementations (PyHessian's ``density_generate``, google/spectral-density's
``eigv_to_density``) take the *variance* under a parameter called sigma (squared):
``sigma_here = sqrt(their value)``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from dynamics.curvature.lanczos import flat_operator, ritz, tridiagonalize


class Quadrature(NamedTuple):
    """``nodes (probes, m)`` and ``weights (probes, m)`` (each row sums to 1)."""

    nodes: jax.Array
    weights: jax.Array


def slq(matvec: Callable, like, key, *, probes: int = 4, order: int = 30) -> Quadrature:
    """Gauss quadrature nodes and weights of the spectral density from ``probes`` random
    starts of ``order`` Lanczos steps each (``order`` capped at the dimension)."""
    for name, value in (("probes", probes), ("order", order)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    flat_matvec, flat, _ = flat_operator(matvec, like)
    n = flat.shape[0]
    order = min(order, n)

    def one(k):
        k_start, k_restart = jax.random.split(k)
        v0 = jax.random.normal(k_start, (n,), flat.dtype)
        theta, y, _ = ritz(tridiagonalize(flat_matvec, v0, order, k_restart))
        return theta, y[0, :] ** 2

    nodes, weights = jax.lax.map(one, jax.random.split(key, probes))
    return Quadrature(nodes, weights)


def broadened_density(quadrature: Quadrature, grid, sigma):
    """``phi_sigma`` on ``grid`` (see the module doc; ``sigma`` a standard deviation)."""
    grid = jnp.asarray(grid, quadrature.nodes.dtype)
    z = (grid[:, None, None] - quadrature.nodes[None]) / sigma
    kernel = jnp.exp(-0.5 * z**2) / (sigma * jnp.sqrt(2 * jnp.pi))
    return jnp.sum(kernel * quadrature.weights[None], axis=(1, 2)) / quadrature.nodes.shape[0]


def spectral_density(
    matvec: Callable, like, key, grid, sigma, *, probes: int = 4, order: int = 30
):
    """``phi_sigma`` on ``grid`` by SLQ: ``broadened_density(slq(...), grid, sigma)``."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (a standard deviation), got {sigma!r}")
    return broadened_density(slq(matvec, like, key, probes=probes, order=order), grid, sigma)
