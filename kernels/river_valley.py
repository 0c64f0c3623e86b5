r"""The noise floor of SGD in a quadratic valley: the excess loss of the stable phase and
its removal by the decay phase of a warmup-stable-decay schedule.

Wen, Li, Wang, Hall, Liang & Ma (2024), "Understanding warmup-stable-decay learning rates:
a river valley loss landscape perspective" (arXiv:2410.05192), abstract and Sec. 3: in a
river valley the iterate of a large constant learning rate oscillates across the valley,
which holds the loss above the river through the stable phase; the decay phase removes
the oscillation. For the toy of ``dynamics.models.river_valley`` (a valley
coordinate ``y`` of curvature ``a``, SGD with gradient ``a y + sigma xi``, ``xi ~ N(0,
1)``, learning rate ``eta_t``) each valley coordinate follows the linear-Gaussian recursion

.. math::

    y_{t+1} = (1 - \eta_t a)\, y_t - \eta_t \sigma \xi_t, \qquad
    m_{t+1} = (1 - \eta_t a)^2\, m_t + \eta_t^2 \sigma^2, \quad m_t = \mathbb{E}[y_t^2],

exactly (``xi_t`` is independent of ``y_t``), whatever ``y_0``. At a constant ``eta``
with ``0 < eta a < 2`` the fixed point is ``m = eta^2 sigma^2 / (1 - (1 - eta a)^2) = eta
sigma^2 / (a (2 - eta a))``, so the stationary excess loss per valley direction is

.. math::

    \mathbb{E}\Bigl[\tfrac{a}{2} y^2\Bigr] = \frac{a}{2} \cdot
        \frac{\eta \sigma^2}{a (2 - \eta a)} = \frac{\eta \sigma^2}{2 (2 - \eta a)},

``-> eta sigma^2 / 4`` for ``eta a << 1`` (the continuous-time Ornstein-Uhlenbeck limit of
SGD, Mandt, Hoffman & Blei 2017, "Stochastic gradient descent as approximate Bayesian
inference", Sec. 3, whose stationary covariance solves ``A Sigma + Sigma A = eta B``). The
discrete recursion and its fixed point are derived here for this toy, not taken from Wen
et al., whose analysis (Sec. 3) is of a general river valley. The excess is, to first
order, proportional to the learning rate: a decay to ``eta'`` divides it by ``eta / eta'`` once
the valley has relaxed (within about ``1 / (2 eta' a)`` steps), and ``m_t`` from the
recursion follows it through any schedule (``excess_trajectory``).
"""

from __future__ import annotations

import numpy as np


def stationary_excess(lr, curvature, noise_std):
    """``eta sigma^2 / (2 (2 - eta a))``: the stationary ``E[(a/2) y^2]`` per valley
    direction at constant learning rate ``lr`` (module doc); NaN where ``eta a`` is not in
    ``(0, 2)`` (no stationary law: the valley diverges)."""
    eta, a, sigma = (np.asarray(v, np.float64) for v in (lr, curvature, noise_std))
    stable = (eta * a > 0) & (eta * a < 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(stable, eta * sigma**2 / (2.0 * (2.0 - eta * a)), np.nan)


def excess_trajectory(lrs, curvature, noise_std, initial_second_moment):
    """``(a/2) m_t`` for ``t = 0, ..., len(lrs)``: the expected excess per valley direction
    after each step of the learning rates ``lrs`` (``lrs[t]`` the one of step ``t``),
    from ``m_0 = initial_second_moment`` (module doc; float64)."""
    lrs = np.asarray(lrs, np.float64)
    a, var = float(curvature), float(noise_std) ** 2
    m = np.empty(lrs.size + 1)
    m[0] = float(initial_second_moment)
    contraction = (1.0 - lrs * a) ** 2
    injected = lrs**2 * var
    for t in range(lrs.size):
        m[t + 1] = contraction[t] * m[t] + injected[t]
    return 0.5 * a * m
