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
  multipliers are those of gradient descent (SGD, momentum); the Adam column is below. For
  ``depth = 0`` (a linear model) the readout's fan-in ``D`` stands in for ``N``.

Adam-like optimizers. An entrywise adaptive update (Adam, AdamW, Lion, ...) has entries of
size ``O(lr)`` whatever the gradient's scale, so the learning-rate multipliers that keep
the dynamics width-independent change with the optimizer's family (Yang et al. 2022,
Tables 3 and 8; Yang & Littwin 2023). Reparametrizing a layer as ``W_eff = m W`` leaves the
function and its training unchanged when the learning rate is multiplied by ``1/m^2`` for
SGD and by ``1/m`` for Adam (the abc-symmetry, Yang & Hu 2021, eq. 5; Yang et al. 2022,
Sec. J). So the MLP's ``mup``, which is the NTK parametrization with its readout divided by
``theta = gamma0 sqrt(N)``, multiplies every learning rate by ``theta^2`` for SGD and by
``theta`` for Adam, on top of the NTK parametrization's own Adam multipliers
``1/sqrt(r_in r_out)`` (see :func:`role_scale`): the Adam column of the table is

============  ==============================================================
name          c_l for family ``"adam"``
============  ==============================================================
``standard``  1
``ntk``       ``1/sqrt(N)`` (input and readout layers, hidden biases), ``1/N`` (hidden),
              1 (readout bias)
``mup``       ``gamma0`` (input and readout layers, hidden biases), ``gamma0/sqrt(N)``
              (hidden), ``gamma0 sqrt(N)`` (readout bias)
============  ==============================================================

(the width ``N`` stands for ``n / base`` with base 1; depth-0 networks have no width
and every ``c_l = 1`` under ``ntk`` and ``gamma0 sqrt(D)`` under ``mup``).

Every quantity here may be a traced JAX value (swept hyperparameters).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

PARAMETRIZATIONS = ("standard", "ntk", "mup")
FAMILIES = ("sgd", "adam")
# the roles a parameter can play; "attention" (the query, key, value and output
# matrices of an attention layer) follows the rules of "hidden"; "fixed" has no width
# dimension
ROLES = ("input", "embedding", "hidden", "attention", "readout", "bias", "norm", "fixed")


@dataclasses.dataclass(frozen=True)
class LayerScale:
    """The scales of one weight layer (see the module table)."""

    weight_std: Any
    multiplier: Any
    bias_std: Any
    bias_multiplier: Any
    lr_multiplier: Any
    bias_lr_multiplier: Any = None

    def __post_init__(self):
        if self.bias_lr_multiplier is None:
            object.__setattr__(self, "bias_lr_multiplier", self.lr_multiplier)


def check(parametrization: str) -> None:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization must be one of {list(PARAMETRIZATIONS)}, got {parametrization!r}"
        )


def check_family(family) -> str:
    if family not in FAMILIES:
        raise ValueError(f"optimizer family must be one of {list(FAMILIES)}, got {family!r}")
    return family


def layer_scales(
    parametrization: str,
    fan_ins: tuple[int, ...],
    sigma_w,
    sigma_b,
    gamma0=1.0,
    family: str = "sgd",
) -> list[LayerScale]:
    """The ``LayerScale`` of each layer ``l = 0..L`` of an MLP-like stack for the given
    fan-ins ``n_l`` (``n_0`` the input's, the others the width ``N``) and the optimizer
    ``family`` (the module tables)."""
    check(parametrization)
    check_family(family)
    scales = []
    last = len(fan_ins) - 1
    for l, n in enumerate(fan_ins):
        inv_sqrt_n = 1.0 / math.sqrt(n)
        # the width ratios of the weight matrix (base 1): n_l for hidden fan-ins, and the
        # layer's fan-out N for every layer but the readout
        r_in = n if l > 0 else 1
        r_out = fan_ins[l + 1] if l < last else 1
        if family == "adam" and parametrization != "standard":
            w_lr = 1.0 / math.sqrt(r_in * r_out)   # role_scale's ntk column
            b_lr = 1.0 / math.sqrt(r_out)
        else:
            w_lr = b_lr = 1.0
        if parametrization == "standard":
            scales.append(LayerScale(sigma_w * inv_sqrt_n, 1.0, sigma_b, 1.0, 1.0))
        elif parametrization == "ntk":
            scales.append(LayerScale(1.0, sigma_w * inv_sqrt_n, 1.0, sigma_b, w_lr, b_lr))
        else:  # mup, Bordelon & Pehlevan (2022) eq. 1-3: ntk with the readout / theta
            theta = gamma0 * math.sqrt(fan_ins[last])
            readout = 1.0 / theta if l == last else 1.0
            boost = theta**2 if family == "sgd" else theta   # the abc-symmetry
            scales.append(LayerScale(1.0, sigma_w * inv_sqrt_n * readout, 1.0,
                                     sigma_b * readout, boost * w_lr, boost * b_lr))
    return scales


@dataclasses.dataclass(frozen=True)
class Scale:
    """The scales of one parameter tensor by its role (:func:`role_scale`): entries drawn
    ``init_mean + init_std * N(0, 1)`` (zero for a zero-initialised readout), used in the
    forward pass as ``multiplier * param``, and the optimizer's update multiplied by
    ``lr_multiplier``."""

    init_std: Any
    multiplier: Any
    lr_multiplier: Any
    init_mean: Any = 0.0


def width_ratio(n: int, base: int | None) -> float:
    """``n / base``: how much a dimension has grown from the base model's (1 when it does
    not scale with width, ``base=None``)."""
    if base is None:
        return 1.0
    if not (isinstance(base, int) and base >= 1):
        raise ValueError(f"base dimension must be a positive int, got {base!r}")
    return n / base


def role_scale(parametrization: str, role: str, *, fan_in: int, fan_out: int,
               base_fan_in: int | None = None, base_fan_out: int | None = None,
               family: str = "sgd", sigma=1.0, zero_readout: bool = False) -> Scale:
    r"""Init, forward multiplier and learning-rate multiplier of a parameter by its role.

    ``fan_in`` is the number of inputs summed over by one output (``C_in k^2`` for a
    convolution, the vocabulary for an embedding read by index, 1 for biases and gains),
    ``fan_out`` the number of outputs; ``base_fan_in`` / ``base_fan_out`` the same
    dimensions in the base model (``None``: the dimension does not grow with width).
    ``r_in = fan_in / base_fan_in`` and ``r_out = fan_out / base_fan_out`` are the width
    ratios. ``sigma`` is the weight scale (``sigma_w``; for biases ``sigma_b``).

    * ``standard``: ``W ~ N(0, sigma^2 / fan_in)`` (embeddings, biases: ``N(0, sigma^2)``),
      multiplier 1, learning rate 1 for both families.
    * ``ntk`` (Jacot et al. 2018; Yang & Hu 2021, Table 1): ``W ~ N(0, 1)``, multiplier
      ``sigma / sqrt(fan_in)`` (biases and embeddings: ``sigma``); SGD: 1; Adam:
      ``1 / sqrt(r_in r_out)``, so that an entrywise update of size ``lr`` moves each
      output of the layer by ``O(1/sqrt(width))``, the kernel regime (Yang & Littwin 2023).
    * ``mup`` in the form of microsoft/mup (Yang et al. 2022, Table 8; it is ``standard``
      at the base shapes): init as ``standard``, multiplier 1 but the readout's ``1/r_in``
      (``MuReadout``), whose weights are drawn ``N(0, sigma^2 / base_fan_in)`` (zero with
      ``zero_readout``), so the effective readout is ``N(0, sigma^2 base_fan_in / fan_in^2)``.
      Learning-rate multipliers, SGD: vector-like parameters (input, embedding, bias, norm
      gains: one width dimension, ``r_out``) ``r_out``; hidden ``r_out / r_in``; readout
      ``r_in``. Adam: hidden ``1 / r_in``, every other role 1 (Table 3: the hidden learning
      rate is ``∝ 1/fan_in``).
    * ``fixed``: a parameter without a width dimension keeps ``standard``'s scales in every
      parametrization.

    Norm gains start at 1 (``init_mean``) with ``init_std = 0``; the attention logits'
    scale is :func:`attention_scale`.
    """
    check(parametrization)
    check_family(family)
    if role not in ROLES:
        raise ValueError(f"role must be one of {list(ROLES)}, got {role!r}")
    r_in, r_out = width_ratio(fan_in, base_fan_in), width_ratio(fan_out, base_fan_out)
    if role == "attention":
        role = "hidden"
    vector = role in ("embedding", "bias", "norm")
    if role == "norm":
        std = 0.0
    elif vector:
        std = sigma
    else:
        std = sigma / math.sqrt(fan_in)
    mean = 1.0 if role == "norm" else 0.0
    if parametrization == "standard" or role == "fixed":
        return Scale(std, 1.0, 1.0, mean)
    if parametrization == "ntk":
        if role == "norm":
            return Scale(0.0, 1.0, 1.0 if family == "sgd" else 1.0 / math.sqrt(r_out), 1.0)
        lr = 1.0 if family == "sgd" else 1.0 / math.sqrt(r_in * r_out)
        return Scale(1.0, std, lr)
    # mup, microsoft/mup's form
    if role == "readout":
        init = 0.0 if zero_readout else sigma / math.sqrt(fan_in / r_in)
        return Scale(init, 1.0 / r_in, r_in if family == "sgd" else 1.0)
    if role == "hidden":
        return Scale(std, 1.0, r_out / r_in if family == "sgd" else 1.0 / r_in)
    # input, embedding, bias, norm: vector-like
    return Scale(std, 1.0, r_out if family == "sgd" else 1.0, mean)


def attention_scale(parametrization: str, head_dim: int, base_head_dim: int | None = None):
    """The multiplier of the attention logits ``q . k``: ``1/sqrt(d)`` (Vaswani et al. 2017)
    for ``standard`` and ``ntk``, ``1/d`` for ``mup`` (Yang et al. 2022, Sec. 4 and
    Table 3), written ``sqrt(d_0)/d`` with ``d_0`` the base head dimension so that it is
    ``standard``'s at the base shapes."""
    check(parametrization)
    if parametrization != "mup":
        return 1.0 / math.sqrt(head_dim)
    base = head_dim if base_head_dim is None else base_head_dim
    return math.sqrt(base) / head_dim

