r"""Parametrizations: where every width-dependent scale of an MLP is written, once.

An MLP of depth ``L`` (the number of hidden layers) has weight layers ``l = 0..L`` with
fan-ins ``n_0 = D`` (input dimension) and ``n_l = N`` (width) for ``l >= 1``. Every
parametrization is an "abc"-parametrization (Yang & Hu 2021, eq. 1): each layer has a
trainable matrix ``W^l`` with i.i.d. entries of standard deviation ``s_l`` at
initialisation, a forward multiplier ``m_l`` and a learning-rate multiplier ``c_l``:

.. math::

    h^1 = m_0 W^0 x + \beta_0 b^0, \qquad
    h^{l+1} = m_l W^l \phi(h^l) + \beta_l b^l, \qquad
    f = \alpha\, h^{L+1},

with bias entries of standard deviation ``t_l`` and bias multiplier ``beta_l``, and the
optimizer's update of layer ``l`` multiplied by ``c_l`` (for SGD: a per-layer learning
rate ``c_l * lr``). ``alpha`` is ``output_scale`` (Chizat, Oyallon & Bach 2019) and is the
same in every parametrization. With ``sigma_w``, ``sigma_b`` the usual weight and bias
scales and ``gamma0`` the feature-learning strength:

============  ====================  ===================  ===========  ===========  ==================
name          s_l (weight std)      m_l (multiplier)     t_l          beta_l       c_l (lr mult.)
============  ====================  ===================  ===========  ===========  ==================
``standard``  sigma_w / sqrt(n_l)   1                    sigma_b      1            1
``ntk``       1                     sigma_w / sqrt(n_l)  1            sigma_b      1
``mup``       1                     sigma_w / sqrt(n_l)  1            sigma_b      gamma0^2 N
              readout ``l = L``:    sigma_w/(gamma0 N)   1            sigma_b /
                                                                      (gamma0 sqrt N)
============  ====================  ===================  ===========  ===========  ==================

* **standard (SP)**: the PyTorch/flax default scaled by ``sigma_w`` (LeCun init at
  ``sigma_w = 1``). The empirical NTK grows linearly with ``N``, so a fixed learning rate
  diverges as the network widens.
* **ntk**: Jacot, Gabriel & Hongler (2018), eq. 1 (``beta = sigma_b``). Outputs and the
  NTK are ``O(1)`` in ``N``; training is lazy: the features move by ``O(1/sqrt N)``, the
  first layer's weights by ``O(1/sqrt N)`` relative to their norm, and an ``N x N``
  hidden matrix by ``O(1/N)`` in Frobenius norm (``O(1/sqrt N)`` in operator norm).
* **mup**: the mean-field / maximal-update parametrization in the form of Bordelon &
  Pehlevan (2022), eq. 1-3: ``h^{l+1} = W^l phi(h^l) / sqrt(N)``,
  ``f = w^L . phi(h^L) / (gamma0 N)``, weights ``N(0, 1)``, trained by
  ``d theta/dt = -gamma0^2 N grad L``. It is the NTK parametrization with the readout
  divided by ``gamma0 sqrt(N)`` and every learning rate multiplied by ``gamma0^2 N``; so at
  ``gamma0 = 1/sqrt(N)`` it *is* the NTK parametrization, ``gamma0 -> 0`` at fixed N is the
  lazy limit, and fixed ``gamma0`` as ``N -> infinity`` keeps feature learning: outputs at
  initialisation are ``O(1/(gamma0 sqrt N))`` and the change of ``f`` and of the hidden
  features after a step are ``O(1)`` and ``O(gamma0)`` in ``N``. These learning-rate
  multipliers are those of gradient descent (SGD, momentum); adaptive optimizers need
  another table (Yang et al. 2022, Table 3) and are refused with ``mup``. For
  ``depth = 0`` (a linear model) the readout's fan-in ``D`` stands in for ``N``.

Every quantity here may be a traced JAX value (swept hyperparameters).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

PARAMETRIZATIONS = ("standard", "ntk", "mup")


@dataclasses.dataclass(frozen=True)
class LayerScale:
    """The scales of one weight layer (see the module table)."""

    weight_std: Any
    multiplier: Any
    bias_std: Any
    bias_multiplier: Any
    lr_multiplier: Any


def check(parametrization: str) -> None:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {list(PARAMETRIZATIONS)}, got {parametrization!r}"
        )


def layer_scales(
    parametrization: str,
    fan_ins: tuple[int, ...],
    sigma_w,
    sigma_b,
    gamma0=1.0,
) -> list[LayerScale]:
    """The ``LayerScale`` of each layer ``l = 0..L`` for the given fan-ins ``n_l``."""
    check(parametrization)
    scales = []
    last = len(fan_ins) - 1
    for l, n in enumerate(fan_ins):
        inv_sqrt_n = 1.0 / math.sqrt(n)
        if parametrization == "standard":
            scales.append(LayerScale(sigma_w * inv_sqrt_n, 1.0, sigma_b, 1.0, 1.0))
        elif parametrization == "ntk":
            scales.append(LayerScale(1.0, sigma_w * inv_sqrt_n, 1.0, sigma_b, 1.0))
        else:  # mup, Bordelon & Pehlevan (2022) eq. 1-3
            readout = 1.0 / (gamma0 * math.sqrt(fan_ins[last])) if l == last else 1.0
            lr = gamma0**2 * fan_ins[last]
            scales.append(
                LayerScale(1.0, sigma_w * inv_sqrt_n * readout, 1.0, sigma_b * readout, lr)
            )
    return scales

