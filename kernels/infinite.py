r"""Infinite-width NNGP and NTK of the ``dynamics.MLP`` the simulator trains (and, by
dispatch on the model, of ``ResidualMLP`` and ``ConvNet``: ``kernels.residual``,
``kernels.convolutional``, which reuse the one-layer step :func:`layer_step`).

Layer ``l`` of the MLP (``dynamics.parametrization``) is
``h^{l+1} = m_l W^l phi(h^l) + beta_l b^l`` with ``W^l_ij ~ N(0, s_l^2)``,
``b^l_i ~ N(0, t_l^2)``, fan-in ``n_l`` (``phi(h^0) = x``, ``n_0 = D``), and
``f = alpha h^{L+1}``. As the hidden widths go to infinity the pre-activations are a
Gaussian process (Neal 1996; Lee et al. 2018, eq. 4-5) and the NTK is deterministic
(Jacot, Gabriel & Hongler 2018, Thm 1; Arora et al. 2019, eq. 9). Written for every
parametrization at once through the layer scales:

.. math::

    \Sigma^{1} &= m_0^2 s_0^2 n_0\, \frac{x\cdot x'}{D} + \beta_0^2 t_0^2, \qquad
    \Theta^{1} = m_0^2 n_0\, \frac{x\cdot x'}{D} + \beta_0^2, \\
    \Sigma^{l+1} &= m_l^2 s_l^2 n_l\, k(\Sigma^l) + \beta_l^2 t_l^2, \qquad
    \Theta^{l+1} = m_l^2 n_l\, k(\Sigma^l) + \beta_l^2
                   + m_l^2 s_l^2 n_l\, \dot k(\Sigma^l)\, \Theta^l,

with ``(k, kdot)`` the dual activation of ``kernels.activation_duals`` and
``nngp = alpha^2 Sigma^{L+1}``, ``ntk = alpha^2 Theta^{L+1}`` (the ``beta`` terms only with
``bias=True``). The ``Theta`` recursion is the expectation of the empirical NTK
``J J^T`` at initialisation, term by term: the gradient in ``W^l`` gives
``m_l^2 n_l (1/n_l) phi . phi'``, in ``b^l`` gives ``beta_l^2``, and back-propagation
through ``W^l`` multiplies ``Theta^l`` by ``m_l^2 s_l^2 n_l kdot``. Per parametrization:

* ``ntk`` (``m = sigma_w/sqrt(n)``, ``s = 1``): ``Sigma^{l+1} = sigma_w^2 k + sigma_b^2``,
  ``Theta^{l+1} = Sigma^{l+1} + sigma_w^2 kdot Theta^l`` -- width-independent; this is the
  limit of ``empirical_ntk(..., trace=True)`` and equals neural-tangents'
  ``stax.Dense(N, W_std=sigma_w, b_std=sigma_b, parameterization="ntk")``.
* ``standard`` (``m = 1``, ``s = sigma_w/sqrt(n)``): same NNGP; the NTK is
  ``Theta^{l+1} = n_l k + 1 + sigma_w^2 kdot Theta^l`` and grows linearly with the model's
  ``width``: there is no finite limit, and ``ntk`` returns this leading-order mean of the
  empirical NTK at the model's width (the ratio of the two tends to 1), which is
  neural-tangents' ``parameterization="standard"`` kernel (Sohl-Dickstein et al. 2020).
* ``mup`` (Bordelon & Pehlevan 2022): the ``ntk`` recursion with the readout divided by
  ``gamma0 sqrt(N)``, so both kernels are the NTK parametrization's divided by
  ``gamma0^2 N``: they degenerate (tend to 0 like ``1/N``) because outputs at
  initialisation vanish and each parameter moves the output by ``O(1/N)``; training is
  driven by the learning-rate-weighted kernel ``gamma0^2 N * ntk``, which is the NTK
  parametrization's limit. ``lr_weighted=True`` returns the kernel weighted by the
  model's learning-rate multipliers (``c_l``, the same in every layer of an MLP), i.e. the
  kernel of ``df/dt = -(2/P) lr K (f - y)``; under ``mup`` it is finite, but the network
  leaves the kernel regime (features move by ``O(gamma0)``), so it only describes
  the ``gamma0 -> 0`` limit.

Inputs enter through ``x . x' / D`` (the input dimension ``D``), as in neural-tangents.
``center=True`` does not change the NTK; the centred network's outputs at initialisation
are exactly zero, so its NNGP is zero; ``nngp`` returns the covariance of
``alpha g(theta0, x)`` (the uncentred outputs) and ``kernels.predict`` treats centring.

Kernel linear algebra is cheap: everything here runs in the dtype of ``x`` (use float64,
``jax.enable_x64(True)``, for oracle comparisons).
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp

from kernels import activation_duals


def _check(model, x1, x2):
    if not hasattr(model, "layers") or not hasattr(model, "fan_ins"):
        raise ValueError(f"model must be a dynamics.MLP, ResidualMLP or ConvNet, got "
                         f"{type(model).__name__}: infinite-width kernels need its layer "
                         "scales (use kernels.empirical_ntk for other models)")
    check_features(x1, x2)


def check_features(x1, x2):
    """``x1`` and ``x2`` are 2-D with the same number of features."""
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and jnp.ndim(x) != 2:
            raise ValueError(f"{name} must be 2-D (examples, features), got shape "
                             f"{jnp.shape(x)}")
    if x2 is not None and jnp.shape(x2)[-1] != jnp.shape(x1)[-1]:
        raise ValueError(f"x2 must have {jnp.shape(x1)[-1]} features like x1, got "
                         f"{jnp.shape(x2)[-1]}")


def as_inputs(x1, x2):
    """``x1``, ``x2`` as arrays of one floating dtype (``x2`` may be None)."""
    x1 = jnp.asarray(x1)
    if not jnp.issubdtype(x1.dtype, jnp.floating):
        x1 = x1.astype(jnp.float32)
    return x1, None if x2 is None else jnp.asarray(x2, x1.dtype)


def layer_step(layer, bias: bool, k12, k11, k22, kdot_theta=None):
    """One weight layer of the recursion of the module doc: from the post-activation
    kernels ``k12 = k(Sigma^l)(x1, x2)`` and the diagonals ``k11``, ``k22`` (for a
    convolution: averaged over the filter's window) and ``kdot_theta = kdot(Sigma^l)
    Theta^l`` (None for the first layer), the pre-activation kernels
    ``(Sigma12, Sigma11, Sigma22)`` and ``Theta`` of the layer's outputs."""
    n, s = layer.fan_in, layer.scale
    wvar = s.multiplier**2 * s.weight_std**2 * n
    bvar = (s.bias_multiplier * s.bias_std) ** 2 if bias else 0.0
    theta = s.multiplier**2 * n * k12 + (s.bias_multiplier**2 if bias else 0.0)
    if kdot_theta is not None:
        theta = theta + wvar * kdot_theta
    return (wvar * k12 + bvar, wvar * k11 + bvar, wvar * k22 + bvar), theta


def kernels(model, x1, x2=None, hparams: Mapping | None = None, *, activation=None,
            lr_weighted: bool = False):
    """``(nngp, ntk)``, both ``(n1, n2)``: the recursion of the module doc.

    ``activation`` overrides the model's (a name or an ``activation_duals.Dual``, e.g.
    ``activation_duals.abrelu(a, b)``). A ``ResidualMLP`` or a ``ConvNet`` goes to its own
    recursion (``kernels.residual``, ``kernels.convolutional``)."""
    from dynamics.models.convnet import ConvNet
    from dynamics.models.residual import ResidualMLP
    from kernels import convolutional, residual

    for kind, module in ((ResidualMLP, residual), (ConvNet, convolutional)):
        if isinstance(model, kind):
            return module.kernels(model, x1, x2, hparams, activation=activation,
                                  lr_weighted=lr_weighted)
    _check(model, x1, x2)
    x1, x2 = as_inputs(x1, x2)
    dual = activation_duals.get(model.activation if activation is None else activation)
    hp = model.values(hparams)
    d = x1.shape[-1]
    layers = model.layers(d, hp)

    # Layer-0 "post-activation" kernel: the inputs, x . x' / D.
    same = x2 is None
    xb = x1 if same else x2
    e12 = x1 @ xb.T / d
    e11 = jnp.sum(x1 * x1, -1) / d
    e22 = e11 if same else jnp.sum(xb * xb, -1) / d
    sigma, theta = layer_step(layers[0], model.has_bias(0), e12, e11, e22)
    for layer in layers[1:]:
        (e12, edot12), (e11, _), (e22, _) = (
            dual(sigma[1][:, None], sigma[2][None, :], sigma[0]),
            dual(sigma[1], sigma[1], sigma[1]),
            dual(sigma[2], sigma[2], sigma[2]),
        )
        sigma, theta = layer_step(layer, model.has_bias(layer.index), e12, e11, e22, edot12 * theta)
    alpha2 = hp["output_scale"] ** 2
    nngp, ntk = alpha2 * sigma[0], alpha2 * theta
    if lr_weighted:
        ntk = ntk * layers[-1].scale.lr_multiplier
    return nngp, ntk


def nngp(model, x1, x2=None, hparams: Mapping | None = None, *, activation=None):
    """The infinite-width NNGP ``E[f(x1) f(x2)]`` at initialisation, ``(n1, n2)`` (per
    output; outputs are independent). See the module doc."""
    return kernels(model, x1, x2, hparams, activation=activation)[0]


def ntk(model, x1, x2=None, hparams: Mapping | None = None, *, activation=None,
        lr_weighted: bool = False):
    """The infinite-width NTK, ``(n1, n2)``: the width -> infinity limit of
    ``empirical_ntk(lambda p, x: apply_scaled(model, p, x, hp), params, x1, x2,
    trace=True)`` (``dynamics.models.apply_scaled``) at
    initialisation (its leading-order mean at the model's width under ``standard`` and
    ``mup``, see the module doc)."""
    return kernels(model, x1, x2, hparams, activation=activation, lr_weighted=lr_weighted)[1]
