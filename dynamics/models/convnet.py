r"""``ConvNet``: a convolutional network with global average pooling, its scales set by its
parametrization.

Images ``x`` of shape ``(batch, H, W, C)`` (NHWC) go through ``depth`` convolutions with
``k x k`` filters (``kernel_size``), stride 1 and SAME zero padding, ``width`` channels
each, the activation after each, a global average pooling over the ``H W`` pixels and a
dense readout:

.. math::

    h^1_p = m_0 \sum_{\delta, c} W^0_{\delta c}\, x_{p + \delta, c} + \beta_0 b^0, \qquad
    h^{l+1}_p = m_l \sum_{\delta, c} W^l_{\delta c}\, \phi(h^l)_{p + \delta, c}
                + \beta_l b^l, \qquad
    g = m_L W^L \frac{1}{HW} \sum_p \phi(h^L_p) + \beta_L b^L,

with ``p`` a pixel, ``delta`` running over the ``k x k`` window centred on it and pixels
outside the image zero. The scales ``s_l, m_l, t_l, beta_l`` are those of
``dynamics.parametrization.layer_scales`` with the fan-ins of the layers, ``C k^2`` for the
first convolution, ``N k^2`` for the others and ``N`` for the readout (the numbers of
inputs each output sums over; Novak et al. 2019, eq. 3, and Arora et al. 2019, Sec. 4 use
the same ``1/sqrt(C k^2)`` in the NTK parametrization). The learning-rate multipliers are
the same table's with the width ratios of the layers: SGD's do not depend on fan-ins but
through ``gamma0^2 N`` under ``mup``; Adam's read the numbers of channels
``(C, N, ..., N)`` (the ``k^2`` of a filter does not grow with width), so the table of
``dynamics.parametrization`` holds for convolutions as written for dense layers.

``params`` is a tuple over layers: ``{"w": (k, k, C_in, C_out), "b": (C_out,)}`` for
each convolution and ``{"w": (N, out_dim), "b": (out_dim,)}`` for the readout.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from dynamics import activations, parametrization
from dynamics.checks import check_bool, check_int
from dynamics.models.mlp import MLP, Layer


def check_images(name: str, x) -> None:
    """Images must be a real ``(batch, H, W, C)`` array."""
    if jnp.ndim(x) != 4:
        raise ValueError(f"{name} must be images of shape (batch, H, W, C), got shape "
                         f"{jnp.shape(x)}")
    if jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer):
        raise ValueError(f"{name} must be real numbers, got integers")


def conv(x, w):
    """Stride-1, SAME zero-padded convolution (cross-correlation, as
    ``jax.lax.conv_general_dilated``) of NHWC images with HWIO filters, written as one
    matrix product of the ``k x k`` patches (im2col): the patch of pixel ``p`` is
    ``(x_{p + delta, c})`` ordered ``(delta_h, delta_w, c)`` like the filter's reshape to
    ``(k^2 C_in, C_out)``. The derivatives are slices and matrix products; those of the
    convolution primitive under a per-example ``vmap`` of ``jacrev`` inside a sharded
    sweep hit an unimplemented batching rule of JAX's grouped convolutions (JAX 0.10)."""
    k, _, c_in, c_out = w.shape
    r = (k - 1) // 2
    h, wd = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    patches = jnp.concatenate([xp[:, i:i + h, j:j + wd, :] for i in range(k) for j in range(k)],
                              axis=-1)
    return patches @ w.reshape(k * k * c_in, c_out)


@dataclasses.dataclass(frozen=True)
class ConvNet:
    """``depth`` ``k x k`` convolutions of ``width`` channels (SAME padding, stride 1),
    the activation after each, global average pooling, a dense readout. See the module
    doc."""

    width: int = 64
    depth: int = 2
    out_dim: int = 1
    kernel_size: int = 3
    activation: str = "relu"
    parametrization: str = "ntk"
    output_scale: float = 1.0
    center: bool = False
    bias: bool = True
    sigma_w: float = 1.0
    sigma_b: float = 0.1
    gamma0: float = 1.0

    def __post_init__(self):
        check_int("width", self.width)
        check_int("depth", self.depth)
        check_int("out_dim", self.out_dim)
        check_int("kernel_size", self.kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a window centred on each pixel), got "
                             f"{self.kernel_size}")
        activations.get(self.activation)
        parametrization.check(self.parametrization)
        check_bool("center", self.center)
        check_bool("bias", self.bias)
        self.check_hparams({k: getattr(self, k) for k in
                            ("output_scale", "sigma_w", "sigma_b", "gamma0")})

    check_hparams = staticmethod(MLP.check_hparams)
    hparams = MLP.hparams
    values = MLP.values

    # -- description --------------------------------------------------------------------

    def layers(self, channels: int, hparams: Mapping | None = None, family: str = "sgd"
               ) -> tuple[Layer, ...]:
        """The ``depth`` convolutions (roles ``"input"``, ``"hidden"``; ``fan_in`` is
        ``C_in k^2``, ``fan_out`` the output channels) and the readout, for images of
        ``channels`` channels (see the module doc for the scales)."""
        hp = self.values(hparams)
        k2 = self.kernel_size**2
        chans = (channels,) + (self.width,) * self.depth
        fan_ins = tuple(c * k2 for c in chans[:-1]) + (self.width,)
        fan_outs = chans[1:] + (self.out_dim,)
        scales = parametrization.layer_scales(
            self.parametrization, fan_ins, hp["sigma_w"], hp["sigma_b"], hp["gamma0"])
        # the learning rates: the same table on the width ratios (channels)
        lrs = parametrization.layer_scales(
            self.parametrization, chans, hp["sigma_w"], hp["sigma_b"], hp["gamma0"], family)
        out = []
        for l, (n_in, n_out, s, r) in enumerate(zip(fan_ins, fan_outs, scales, lrs)):
            role = "readout" if l == self.depth else ("input" if l == 0 else "hidden")
            s = dataclasses.replace(s, lr_multiplier=r.lr_multiplier,
                                    bias_lr_multiplier=r.bias_lr_multiplier)
            out.append(Layer(l, role, n_in, n_out, None if l == 0 else self.activation, s))
        return tuple(out)


    # -- the protocol -----------------------------------------------------------------

    def init(self, key, x, hparams: Mapping | None = None):
        check_images("ConvNet inputs", x)
        k = self.kernel_size
        out = []
        for layer in self.layers(x.shape[-1], hparams):
            k_w, k_b = jax.random.split(jax.random.fold_in(key, layer.index))
            s = layer.scale
            shape = ((layer.fan_in, layer.fan_out) if layer.role == "readout"
                     else (k, k, layer.fan_in // k**2, layer.fan_out))
            p = {"w": s.weight_std * jax.random.normal(k_w, shape, x.dtype)}
            if self.bias:
                p["b"] = s.bias_std * jax.random.normal(k_b, (layer.fan_out,), x.dtype)
            out.append(p)
        return tuple(out)

    def apply(self, params, x, hparams: Mapping | None = None):
        return self.activations(params, x, hparams)[f"layer{len(params) - 1}"]

    def activations(self, params, x, hparams: Mapping | None = None) -> dict:
        """Every layer's output in forward order: ``"layer{l}"`` the pre-activation
        feature maps ``h^{l+1}`` (batch, H, W, N) of convolution ``l``, the last the raw
        output ``g`` (the coordinate check)."""
        check_images("ConvNet inputs", x)
        phi = activations.get(self.activation)
        out = {}
        h = x
        for layer, p in zip(self.layers(x.shape[-1], hparams), params):
            s = layer.scale
            if layer.index > 0:
                h = phi(h)
            if layer.role == "readout":
                h = s.multiplier * (jnp.mean(h, axis=(1, 2)) @ p["w"])
            else:
                h = s.multiplier * conv(h, p["w"])
            if self.bias:
                h = h + s.bias_multiplier * p["b"]
            out[f"layer{layer.index}"] = h
        return out

    def lr_multipliers(self, params, hparams: Mapping | None = None, family: str = "sgd"):
        channels = params[0]["w"].shape[2]
        return tuple({name: (layer.scale.lr_multiplier if name == "w"
                             else layer.scale.bias_lr_multiplier) for name in p}
                     for layer, p in zip(self.layers(channels, hparams, family), params))

    def roles(self, params):
        channels = params[0]["w"].shape[2]
        return tuple({name: layer.role if name == "w" else "bias" for name in p}
                     for layer, p in zip(self.layers(channels), params))

    def config(self) -> dict:
        return {"model": "ConvNet", **dataclasses.asdict(self)}
