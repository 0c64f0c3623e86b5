r"""The tangent kernel of a two-layer linear network and the initial rank (closed forms).

The setting of the two-layer linear analysis of Liu, Baratin, Cornford, Mihalas,
Shea-Brown & Lajoie (2024, "How connectivity structure shapes rich and lazy learning in
neural circuits", ICLR 2024): ``f(x) = m a^T W^T x`` with ``W (d, N)`` the
(possibly low-rank) first weight, ``a (N,)`` the readout, ``m`` the product of the two
layers' forward multipliers (``dynamics.parametrization``), a linear teacher ``y = beta^T
x`` and whitened inputs (``X^T X = P I``). The paper shows that, averaged over tasks,
a higher effective rank of the initial weights gives a tangent kernel better aligned with
the task at initialisation, hence less need to move (lazier learning), and that a
low-rank initialisation aligned with the task is the exception. The closed forms below
are derived here for that setting (each derivation in its docstring); the tests check
them against dense Jacobians, least squares and Monte Carlo over tasks.

The kernel. ``d f / d W = m x a^T`` and ``d f / d a = m W^T x``, so the NTK is

.. math::  K(x, x') = m^2\, x^T M x', \qquad M = W W^T + \|a\|^2 I_d,

and ``M``'s eigenvalues are ``s_i^2 + c`` (``s_i`` the singular values of ``W``, zero
beyond its rank; ``c = ||a||^2``).
"""

from __future__ import annotations

import numpy as np


def kernel_matrix(w, a) -> np.ndarray:
    """``M = W W^T + ||a||^2 I`` ``(d, d)`` (module doc): ``K(x, x') = m^2 x^T M x'``."""
    w = np.asarray(w, np.float64)
    a = np.asarray(a, np.float64).ravel()
    return w @ w.T + (a @ a) * np.eye(w.shape[0])


def alignment(w, a, beta) -> float:
    r"""The kernel-target alignment (Cortes, Mohri & Rostamizadeh 2012, Def. 4) of the NTK
    with the target kernel ``y y^T``, ``y = X beta``, on exactly whitened and centred
    inputs (``X^T X = P I``, ``1^T X = 0``; then centring changes nothing):

    .. math::  A = \frac{\langle X M X^T, X\beta\beta^T X^T\rangle_F}
                        {\|X M X^T\|_F \|X\beta\|^2}
                 = \frac{\beta^T M \beta}{\|M\|_F \|\beta\|^2},

    since ``X^T X = P I`` turns every trace over examples into one over features."""
    m = kernel_matrix(w, a)
    beta = np.asarray(beta, np.float64).ravel()
    return float(beta @ m @ beta / (np.linalg.norm(m) * (beta @ beta)))


def expected_alignment(singular_values, readout_norm2: float, d: int) -> float:
    r"""``E_beta[A]`` over directions ``beta`` uniform on the sphere: ``E[beta beta^T] = I /
    d`` gives

    .. math::  \mathbb E A = \frac{\operatorname{tr} M}{d\,\|M\|_F}
               = \frac{\sum_i s_i^2 + d c}{d \sqrt{\sum_{i \le d} (s_i^2 + c)^2}},

    ``s_i`` padded with zeros to ``d``. At ``c = 0`` this is ``sqrt(PR) / d`` with ``PR =
    (sum s_i^2)^2 / sum s_i^4`` the participation-ratio effective rank: ``sqrt(r) / d``
    for ``r`` equal singular values, rising with the rank at a fixed norm."""
    s2 = _padded_squares(singular_values, d)
    c = float(readout_norm2)
    return float((s2.sum() + d * c) / (d * np.sqrt(np.sum((s2 + c) ** 2))))


def lazy_weight_change(w, a, b, multiplier: float = 1.0) -> float:
    r"""``||theta_inf - theta_0||`` of the linearised (lazy) model trained to zero loss from
    residual ``r = X b`` (``b = beta - m W a``): gradient flow on the linearised model
    moves the parameters by the minimum-norm solution of ``m J dtheta = r`` (Lee et al.
    2019, eq. 9 and its weight-space form), with squared norm ``r^T (m^2 X M X^T)^+ r``;
    on whitened inputs ``(X M X^T)^+ = X M^{-1} X^T / P^2``, so

    .. math::  \|\Delta\theta\|^2 = \frac{b^T M^{-1} b}{m^2}."""
    m = kernel_matrix(w, a)
    b = np.asarray(b, np.float64).ravel()
    return float(np.sqrt(b @ np.linalg.solve(m, b)) / multiplier)


def lazy_layer_changes(w, a, b, multiplier: float = 1.0) -> tuple[float, float]:
    r"""``(||W_inf - W_0||_F, ||a_inf - a_0||)``: the two layers' parts of
    ``lazy_weight_change``. The minimum-norm solution is ``dtheta = m J^T alpha`` with
    ``X^T alpha = M^{-1} b / m^2`` on whitened inputs, and ``d f / d W = m x a^T``, ``d f /
    d a = m W^T x`` give

    .. math::  \|\Delta W\|_F = rac{\|a\|\,\|M^{-1} b\|}{m}, \qquad
               \|\Delta a\| = rac{\|W^T M^{-1} b\|}{m},

    whose squares add up to ``b^T M^{-1} (W W^T + ||a||^2 I) M^{-1} b / m^2 = b^T M^{-1}
    b / m^2``."""
    w = np.asarray(w, np.float64)
    a = np.asarray(a, np.float64).ravel()
    solved = np.linalg.solve(kernel_matrix(w, a), np.asarray(b, np.float64).ravel())
    return (float(np.linalg.norm(a) * np.linalg.norm(solved) / multiplier),
            float(np.linalg.norm(w.T @ solved) / multiplier))


def expected_lazy_weight_change_sq(singular_values, readout_norm2: float, d: int,
                                   task_norm2: float = 1.0, multiplier: float = 1.0) -> float:
    r"""``E_b ||dtheta||^2`` of ``lazy_weight_change`` for ``b`` uniform on the sphere of
    squared radius ``task_norm2``:

    .. math::  \mathbb E \|\Delta\theta\|^2 = \frac{\|b\|^2}{m^2 d}\Big(\sum_{i \le r}
               \frac{1}{s_i^2 + c} + \frac{d - r}{c}\Big).

    At a fixed norm ``sum s_i^2 = S``, ``1/(s^2 + c)`` is convex, so the sum is least
    when the norm is spread evenly over as many directions as possible: with ``r`` equal
    singular values it is ``r^2/(S + r c) + (d - r)/c``, decreasing in ``r``; a lower rank
    moves the weights more."""
    s2 = _padded_squares(singular_values, d)
    c = float(readout_norm2)
    return float(task_norm2 * np.sum(1.0 / (s2 + c)) / (d * multiplier**2))


def _padded_squares(singular_values, d: int) -> np.ndarray:
    s = np.asarray(singular_values, np.float64).ravel()
    if s.size > d:
        raise ValueError(f"at most d={d} singular values, got {s.size}")
    return np.concatenate([s**2, np.zeros(d - s.size)])
