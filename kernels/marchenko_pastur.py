r"""The Marchenko-Pastur law: the spectrum of a sample covariance, and averages over it.

Marchenko & Pastur (1967), "Distribution of eigenvalues for some sets of random
matrices" (Math. USSR-Sbornik 1, 457). For ``X`` a ``P x D`` matrix of i.i.d. entries of
mean 0 and variance 1, the eigenvalues of the sample covariance ``S = X^T X / P`` (``D x
D``) have, as ``P, D -> infinity`` at fixed load ``alpha = P / D`` (ratio ``c = D / P =
1 / alpha``), the density

.. math::  \rho(\lambda) = \Big(1 - \alpha\Big)_+ \delta(\lambda)
           + \frac{\alpha}{2\pi\lambda}\sqrt{(\lambda_+ - \lambda)(\lambda - \lambda_-)}\,
           \mathbf 1_{[\lambda_-, \lambda_+]}(\lambda),
           \qquad \lambda_\pm = (1 \pm 1/\sqrt\alpha)^2,

the form used by Advani, Saxe & Sompolinsky (2020, "High-dimensional dynamics of
generalization error in neural networks", Neural Networks 132, Sec. 2, their
Marchenko-Pastur density with ``alpha = P / N``), whose inputs have variance ``1/N`` where
ours have variance 1 and whose ``X X^T`` carries no ``1/P``: their eigenvalues are ours
times ``alpha``. For ``alpha < 1`` the atom of weight ``1 - alpha`` at ``lambda = 0`` is
the null space of ``X`` (``D - P`` directions the data never see). The moments: mean 1,
variance ``1 / alpha`` (``E[lambda^2] = 1 + 1/alpha``).

``expectation(f, alpha)`` is ``int rho f`` by the midpoint rule in the angle ``theta``
of ``lambda = (lambda_+ + lambda_-)/2 - (lambda_+ - lambda_-)/2 cos theta``, which turns
the square-root edges into ``sin^2 theta``: the integrand becomes a smooth, even,
``2 pi``-periodic function of ``theta``, for which the midpoint rule converges faster than
any power of the number of nodes (Trefethen & Weideman 2014, "The exponentially
convergent trapezoidal rule", SIAM Review 56, Sec. 3); the atom at 0 is added as
``(1 - alpha)_+ f(0)``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dynamics.checks import check_float, check_int


def edges(alpha: float) -> tuple[float, float]:
    """``(lambda_-, lambda_+) = ((1 - 1/sqrt(alpha))^2, (1 + 1/sqrt(alpha))^2)``, the edges
    of the continuous part (module doc)."""
    alpha = check_float("alpha", alpha, 0.0, low_open=True)
    root = 1.0 / np.sqrt(alpha)
    return (1.0 - root) ** 2, (1.0 + root) ** 2


def atom(alpha: float) -> float:
    """``(1 - alpha)_+``: the weight of the eigenvalue 0 (the null space of the data)."""
    alpha = check_float("alpha", alpha, 0.0, low_open=True)
    return max(1.0 - alpha, 0.0)


def density(lam, alpha: float) -> np.ndarray:
    """The continuous part of the Marchenko-Pastur density at ``lam`` (module doc; zero
    outside ``[lambda_-, lambda_+]``; the atom at 0 is :func:`atom`)."""
    lo, hi = edges(alpha)
    lam = np.asarray(lam, np.float64)
    inside = (lam > lo) & (lam < hi) & (lam > 0)
    root = np.sqrt(np.clip((hi - lam) * (lam - lo), 0.0, None))
    return np.where(inside, alpha * root / (2 * np.pi * np.where(inside, lam, 1.0)), 0.0)


def quadrature(alpha: float, nodes: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """``(lambda_j, w_j)`` with ``sum_j w_j f(lambda_j) ~ int rho_cont f`` over the
    continuous part (midpoint rule in the angle, module doc); ``sum_j w_j -> min(alpha,
    1)``."""
    nodes = check_int("nodes", nodes, minimum=2)
    lo, hi = edges(alpha)
    theta = (np.arange(nodes) + 0.5) * np.pi / nodes
    half = 0.5 * (hi - lo)
    lam = 0.5 * (hi + lo) - half * np.cos(theta)
    # d lambda = half sin(theta) d theta and sqrt((hi - lam)(lam - lo)) = half sin(theta)
    weights = (np.pi / nodes) * alpha * (half * np.sin(theta)) ** 2 / (2 * np.pi * lam)
    return lam, weights


def expectation(f: Callable[[np.ndarray], np.ndarray], alpha: float, nodes: int = 2000,
                at_zero=None):
    """``int rho(lambda) f(lambda) d lambda``: the continuous part by :func:`quadrature`
    plus the atom ``(1 - alpha)_+`` times ``f(0)`` (``at_zero``, when given, replaces
    ``f(0)``: the limit of an ``f`` that cannot be evaluated at 0). ``f`` maps an array of
    eigenvalues (last axis) to values broadcasting against it; the sum is over that axis."""
    lam, weights = quadrature(alpha, nodes)
    total = np.sum(np.asarray(f(lam)) * weights, axis=-1)
    if atom(alpha) > 0:
        zero = f(np.zeros(1))[..., 0] if at_zero is None else at_zero
        total = total + atom(alpha) * np.asarray(zero)
    return total
