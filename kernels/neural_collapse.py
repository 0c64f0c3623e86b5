r"""Neural collapse in deep linear unconstrained-features models: the global minimiser in
closed form.

Dang, Tran, Osher, Tran-The, Ho & Nguyen (2023), "Neural Collapse in Deep Linear
Networks: From Balanced to Imbalanced Data" (ICML 2023; arXiv:2301.00437). ``N``
examples in ``K`` classes (``n_k`` in class ``k``, one-hot targets ``Y``, ``K x N``),
free features ``H`` (``d x N``), ``M`` linear layers ``W_1`` (``d x d``), ...,
``W_M`` (``K x d``) and, optionally, a last-layer bias ``b``; the paper's objective
(its Sec. 3 for balanced data, Sec. 4 for imbalanced data, MSE loss):

.. math::  F = \frac{1}{2N}\|W_M\cdots W_1 H + b\,1_N^T - Y\|_F^2
             + \sum_{m=1}^M \frac{\lambda_{W_m}}{2}\|W_m\|_F^2
             + \frac{\lambda_H}{2}\|H\|_F^2 + \frac{\lambda_b}{2}\|b\|^2 .

The paper's results (global minimisers, for ``d >= K``): within-class collapse (NC1,
``H = Hbar Y`` with ``Hbar`` the class means); bias-free and balanced, the classifier
``W = W_M ... W_1`` has ``W W^T`` proportional to ``I_K`` (an orthogonal frame), with an
unregularised last-layer bias (``lambda_b = 0``) proportional to the simplex ETF ``I_K -
1 1^T / K`` (Sec. 3, the bias-free and the last-layer-bias theorems); bias-free and
imbalanced, ``W W^T = diag(s_k^{2M})`` with ``s_k`` from the scalar equation below (Sec. 4,
the theorem for ``M`` layers: the "general orthogonal frame", whose lengths depend on
``n_k``).

Derivation (the reduction the paper's proofs make, written for any target, which this
module uses). With ``lambda_b = 0`` the bias takes the mean residual, ``H``'s mean is
penalised and does not fit anything, so the target is the centred ``Y_c = Y (I - 1
1^T/N)``; bias-free, ``Y_c = Y``. Write ``Y_c = sum_j sigma_j u_j v_j^T`` (SVD). The
minimiser is balanced across layers, ``lambda_{W_{m+1}} W_{m+1}^T W_{m+1} =
lambda_{W_m} W_m W_m^T``, and aligned with the SVD: mode ``j`` has, in layer ``m``,
the singular value ``a_{mj}`` with ``lambda_{W_m} a_{mj}^2 = c_j`` equal in every layer,
so the product ``p_j = prod_m a_{mj} = sbar_j^M`` with ``sbar_j^2 = c_j / lambdabar``,
``lambdabar = (prod_m lambda_{W_m})^{1/M}`` (the geometric mean: unequal decays act as
their geometric mean; with equal decays ``sbar_j = s_j`` is every layer's singular value,
the paper's ``s_k``). The features of mode ``j`` have norm ``eta_j`` with, minimising the
ridge problem in ``eta`` at fixed ``p``,

    eta_j = p_j sigma_j / (p_j^2 + N lambda_H),                                          (1)

and the mode's objective becomes ``g(s) = sigma^2 lambda_H / (2 (s^{2M} + N lambda_H)) +
M lambdabar s^2 / 2``. ``g'(s) = 0`` at ``s > 0`` reads, with ``s^{2M} = N lambda_H
x^M``,

    M x^{M-1} / (x^M + 1)^2 = b / sigma^2,   b = M N^{(M+1)/M} lambdabar lambda_H^{1/M},  (2)

the paper's scalar equation (Sec. 4; for one-hot targets ``sigma_k^2 = n_k``). For ``M =
1`` its left side decreases from 1 and (2) has a root iff ``b < sigma^2``; for ``M >= 2``
it rises from 0 to its maximum at ``x^M = (M - 1)/(M + 1)`` and falls: the larger root
is a local minimum of ``g`` (the smaller a local maximum), and ``s = 0`` is always a
local minimum. ``mode_singular_values`` takes the larger root (Brent's method on the
bracket past the maximum) and keeps it only where ``g`` is lower there than at ``s = 0``
(``g(0) = sigma^2 / (2N)``); else the mode collapses to zero (too much weight decay for
that class: "minority collapse" of the bias-free imbalanced problem).

Closed forms (``closed_form``): ``W W^T = U diag(p_j^2) U^T`` (bias-free: ``U = I``,
``diag(s_k^{2M})``; balanced with the bias: ``s^{2M} (I - 1 1^T / K)``), ``W_M W_M^T =
U diag(c_j / lambda_{W_M}) U^T``, the class-mean features' Gram ``Hbar^T Hbar`` from (1)
(bias-free: ``diag(s_k^{2M} / (s_k^{2M} + N lambda_H)^2)``), the outputs on the class
means ``W Hbar = diag(p^2 / (p^2 + N lambda_H))`` (bias-free) and the bias ``b = (Y -
W H) 1 / N``. ``minimiser`` builds one global minimiser's parameters (any width ``d >=``
the rank), for the oracle tests (stationarity of ``F``, and a dense optimisation reaching
the same objective and Grams).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import brentq

from dynamics.checks import check_float, check_int


def _left(x, depth):
    """The left side of (2), ``M x^{M-1} / (x^M + 1)^2``."""
    return depth * x ** (depth - 1) / (x**depth + 1.0) ** 2


def largest_root(rhs: float, depth: int) -> float:
    """The largest ``x > 0`` with ``M x^{M-1} / (x^M + 1)^2 = rhs`` (the paper's scalar
    equation (2)), or ``nan`` where it has none."""
    depth = check_int("depth", depth)
    rhs = check_float("rhs", rhs, 0.0, low_open=True)
    peak = ((depth - 1.0) / (depth + 1.0)) ** (1.0 / depth)  # 0 for M = 1
    if _left(peak, depth) <= rhs:
        return float("nan")
    hi = max(2.0 * peak, 1.0)
    while _left(hi, depth) > rhs:
        hi *= 2.0
    return float(brentq(lambda x: _left(x, depth) - rhs, peak, hi, xtol=1e-300,
                        rtol=4 * np.finfo(float).eps, maxiter=500))


def _geometric_mean(lambda_ws) -> float:
    lw = np.asarray(lambda_ws, np.float64)
    return float(np.exp(np.mean(np.log(lw))))


def mode_objective(s, sigma2, n, lambda_h, lambda_ws):
    """``g(s) = sigma^2 lambda_H / (2 (s^{2M} + N lambda_H)) + M lambdabar s^2 / 2``: the
    objective of one mode at layer singular value ``s`` (``H`` minimised out)."""
    m = len(lambda_ws)
    s = np.asarray(s, np.float64)
    return (sigma2 * lambda_h / (2 * (s ** (2 * m) + n * lambda_h))
            + m * _geometric_mean(lambda_ws) * s**2 / 2)


def mode_singular_values(sigma2, n: int, lambda_h: float, lambda_ws) -> np.ndarray:
    """The layer singular value ``sbar_j`` of each mode of squared target singular value
    ``sigma2[j]`` (``n_k`` for one-hot bias-free targets): the larger root of (2), or 0
    where there is none or where 0 has the lower objective (module doc). ``lambda_ws``:
    the ``M`` layers' decays (its length is the depth)."""
    n = check_int("n", n)
    check_float("lambda_h", lambda_h, 0.0, low_open=True)
    lambda_ws = [check_float("lambda_w", lw, 0.0, low_open=True) for lw in lambda_ws]
    m = check_int("depth (len(lambda_ws))", len(lambda_ws))
    lam = _geometric_mean(lambda_ws)
    b = m * n ** ((m + 1) / m) * lam * lambda_h ** (1 / m)
    out = []
    for s2 in np.asarray(sigma2, np.float64):
        if s2 <= 0:
            out.append(0.0)
            continue
        x = largest_root(b / s2, m)
        if not np.isfinite(x):
            out.append(0.0)
            continue
        s = (n * lambda_h * x**m) ** (1 / (2 * m))
        better = mode_objective(s, s2, n, lambda_h, lambda_ws) < s2 / (2 * n)
        out.append(s if better else 0.0)
    return np.asarray(out)


def one_hot(counts) -> np.ndarray:
    """``Y`` (``K x N``): the one-hot targets of ``counts[k]`` examples of class ``k``, in
    class order."""
    counts = [check_int("count", c) for c in counts]
    return np.repeat(np.eye(len(counts)), counts, axis=1)


def target_modes(counts, bias: bool):
    """``(sigma, U, V)``: the SVD ``Y_c = U diag(sigma) V^T`` of the one-hot targets,
    centred when the last layer has an (unregularised) bias (module doc); ``K`` modes,
    ``U`` ``K x K``, ``V`` ``N x K``."""
    y = one_hot(counts)
    if bias:
        y = y - y.mean(axis=1, keepdims=True)
    u, sigma, vt = np.linalg.svd(y, full_matrices=False)
    return sigma, u, vt.T


@dataclasses.dataclass(frozen=True)
class ClosedForm:
    """The global minimiser's invariants (module doc), float64. ``layer_singular_values``
    are the ``sbar_j`` of the modes (in ``target_modes`` order), ``class_singular_values``
    those of the classes when the bias is absent (``s_k``, class order)."""

    counts: tuple
    bias: bool
    lambda_h: float
    lambda_ws: tuple
    sigma: np.ndarray
    u: np.ndarray
    v: np.ndarray
    layer_singular_values: np.ndarray
    classifier_gram: np.ndarray      # W W^T, W = W_M ... W_1
    readout_gram: np.ndarray         # W_M W_M^T
    feature_gram: np.ndarray         # Hbar^T Hbar, the class means' Gram
    class_mean_outputs: np.ndarray   # (W Hbar + b 1^T)^T: row k the output on class k's mean
    bias_vector: np.ndarray          # b (zeros without the bias)
    objective: float                 # F at the minimiser

    @property
    def depth(self) -> int:
        return len(self.lambda_ws)

    @property
    def class_singular_values(self) -> np.ndarray:
        if self.bias:
            raise ValueError("class_singular_values: with the bias the modes are not the "
                             "classes (use layer_singular_values)")
        # bias-free, W W^T = diag(s_k^{2M}) in class order
        return np.diag(self.classifier_gram) ** (1.0 / (2 * self.depth))


def closed_form(counts, lambda_h: float, lambda_ws, bias: bool = False) -> ClosedForm:
    """The global minimiser of the paper's objective for class sizes ``counts``, feature
    decay ``lambda_h``, layer decays ``lambda_ws`` (``W_1`` first; ``M = len``) and an
    unregularised last-layer bias when ``bias`` (module doc)."""
    counts = tuple(check_int("count", c) for c in counts)
    n = sum(counts)
    sigma, u, v = target_modes(counts, bias)
    s = mode_singular_values(sigma**2, n, lambda_h, lambda_ws)
    m = len(lambda_ws)
    lam = _geometric_mean(lambda_ws)
    p = s**m
    eta = p * sigma / (p**2 + n * lambda_h)                                   # (1)
    y = one_hot(counts)
    # H = R diag(eta) V^T with orthonormal R: the class means Hbar = H Y^T diag(1/n), so
    # Hbar^T Hbar = diag(1/n) Y V diag(eta^2) V^T Y^T diag(1/n)
    means = (v.T @ y.T) / np.asarray(counts)[None, :]                          # (modes, K)
    feature_gram = means.T @ np.diag(eta**2) @ means
    product = u @ np.diag(p * eta) @ means                                     # W Hbar
    wh = u @ np.diag(p * eta) @ v.T                                            # W H
    b = (y - wh).mean(axis=1) if bias else np.zeros(len(counts))
    fit = np.sum((wh + b[:, None] - y) ** 2) / (2 * n)
    c = lam * s**2
    reg = sum(lw / 2 * np.sum(c / lw) for lw in lambda_ws) + lambda_h / 2 * np.sum(eta**2)
    return ClosedForm(
        counts=counts, bias=bool(bias), lambda_h=float(lambda_h),
        lambda_ws=tuple(float(x) for x in lambda_ws), sigma=sigma, u=u, v=v,
        layer_singular_values=s,
        classifier_gram=u @ np.diag(p**2) @ u.T,
        readout_gram=u @ np.diag(c / lambda_ws[-1]) @ u.T,
        feature_gram=feature_gram,
        class_mean_outputs=(product + b[:, None]).T,
        bias_vector=b, objective=float(fit + reg))


def minimiser(form: ClosedForm, width: int):
    """One global minimiser ``(H, [W_1, ..., W_M], b)`` in float64 (``H`` ``d x N``,
    ``W_m`` in the paper's orientation, ``b`` zeros without the bias): mode ``j`` on the
    hidden basis vector ``e_j`` (module doc). ``width`` (``d``) must be at least ``K``."""
    k = len(form.counts)
    width = check_int("width", width, minimum=k)
    c = _geometric_mean(form.lambda_ws) * form.layer_singular_values**2
    eye = np.eye(width)[:, :k]                                                 # (d, K)
    n = sum(form.counts)
    p = form.layer_singular_values ** form.depth
    eta = p * form.sigma / (p**2 + n * form.lambda_h)
    h = eye @ np.diag(eta) @ form.v.T
    ws = []
    for m, lw in enumerate(form.lambda_ws):
        a = np.sqrt(c / lw)
        ws.append(form.u @ np.diag(a) @ eye.T if m == form.depth - 1
                  else eye @ np.diag(a) @ eye.T)
    return h, ws, form.bias_vector.copy()


def objective(h, ws, b, y, lambda_h, lambda_ws, lambda_b=0.0, xp=np):
    """The paper's ``F`` (module doc) of features ``h`` (``d x N``), layers ``ws`` (``W_1``
    first), bias ``b`` and targets ``y`` (``K x N``); ``xp``: ``numpy`` or ``jax.numpy``."""
    out = h
    for w in ws:
        out = w @ out
    n = y.shape[1]
    f = xp.sum((out + b[:, None] - y) ** 2) / (2 * n)
    f = f + sum(lw / 2 * xp.sum(w**2) for lw, w in zip(lambda_ws, ws))
    return f + lambda_h / 2 * xp.sum(h**2) + lambda_b / 2 * xp.sum(b**2)


def normalized_distance(a, b) -> float:
    """``|| A/||A||_F - B/||B||_F ||_F``: the paper's NC2/NC3 distance of a measured
    matrix ``A`` to a target geometry ``B`` (each normalised to unit Frobenius norm)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a / np.linalg.norm(a) - b / np.linalg.norm(b)))


def relative_error(a, b) -> float:
    """``||A - B||_F / ||B||_F``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def simplex_etf(k: int) -> np.ndarray:
    """``I_K - 1 1^T / K``: the Gram of the simplex equiangular tight frame (up to
    scale)."""
    k = check_int("k", k)
    return np.eye(k) - np.ones((k, k)) / k
