r"""Closed form: a two-layer linear network on whitened data (an oracle for the solvers).

``f(x) = beta . x`` with ``beta = sigma^2 W^T w / (gamma N sqrt D)`` (``kernels.dmft``'s
network at ``L = 1``, ``phi(h) = h``), data with ``X^T X / P = I_D`` and a linear target
``y = X beta*``. The GD updates ``dW = eta gamma sigma^2 w v^T / sqrt D``,
``dw = eta gamma sigma^2 W v / sqrt D`` with ``v = sum_mu Delta_mu x_mu = 2 (beta* - beta)``
keep everything in the plane of ``beta*``: with ``beta = b e`` (``e = beta*/|beta*|``),
``a = |w|^2 / N`` and ``W^T W / N = I + c e e^T`` (infinite width: ``a = 1``, ``c = 0``,
``b = 0`` at initialisation), one exact step is, writing ``d = 2 (b* - b)`` and
``k = eta^2 gamma^2 sigma^4 / D``,

.. math::

    b' = b + \frac{\eta\sigma^4}{D}(a + 1 + c)\, d + k\, b\, d^2, \quad
    a' = a + 2\eta\gamma^2 b d + k (1 + c) d^2, \quad
    c' = c + 2\eta\gamma^2 b d + k\, a\, d^2,

so ``c = a - 1`` throughout. Its ``eta -> 0`` limit is the scalar ODE (Saxe et al. 2014
and Bordelon & Pehlevan 2022, Sec. 4.1 for the two-layer linear case, here in the
simulator's normalisation), using the conserved ``a^2 - gamma^2 D b^2 / sigma^4 = 1``:

.. math::

    \frac{db}{dt} = \frac{4\sigma^4}{D}\sqrt{1 + \gamma^2 D\, b^2/\sigma^4}\,(b^* - b),
    \qquad L(t) = (b^* - b(t))^2 .

At ``gamma = 0`` it is the NTK's exponential decay with rate ``8 sigma^4 / D``.
"""

from __future__ import annotations

import numpy as np


def two_layer_linear_whitened(b_star: float, *, gamma: float, sigma: float, dim: int,
                              lr: float, steps: int, method: str = "gd",
                              ode_substeps: int = 2000):
    """``(b, loss)`` at steps ``0..steps``: the exact discrete recursion (``"gd"``) or the
    scalar ODE at ``t = lr * step`` (``"flow"``, RK4 with ``ode_substeps`` per step)."""
    b = np.zeros(steps + 1)
    if method == "gd":
        a, c, bb = 1.0, 0.0, 0.0
        k = lr**2 * gamma**2 * sigma**4 / dim
        for s in range(steps):
            d = 2.0 * (b_star - bb)
            bb, a, c = (bb + lr * sigma**4 / dim * (a + 1 + c) * d + k * bb * d * d,
                        a + 2 * lr * gamma**2 * bb * d + k * (1 + c) * d * d,
                        c + 2 * lr * gamma**2 * bb * d + k * a * d * d)
            b[s + 1] = bb
    elif method == "flow":
        def rhs(x):
            return 4 * sigma**4 / dim * np.sqrt(1 + gamma**2 * dim * x * x / sigma**4) * (
                b_star - x)

        h = lr / ode_substeps
        x = 0.0
        for s in range(steps):
            for _ in range(ode_substeps):
                k1 = rhs(x)
                k2 = rhs(x + h * k1 / 2)
                k3 = rhs(x + h * k2 / 2)
                k4 = rhs(x + h * k3)
                x += h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
            b[s + 1] = x
    else:
        raise ValueError(f"method must be 'gd' or 'flow', got {method!r}")
    return b, (b_star - b) ** 2
