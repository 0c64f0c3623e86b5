r"""Infinite-width NNGP and NTK of ``dynamics.models.residual.ResidualMLP``.

The residual stream ``h^{l+1} = h^l + b_L u^l``, ``u^l = m_l W^l phi(h^l) + beta_l b^l``,
adds a branch whose weights are independent of ``h^l`` and have mean zero, so in the
infinite-width limit ``h^l`` and ``u^l`` are uncorrelated Gaussian processes and their
covariances and tangent kernels add: the cross terms ``E[h^l u^l]`` and
``<dh^l, du^l>`` are sums of ``N`` terms with one factor ``W^l_ij`` of mean zero and
vanish as ``N -> infinity`` (the rule of neural-tangents' ``FanInSum`` over parallel
branches, Novak et al. 2020, "Neural Tangents", Sec. 3). With
``Sigma^l``, ``Theta^l`` the kernels of ``h^l`` and the single-layer step of
``kernels.infinite`` (Lee et al. 2018, eq. 4-5; Jacot et al. 2018, Thm 1):

.. math::

    \Sigma^1, \Theta^1 &= \text{the input layer (as for the MLP)}, \\
    \Sigma^{l+1} &= \Sigma^l + b_L^2 \bigl(m_l^2 s_l^2 n_l\, k(\Sigma^l)
                    + \beta_l^2 t_l^2\bigr), \\
    \Theta^{l+1} &= \Theta^l + b_L^2 \bigl(m_l^2 n_l\, k(\Sigma^l) + \beta_l^2
                    + m_l^2 s_l^2 n_l\, \dot k(\Sigma^l)\, \Theta^l\bigr),

``l = 1..L``, and the readout on ``phi(h^{L+1})`` is the MLP's last step;
``nngp = alpha^2 Sigma^{out}``, ``ntk = alpha^2 Theta^{out}``. The branch multiplier
``b_L = branch_scale * L^(-depth_exponent)`` (Bordelon et al. 2023, "Depthwise
hyperparameter transfer in residual networks"; Yang et al. 2023, "Tensor Programs VI")
enters squared: under ``depth_exponent = 1/2`` each block adds ``O(1/L)`` to the variance
and the kernels have a finite ``L -> infinity`` limit (Bordelon et al. 2023: the
infinite-depth kernels as a flow in layer time ``tau = l/L``; for a linear network the
product ``(1 + beta^2 sigma_w^2 / L)^L -> exp(beta^2 sigma_w^2)``). Per parametrization
the remarks of ``kernels.infinite`` hold as written (``standard``: the leading-order mean
at the model's width; ``mup``: the ``ntk`` kernels divided by ``gamma0^2 N``).
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp

from kernels import activation_duals
from kernels.infinite import as_inputs, check_features, layer_step


def kernels(model, x1, x2=None, hparams: Mapping | None = None, *, activation=None,
            lr_weighted: bool = False):
    """``(nngp, ntk)``, both ``(n1, n2)``, of a ``ResidualMLP``: the recursion of the
    module doc (arguments as ``kernels.infinite.kernels``)."""
    check_features(x1, x2)
    x1, x2 = as_inputs(x1, x2)
    dual = activation_duals.get(model.activation if activation is None else activation)
    hp = model.values(hparams)
    d = x1.shape[-1]
    layers = model.layers(d, hp)
    b2 = model.branch(hp) ** 2

    xb = x1 if x2 is None else x2
    e11 = jnp.sum(x1 * x1, -1) / d
    e22 = e11 if x2 is None else jnp.sum(xb * xb, -1) / d
    sigma, theta = layer_step(layers[0], model.bias, x1 @ xb.T / d, e11, e22)

    def post(sigma):
        (k12, kdot12), (k11, _), (k22, _) = (
            dual(sigma[1][:, None], sigma[2][None, :], sigma[0]),
            dual(sigma[1], sigma[1], sigma[1]),
            dual(sigma[2], sigma[2], sigma[2]),
        )
        return k12, k11, k22, kdot12

    for layer in layers[1:-1]:
        k12, k11, k22, kdot12 = post(sigma)
        branch, branch_theta = layer_step(layer, model.bias, k12, k11, k22, kdot12 * theta)
        sigma = tuple(a + b2 * b for a, b in zip(sigma, branch))
        theta = theta + b2 * branch_theta
    k12, k11, k22, kdot12 = post(sigma)
    sigma, theta = layer_step(layers[-1], model.bias, k12, k11, k22, kdot12 * theta)
    alpha2 = hp["output_scale"] ** 2
    nngp, ntk = alpha2 * sigma[0], alpha2 * theta
    if lr_weighted:
        ntk = ntk * layers[-1].scale.lr_multiplier
    return nngp, ntk
