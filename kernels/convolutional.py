r"""Infinite-width NNGP and NTK of ``dynamics.models.convnet.ConvNet`` (the CNTK with global
average pooling).

As the number of channels goes to infinity the pre-activations of a convolutional network
are a Gaussian process indexed by (image, pixel) (Novak et al. 2019, "Bayesian deep
convolutional networks with many channels are Gaussian processes", Sec. 2; Garriga-Alonso
et al. 2019), and its NTK is deterministic (Arora et al. 2019, "On exact computation with
an infinitely wide neural net", Sec. 4 and Appendix B). For images ``x, x'`` of ``C``
channels, pixels ``p, p'`` and ``k x k`` filters with SAME zero padding, write the
patch operator

.. math::

    [\mathcal{A}(K)]_{p p'} = \frac{1}{k^2} \sum_{\delta} K_{p + \delta,\, p' + \delta}

(``delta`` over the window, terms outside the image zero; Arora et al. 2019, eq. 7 with
their ``tr(K_{D_{ij, i'j'}})`` and its ``1/q^2``). With the layer scales of
``dynamics.parametrization`` (``n_l = C_l k^2`` the fan-in), and the dual activation
``(k, kdot)`` of ``kernels.activation_duals`` taken pixel pair by pixel pair on
``(Sigma_{pp}(x, x), Sigma_{p'p'}(x', x'), Sigma_{pp'}(x, x'))``:

.. math::

    \Sigma^1_{pp'} &= m_0^2 s_0^2 n_0\, \mathcal{A}(x \cdot x' / C)_{pp'} + \beta_0^2 t_0^2,
    \qquad \Theta^1 = m_0^2 n_0\, \mathcal{A}(x \cdot x'/C) + \beta_0^2, \\
    \Sigma^{l+1} &= m_l^2 s_l^2 n_l\, \mathcal{A}(k(\Sigma^l)) + \beta_l^2 t_l^2, \qquad
    \Theta^{l+1} = m_l^2 n_l\, \mathcal{A}(k(\Sigma^l)) + \beta_l^2
                   + m_l^2 s_l^2 n_l\, \mathcal{A}(\dot k(\Sigma^l) \odot \Theta^l),

(Arora et al. 2019, eq. 7-9: ``Sigma^{(h)}``, ``K^{(h)}``, ``Kdot^{(h)}`` and
``Theta^{(h)}``), with ``(x . x')_{pp'} = sum_c x_{pc} x'_{p'c}``.
The global average pooling and the readout ``m_L W^L`` of fan-in ``N`` average over all
pixel pairs (Arora et al. 2019, the GAP formula of Sec. 4 / Appendix B,
``Theta_{GAP} = (1/P^2) sum_{p, p'} ...`` over the ``P = HW`` pixels):

.. math::

    \Sigma^{out} = m_L^2 s_L^2 N\, \overline{k(\Sigma^L)} + \beta_L^2 t_L^2, \qquad
    \Theta^{out} = m_L^2 N\, \overline{k(\Sigma^L)} + \beta_L^2
                   + m_L^2 s_L^2 N\, \overline{\dot k(\Sigma^L) \odot \Theta^L},

with ``overline`` the mean over ``(p, p')``, and ``nngp = alpha^2 Sigma^{out}``,
``ntk = alpha^2 Theta^{out}``. This is neural-tangents' ``stax.Conv(..., padding="SAME")``
stack with ``stax.GlobalAvgPool()`` and ``stax.Dense`` (the ``ntk`` parametrization; the
remarks of ``kernels.infinite`` on ``standard`` and ``mup`` hold as written).

Cost: the pixel-pair kernels are ``(n1, n2, H, W, H, W)`` arrays (only the pixel
variances ``(n, H, W)`` of each image with itself are needed), so memory and time grow
like ``n1 n2 (HW)^2 k^2``: small images (8 x 8 digits) and a few hundred examples.
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp

from dynamics.models.convnet import check_images
from kernels import activation_duals
from kernels.infinite import as_inputs, layer_step


def patch_average(k, size: int, axes):
    """``A(K)``: the mean over the ``size x size`` window of ``K`` shifted together along
    each pair of pixel axes in ``axes`` (``((h, w),)`` for a variance map,
    ``((h, w), (h', w'))`` for a pixel-pair kernel), zero outside the image."""
    r = (size - 1) // 2
    pad = [(0, 0)] * k.ndim
    for pair in axes:
        for a in pair:
            pad[a] = (r, r)
    kp = jnp.pad(k, pad)
    out = jnp.zeros_like(k)
    for di in range(-r, r + 1):
        for dj in range(-r, r + 1):
            index = [slice(None)] * k.ndim
            for (ah, aw) in axes:
                index[ah] = slice(r + di, r + di + k.shape[ah])
                index[aw] = slice(r + dj, r + dj + k.shape[aw])
            out = out + kp[tuple(index)]
    return out / size**2


def kernels(model, x1, x2=None, hparams: Mapping | None = None, *, activation=None,
            lr_weighted: bool = False):
    """``(nngp, ntk)``, both ``(n1, n2)``, of a ``ConvNet`` on images ``(n, H, W, C)``: the
    recursion of the module doc (arguments as ``kernels.infinite.kernels``)."""
    check_images("x1", x1)
    if x2 is not None:
        check_images("x2", x2)
        if jnp.shape(x2)[1:] != jnp.shape(x1)[1:]:
            raise ValueError(f"x2 must have images of shape {jnp.shape(x1)[1:]} like x1, "
                             f"got {jnp.shape(x2)[1:]}")
    x1, x2 = as_inputs(x1, x2)
    dual = activation_duals.get(model.activation if activation is None else activation)
    hp = model.values(hparams)
    c = x1.shape[-1]
    size = model.kernel_size
    layers = model.layers(c, hp)
    xb = x1 if x2 is None else x2
    pairs = ((2, 3), (4, 5))  # the pixel axes of (n1, n2, H, W, H, W)
    maps = ((1, 2),)          # of a variance map (n, H, W)

    e12 = jnp.einsum("aijc,bklc->abijkl", x1, xb) / c
    e11 = jnp.sum(x1 * x1, -1) / c
    e22 = jnp.sum(xb * xb, -1) / c
    sigma, theta = layer_step(layers[0], model.bias, patch_average(e12, size, pairs),
                              patch_average(e11, size, maps), patch_average(e22, size, maps))
    for layer in layers[1:]:
        s12, s11, s22 = sigma
        k12, kdot12 = dual(s11[:, None, :, :, None, None], s22[None, :, None, None, :, :],
                           s12)
        k11 = dual(s11, s11, s11)[0]
        k22 = dual(s22, s22, s22)[0]
        kdot_theta = kdot12 * theta
        if layer.role == "readout":
            mean = lambda a: jnp.mean(a, axis=(2, 3, 4, 5))  # noqa: E731
            # the readout's variances are not needed further: placeholders of the shape
            sigma, theta = layer_step(layer, model.bias, mean(k12), k11, k22,
                                      mean(kdot_theta))
        else:
            sigma, theta = layer_step(
                layer, model.bias, patch_average(k12, size, pairs),
                patch_average(k11, size, maps), patch_average(k22, size, maps),
                patch_average(kdot_theta, size, pairs))
    alpha2 = hp["output_scale"] ** 2
    nngp, ntk = alpha2 * sigma[0], alpha2 * theta
    if lr_weighted:
        ntk = ntk * layers[-1].scale.lr_multiplier
    return nngp, ntk
