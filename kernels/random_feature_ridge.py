r"""Closed-form (omniscient) test-risk estimates of kernel and random-feature ridge regression.

Simon, Karkada, Ghosh & Belkin (2024), "More is Better in Modern Machine Learning: when
Infinite Overparameterization is Optimal and Overfitting is Obligatory" (ICLR 2024;
arXiv:2311.14646). A task is given by the eigenvalues ``lambda_i`` of a kernel ``K(x, x')
= sum_i lambda_i phi_i(x) phi_i(x')`` (orthonormal ``phi_i`` under the input measure), the
eigencoefficients ``v_i`` of the target ``f*(x) = sum_i v_i phi_i(x)`` and the variance
``sigma^2`` of the label noise. The learner fits ``n`` samples with ridge ``delta`` (no
``1/n``: ``f = K(x, X) (K(X, X) + delta I)^{-1} y``).

Kernel ridge regression (the paper's Sec. 3, the KRR eigenframework it restates from
Simon et al. 2023, "The eigenlearning framework", TMLR, eqs. 6-9): the effective
regularization ``kappa >= 0`` solves

.. math::  \sum_i \frac{\lambda_i}{\lambda_i + \kappa} + \frac{\delta}{\kappa} = n,   (K1)

the eigenmode learnabilities are ``L_i = lambda_i / (lambda_i + kappa)`` and the test risk
(the MSE against noisy test labels) is

.. math::  E_{te} = \mathcal E_0 \Big(\sum_i (1 - L_i)^2 v_i^2 + \sigma^2\Big),
           \qquad \mathcal E_0 = \frac{n}{n - \sum_i L_i^2}.                          (K2)

Random-feature ridge regression (the paper's Sec. 4.1, its "RF eigenframework"): the
kernel is replaced by ``k`` random features ``g_j`` with ``E_g[g_j(x) g_j(x')] = K(x,
x') `` and ``\hat K(x, x') = (1/k) sum_j g_j(x) g_j(x')``. Two constants ``kappa, gamma
>= 0`` solve the coupled equations

.. math::  n = \sum_i \frac{\lambda_i}{\lambda_i + \gamma} + \frac{\delta}{\kappa},
           \qquad k = \sum_i \frac{\lambda_i}{\lambda_i + \gamma}
                    + \frac{k\,\kappa}{\gamma}.                                       (R1)

With ``L_i = lambda_i / (lambda_i + gamma)``, ``z = sum_i L_i``, ``q = sum_i L_i^2`` the
estimate is

.. math::  E_{te} = \mathcal E_0 \Big(\sum_i \Big[\frac{\gamma}{\lambda_i + \gamma}
           - \frac{k}{k - q}\,\frac{\kappa\,\lambda_i}{(\lambda_i + \gamma)^2}\Big] v_i^2
           + \sigma^2\Big), \qquad
           \mathcal E_0 = \Big(1 - \frac{q (k - 2z) + z^2}{n (k - q)}\Big)^{-1}.      (R2)

As ``k -> infinity`` the second equation of (R1) gives ``kappa -> gamma``, the bracket of
(R2) becomes ``(1 - L_i)^2`` and ``E_0 -> n / (n - q)``: (R1)-(R2) reduce to (K1)-(K2),
the paper's statement that infinitely many features give kernel regression. As ``delta
-> infinity``, ``gamma -> infinity``, ``L_i -> 0`` and both give the null risk ``sum_i
v_i^2 + sigma^2``. The paper's Theorem 1 (from (R1)-(R2)) is that at the optimal ridge
the estimate is non-increasing in ``n`` and in ``k``.

Solving (R1). The second equation gives ``kappa = gamma (1 - z(gamma) / k)`` and then the
first ``delta = h(gamma) := gamma (1 - z(gamma)/k) (n - z(gamma))``. ``z`` falls from
``M`` (the number of modes) to 0 as ``gamma`` grows, so on ``gamma > gamma_0`` (where
``z(gamma_0) = min(n, k)``, or ``gamma_0 = 0`` when ``min(n, k) >= M``) both factors are
positive and rising and ``h`` rises strictly from 0 to infinity: one root per ridge,
found by bisection in ``log gamma`` (vectorised over ridges; 200 halvings of a bracket
of at most ``e^{200}`` leave float64 rounding). The ridgeless limit ``delta -> 0`` is
``gamma = gamma_0``. (K1) is the same with ``k = infinity``.
"""

from __future__ import annotations

import numpy as np

from dynamics.checks import check_float, check_int

BISECTIONS = 200


def _spectrum(eigenvalues, coefficients):
    lam = np.asarray(eigenvalues, np.float64)
    v = np.asarray(coefficients, np.float64)
    if lam.ndim != 1 or lam.size == 0 or not np.all(np.isfinite(lam)) or np.any(lam <= 0):
        raise ValueError("eigenvalues must be a non-empty 1-D array of finite numbers > 0, "
                         f"got shape {lam.shape}")
    if v.shape != lam.shape or not np.all(np.isfinite(v)):
        raise ValueError(f"coefficients must be finite with the shape of eigenvalues "
                         f"{lam.shape}, got shape {v.shape}")
    return lam, v


def _ridges(ridge):
    delta = np.asarray(ridge, np.float64)
    if not np.all(np.isfinite(delta)) or np.any(delta < 0):
        raise ValueError(f"ridge must be finite and >= 0, got {ridge!r}")
    return delta


def _z(lam, gamma):
    """``z(gamma) = sum_i lambda_i / (lambda_i + gamma)`` for an array of ``gamma``."""
    return np.sum(lam / (lam + gamma[..., None]), axis=-1)


def _solve_z(lam, target):
    """``gamma_0`` with ``z(gamma_0) = target`` (0 when ``target >= M``), by bisection in
    ``log gamma``."""
    if target >= lam.size:
        return 0.0
    # z(gamma) <= sum(lam)/gamma and z(gamma) >= M lam_min / (lam_min + gamma)
    hi = np.log(np.sum(lam) / target) + 1.0
    lo = np.log(lam.min() * (lam.size - target) / target) - 1.0
    lo, hi = np.array(lo), np.array(hi)
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        above = _z(lam, np.exp(mid)) > target      # gamma too small
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return float(np.exp(0.5 * (lo + hi)))


def solve_gamma(eigenvalues, n, k, ridge):
    """``(kappa, gamma)`` of (R1) for every ridge (module doc); ``k = np.inf`` solves (K1)
    (then ``kappa = gamma``). ``ridge`` may be an array (the result has its shape)."""
    lam, _ = _spectrum(eigenvalues, np.zeros_like(np.asarray(eigenvalues, np.float64)))
    n = float(check_int("n", n))
    k = np.inf if k == np.inf else float(check_int("k", k))
    delta = _ridges(ridge)
    gamma0 = _solve_z(lam, min(n, k))

    def h(gamma):
        z = _z(lam, gamma)
        return gamma * (1.0 - z / k) * (n - z)

    # h(gamma) <= gamma n, so gamma >= delta / n; grow the upper end until h > delta
    flat = delta.reshape(-1)
    hi = np.log(np.maximum(flat / n, gamma0) + np.sum(lam)) + 1.0
    for _ in range(200):
        short = h(np.exp(hi)) <= flat
        if not short.any():
            break
        hi = np.where(short, hi + 2.0, hi)
    floor = gamma0 if gamma0 > 0 else lam.min() * 1e-30
    lo = np.full_like(hi, np.log(floor))
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        below = h(np.exp(mid)) < flat
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    gamma = np.where(flat > 0, np.exp(0.5 * (lo + hi)), gamma0)
    z = _z(lam, gamma)
    kappa = gamma * (1.0 - z / k)
    return kappa.reshape(delta.shape), gamma.reshape(delta.shape)


def rf_risk(eigenvalues, coefficients, n, k, ridge, noise=0.0):
    """The random-feature ridge regression test-risk estimate (R2) with ``n`` samples,
    ``k`` features (``np.inf``: kernel regression, (K2)) and ``ridge`` (scalar or array),
    label-noise variance ``noise``. Returns an array of ``ridge``'s shape."""
    lam, v = _spectrum(eigenvalues, coefficients)
    noise = check_float("noise", noise, 0.0)
    kappa, gamma = solve_gamma(lam, n, k, ridge)
    g = gamma.reshape(-1)[:, None]
    kap = kappa.reshape(-1)[:, None]
    learn = lam / (lam + g)
    z, q = learn.sum(-1), (learn**2).sum(-1)
    if k == np.inf:
        bias = np.sum((1 - learn) ** 2 * v**2, axis=-1)
        e0 = n / (n - q)
    else:
        ratio = k / (k - q)
        bias = np.sum((g / (lam + g) - ratio[:, None] * kap * lam / (lam + g) ** 2) * v**2,
                      axis=-1)
        e0 = 1.0 / (1.0 - (q * (k - 2 * z) + z**2) / (n * (k - q)))
    return (e0 * (bias + noise)).reshape(np.shape(ridge))


def krr_risk(eigenvalues, coefficients, n, ridge, noise=0.0):
    """The kernel ridge regression estimate (K1)-(K2): :func:`rf_risk` with ``k =
    infinity``."""
    return rf_risk(eigenvalues, coefficients, n, np.inf, ridge, noise)


def null_risk(coefficients, noise=0.0):
    """``sum_i v_i^2 + sigma^2``: the risk of the zero predictor (the ``ridge -> infinity``
    limit of (K2) and (R2))."""
    return float(np.sum(np.asarray(coefficients, np.float64) ** 2) + noise)


def powerlaw_task(modes, alpha, beta):
    """``(lambda_i, v_i) = (i^-alpha, i^(-beta/2) / norm)``, ``i = 1..modes``: the paper's
    powerlaw eigenstructure (its Sec. 5: ``lambda_i ~ i^-alpha``, ``v_i^2 ~ i^-beta``),
    the target normalised to ``sum_i v_i^2 = 1``."""
    modes = check_int("modes", modes)
    alpha = check_float("alpha", alpha, 0.0, low_open=True)
    beta = check_float("beta", beta, 0.0, low_open=True)
    i = np.arange(1, modes + 1, dtype=np.float64)
    v = i ** (-beta / 2)
    return i**-alpha, v / np.linalg.norm(v)
