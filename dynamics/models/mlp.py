"""``MLP``: the fully connected network, its scales set by its parametrization."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from dynamics import activations, low_rank, parametrization
from dynamics.checks import check_bool, check_int, is_real


@dataclasses.dataclass(frozen=True)
class Layer:
    """The public description of one weight layer of an ``MLP``: what the kernels, the
    DMFT and the parametrization's rules read (never the model's private methods).

    ``index`` counts weight layers from 0; ``role`` is ``"input"``, ``"hidden"`` or
    ``"readout"`` (a depth-0 network's one layer is its readout); ``activation`` is the
    one applied to the layer's input (``None`` for the first layer); ``scale`` holds the
    init standard deviations and the forward and learning-rate multipliers of
    ``dynamics.parametrization``."""

    index: int
    role: str
    fan_in: int
    fan_out: int
    activation: str | None
    scale: parametrization.LayerScale


@dataclasses.dataclass(frozen=True)
class MLP:
    """A fully connected network, its scales set by ``parametrization``.

    ``depth`` is the number of hidden layers (``depth = 0`` is a linear model
    ``g = m_0 W^0 x + beta_0 b^0``), ``width`` their size ``N``. The forward pass, the
    initial distributions and the per-layer learning rates of ``"standard"``, ``"ntk"`` and
    ``"mup"`` (with ``gamma0``) are written in ``dynamics.parametrization``; the output
    scale ``alpha`` and the centering are applied by the loop, in one place
    (``dynamics.models.base``). Inputs with several trailing axes (images) are flattened:
    the fan-in of the first layer is their size.

    ``zero_readout=True`` initialises the readout's weights and bias at zero (microsoft/mup's
    ``MuReadout(readout_zero_init=True)``; Yang et al. 2022, Sec. D.2): the outputs start
    at zero, the hidden layers get no gradient in the first step, and the output's change
    has no ``O(1/sqrt N)`` part from the initial readout times the features' change.

    ``bias=False, readout_bias=True`` gives the readout alone a bias (``g = m_L W^L phi +
    beta_L b^L`` on bias-free hidden layers: the "last-layer bias" of the unconstrained
    features models, Dang et al. 2023, Sec. 3); ``has_bias(l)`` says which layers have one.

    ``init_rank = r > 0`` initialises weight layer ``init_rank_layer`` (0 the first,
    ``depth`` the readout) at rank ``r`` and at the expected Frobenius norm of its default
    draw, ``weight_std sqrt(fan_in fan_out)``: the truncated SVD of a Gaussian draw,
    rescaled (``dynamics.low_rank``; the fixed-norm low-rank connectivity of Liu et al.
    2024). ``init_rank = 0`` (the default) is the usual i.i.d. Gaussian draw. The
    infinite-width kernels (``kernels.nngp``/``ntk``) assume the i.i.d. draw.

    ``params`` is a tuple over layers of ``{"w": (n_in, n_out), "b": (n_out,)}`` (``"b"``
    only in the layers with a bias).
    """

    width: int = 256
    depth: int = 1
    out_dim: int = 1
    activation: str = "relu"
    parametrization: str = "ntk"
    output_scale: float = 1.0
    center: bool = False
    bias: bool = True
    sigma_w: float = 1.0
    sigma_b: float = 0.1
    gamma0: float = 1.0
    zero_readout: bool = False
    readout_bias: bool = False
    init_rank: int = 0
    init_rank_layer: int = 0

    def __post_init__(self):
        check_int("width", self.width)
        check_int("depth", self.depth, minimum=0)
        check_int("out_dim", self.out_dim)
        activations.get(self.activation)
        parametrization.check(self.parametrization)
        check_bool("center", self.center)
        check_bool("bias", self.bias)
        check_bool("zero_readout", self.zero_readout)
        check_bool("readout_bias", self.readout_bias)
        check_int("init_rank", self.init_rank, minimum=0)
        check_int("init_rank_layer", self.init_rank_layer, minimum=0)
        if self.init_rank_layer > self.depth:
            raise ValueError(f"init_rank_layer must be <= depth={self.depth} (a weight layer: "
                             f"0 the first, depth the readout), got {self.init_rank_layer}")
        self.check_hparams(
            {k: getattr(self, k) for k in ("output_scale", "sigma_w", "sigma_b", "gamma0")}
        )

    @staticmethod
    def check_hparams(values: Mapping[str, Any]) -> None:
        """Range checks of the float fields (concrete values only)."""
        lower = {"output_scale": 0.0, "sigma_w": 0.0, "gamma0": 0.0}
        for name, value in values.items():
            if not is_real(value):
                raise ValueError(f"{name} must be a real number, got {value!r}")
            if name in lower and not value > lower[name]:
                raise ValueError(f"{name} must be > 0, got {value!r}")
            if name == "sigma_b" and not value >= 0:
                raise ValueError(f"sigma_b must be >= 0, got {value!r}")

    # -- description --------------------------------------------------------------------

    def hparams(self) -> dict[str, float]:
        names = ["output_scale", "sigma_w"]
        # ConvNet borrows this method and has no readout-only bias
        if self.bias or getattr(self, "readout_bias", False):
            names.append("sigma_b")
        if self.parametrization == "mup":
            names.append("gamma0")
        return {n: float(getattr(self, n)) for n in names}

    def values(self, hparams: Mapping | None = None) -> dict:
        """Every scale the layers need: the swept values (defaults overridden by
        ``hparams``), ``sigma_b = 0`` without biases and the field ``gamma0`` when it is
        not swept."""
        hp = self.hparams()
        if hparams:
            hp.update({k: v for k, v in hparams.items() if k in hp})
        hp.setdefault("sigma_b", 0.0)
        hp.setdefault("gamma0", self.gamma0)
        return hp

    def has_bias(self, index: int) -> bool:
        """Whether weight layer ``index`` (0 the first, ``depth`` the readout) has a bias:
        every layer with ``bias``, the readout alone with ``readout_bias``."""
        return self.bias or (self.readout_bias and index == self.depth)

    def fan_ins(self, in_dim: int) -> tuple[int, ...]:
        return (in_dim,) + (self.width,) * self.depth

    def layers(self, in_dim: int, hparams: Mapping | None = None, family: str = "sgd"
               ) -> tuple[Layer, ...]:
        """The description of every weight layer for inputs of ``in_dim`` features (the
        learning-rate multipliers those of the optimizer ``family``, "sgd" or "adam")."""
        hp = self.values(hparams)
        fan_ins = self.fan_ins(in_dim)
        fan_outs = fan_ins[1:] + (self.out_dim,)
        scales = parametrization.layer_scales(
            self.parametrization, fan_ins, hp["sigma_w"], hp["sigma_b"], hp["gamma0"], family
        )
        out = []
        for l, (n_in, n_out, s) in enumerate(zip(fan_ins, fan_outs, scales)):
            role = "readout" if l == self.depth else ("input" if l == 0 else "hidden")
            if role == "readout" and self.zero_readout:
                s = dataclasses.replace(s, weight_std=0.0, bias_std=0.0)
            out.append(Layer(l, role, n_in, n_out, None if l == 0 else self.activation, s))
        return tuple(out)


    # -- the protocol -----------------------------------------------------------------

    @staticmethod
    def _flat(x):
        return x if x.ndim == 2 else x.reshape(x.shape[0], -1)

    def init(self, key, x, hparams: Mapping | None = None):
        if jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError("MLP inputs must be real numbers, got integer tokens: one-hot "
                             "encode them (e.g. modular_arithmetic(encoding='onehot')) or use "
                             "a model with an embedding")
        x = self._flat(x)
        layers = []
        for layer in self.layers(x.shape[-1], hparams):
            k_w, k_b = jax.random.split(jax.random.fold_in(key, layer.index))
            s = layer.scale
            shape = (layer.fan_in, layer.fan_out)
            if self.init_rank and layer.index == self.init_rank_layer:
                low_rank.check_rank("init_rank", self.init_rank, shape)
                w = low_rank.low_rank_weight(k_w, shape, self.init_rank,
                                             math.sqrt(shape[0] * shape[1]), dtype=x.dtype)
                params = {"w": s.weight_std * w}
            else:
                params = {"w": s.weight_std * jax.random.normal(k_w, shape, x.dtype)}
            if self.has_bias(layer.index):
                params["b"] = s.bias_std * jax.random.normal(k_b, (layer.fan_out,), x.dtype)
            layers.append(params)
        return tuple(layers)

    def apply(self, params, x, hparams: Mapping | None = None):
        return self.activations(params, x, hparams)[f"layer{len(params) - 1}"]

    def lr_multipliers(self, params, hparams: Mapping | None = None, family: str = "sgd"):
        in_dim = params[0]["w"].shape[0]
        s = lambda layer, name: (layer.scale.lr_multiplier if name == "w"  # noqa: E731
                                 else layer.scale.bias_lr_multiplier)
        return tuple({name: s(layer, name) for name in p}
                     for layer, p in zip(self.layers(in_dim, hparams, family), params))

    def activations(self, params, x, hparams: Mapping | None = None) -> dict:
        """Every layer's output, in forward order: ``"layer{l}"`` the pre-activations
        ``h^{l+1}`` of weight layer ``l`` (the last is the network's raw output ``g``),
        for the coordinate check (``dynamics.observables.CoordinateCheck``)."""
        x = self._flat(x)
        phi = activations.get(self.activation)
        h, out = x, {}
        for layer, p in zip(self.layers(x.shape[-1], hparams), params):
            if layer.index > 0:
                h = phi(h)
            h = layer.scale.multiplier * (h @ p["w"])
            if self.has_bias(layer.index):
                h = h + layer.scale.bias_multiplier * p["b"]
            out[f"layer{layer.index}"] = h
        return out

    def roles(self, params):
        in_dim = params[0]["w"].shape[0]
        return tuple({name: layer.role if name == "w" else "bias" for name in p}
                     for layer, p in zip(self.layers(in_dim), params))

    def config(self) -> dict:
        return {"model": "MLP", **dataclasses.asdict(self)}
