r"""``ResidualMLP``: a pre-activation residual network, its scales set by its
parametrization and its branches by a depth rule.

With ``L = depth`` residual blocks of width ``N`` on inputs of ``D`` features:

.. math::

    h^1 = m_0 W^0 x + \beta_0 b^0, \qquad
    h^{l+1} = h^l + b_L \bigl(m_l W^l \phi(h^l) + \beta_l b^l\bigr) \quad (l = 1..L), \qquad
    g = m_{L+1} W^{L+1} \phi(h^{L+1}) + \beta_{L+1} b^{L+1},

the pre-activation block of He et al. (2016, "Identity mappings in deep residual
networks", eq. 3 with the activation before the weights) with one weight layer per
branch. The scales ``s_l, m_l, t_l, beta_l, c_l`` of the ``L + 2`` weight layers are those
of an MLP with fan-ins ``(D, N, ..., N)`` (``dynamics.parametrization.layer_scales``), so
``"standard"``, ``"ntk"`` and ``"mup"`` (with ``gamma0``: the readout divided by
``gamma0 sqrt(N)``, learning rates times ``gamma0^2 N`` for SGD) mean what they mean for
``dynamics.MLP``.

The branch multiplier is

.. math::

    b_L = \text{branch\_scale} \cdot L^{-\text{depth\_exponent}},

``depth_exponent`` 0, 1/2 or 1. With ``1/2`` (``b_L = beta_0 / sqrt(L)``) it is the
depth-muP residual network of Bordelon, Noci, Li, Hanin & Pehlevan (2023, "Depthwise
hyperparameter transfer in residual networks": branches ``beta_0 / sqrt(L)``, hidden
weights ``W / sqrt(N)``, readout ``1 / (gamma0 N)``) and of Yang, Yu, Zhu & Hayou (2023,
"Tensor Programs VI: feature learning in infinite-depth neural networks": Depth-muP, the
block multiplier ``a / sqrt(L)``): the variance of ``h^{L+1}`` stays ``O(1)`` as ``L``
grows (it is ``prod_l (1 + b_L^2 ...)``, bounded by ``exp(branch_scale^2 ...)``). With
``0`` the variance grows geometrically in ``L``; with ``1`` the blocks add ``O(1/L)`` to
it in all, and at initialisation the network tends to its input and readout layers. The
learning-rate multipliers are the width table's (``dynamics.parametrization``) whatever
the depth rule: for SGD,
``1/sqrt(L)`` branches need none (Bordelon et al. 2023); a depth-dependent learning
rate (Tensor Programs VI's for Adam) is the user's ``lr``.

``params`` is a tuple over the ``L + 2`` weight layers of ``{"w": (n_in, n_out),
"b": (n_out,)}`` (input, blocks, readout).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from dynamics import activations, parametrization
from dynamics.checks import check_bool, check_int
from dynamics.models.mlp import MLP, Layer

DEPTH_EXPONENTS = (0.0, 0.5, 1.0)


def branch_multiplier(depth: int, branch_scale, depth_exponent):
    """``b_L = branch_scale * depth^(-depth_exponent)`` (may be traced)."""
    return branch_scale * jnp.power(float(depth), -jnp.asarray(depth_exponent))


@dataclasses.dataclass(frozen=True)
class ResidualMLP:
    """A residual MLP: an input layer ``D -> N``, ``depth`` pre-activation residual blocks
    of width ``N`` with branch multiplier ``branch_scale * depth^(-depth_exponent)``, and a
    readout ``N -> out_dim`` on ``phi(h^{L+1})``. See the module doc."""

    width: int = 256
    depth: int = 2
    out_dim: int = 1
    activation: str = "relu"
    parametrization: str = "ntk"
    output_scale: float = 1.0
    center: bool = False
    bias: bool = True
    sigma_w: float = 1.0
    sigma_b: float = 0.1
    gamma0: float = 1.0
    branch_scale: float = 1.0
    depth_exponent: float = 0.5

    def __post_init__(self):
        check_int("width", self.width)
        check_int("depth", self.depth)
        check_int("out_dim", self.out_dim)
        activations.get(self.activation)
        parametrization.check(self.parametrization)
        check_bool("center", self.center)
        check_bool("bias", self.bias)
        self.check_hparams({k: getattr(self, k) for k in (
            "output_scale", "sigma_w", "sigma_b", "gamma0", "branch_scale", "depth_exponent")})

    @staticmethod
    def check_hparams(values: Mapping[str, Any]) -> None:
        """Range checks of the float fields (concrete values only): the MLP's, and
        ``branch_scale > 0``, ``depth_exponent`` one of 0, 0.5, 1."""
        MLP.check_hparams({k: v for k, v in values.items()
                           if k not in ("branch_scale", "depth_exponent")})
        extra = {k: values[k] for k in ("branch_scale", "depth_exponent") if k in values}
        MLP.check_hparams(extra)  # real numbers
        if "branch_scale" in extra and not extra["branch_scale"] > 0:
            raise ValueError(f"branch_scale must be > 0, got {extra['branch_scale']!r}")
        if "depth_exponent" in extra and float(extra["depth_exponent"]) not in DEPTH_EXPONENTS:
            raise ValueError(f"depth_exponent must be one of {list(DEPTH_EXPONENTS)} "
                             f"(branches 1, 1/sqrt(depth), 1/depth), got "
                             f"{extra['depth_exponent']!r}")

    # -- description --------------------------------------------------------------------

    def hparams(self) -> dict[str, float]:
        names = ["output_scale", "sigma_w"]
        if self.bias:
            names.append("sigma_b")
        if self.parametrization == "mup":
            names.append("gamma0")
        names += ["branch_scale", "depth_exponent"]
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

    def branch(self, hparams: Mapping | None = None):
        """The branch multiplier ``b_L`` at the swept values."""
        hp = self.values(hparams)
        return branch_multiplier(self.depth, hp["branch_scale"], hp["depth_exponent"])

    def layers(self, in_dim: int, hparams: Mapping | None = None, family: str = "sgd"
               ) -> tuple[Layer, ...]:
        """The ``depth + 2`` weight layers (input, the blocks' ``"hidden"`` layers,
        readout) for inputs of ``in_dim`` features, their scales those of an MLP with
        fan-ins ``(in_dim, N, ..., N)`` and the optimizer ``family``. The block layers'
        forward multiplier does not include the branch multiplier (:meth:`branch`)."""
        hp = self.values(hparams)
        fan_ins = (in_dim,) + (self.width,) * (self.depth + 1)
        fan_outs = fan_ins[1:] + (self.out_dim,)
        scales = parametrization.layer_scales(
            self.parametrization, fan_ins, hp["sigma_w"], hp["sigma_b"], hp["gamma0"], family)
        last = len(fan_ins) - 1
        return tuple(
            Layer(l, "readout" if l == last else ("input" if l == 0 else "hidden"), n_in,
                  n_out, None if l == 0 else self.activation, s)
            for l, (n_in, n_out, s) in enumerate(zip(fan_ins, fan_outs, scales)))


    # -- the protocol -----------------------------------------------------------------

    @staticmethod
    def _flat(x):
        return x if x.ndim == 2 else x.reshape(x.shape[0], -1)

    def init(self, key, x, hparams: Mapping | None = None):
        if jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError("ResidualMLP inputs must be real numbers, got integer tokens: "
                             "one-hot encode them or use a model with an embedding")
        x = self._flat(x)
        out = []
        for layer in self.layers(x.shape[-1], hparams):
            k_w, k_b = jax.random.split(jax.random.fold_in(key, layer.index))
            s = layer.scale
            p = {"w": s.weight_std * jax.random.normal(k_w, (layer.fan_in, layer.fan_out),
                                                       x.dtype)}
            if self.bias:
                p["b"] = s.bias_std * jax.random.normal(k_b, (layer.fan_out,), x.dtype)
            out.append(p)
        return tuple(out)

    def apply(self, params, x, hparams: Mapping | None = None):
        return self.activations(params, x, hparams)[f"layer{len(params) - 1}"]

    def activations(self, params, x, hparams: Mapping | None = None) -> dict:
        """Every layer's output in forward order: ``"layer0"`` is ``h^1``, ``"layer{l}"``
        the residual stream ``h^{l+1}`` after block ``l``, the last the raw output ``g``
        (the coordinate check)."""
        x = self._flat(x)
        phi = activations.get(self.activation)
        b = self.branch(hparams)
        layers = self.layers(x.shape[-1], hparams)
        out = {}
        h = x
        for layer, p in zip(layers, params):
            s = layer.scale
            u = h if layer.index == 0 else phi(h)
            u = s.multiplier * (u @ p["w"])
            if self.bias:
                u = u + s.bias_multiplier * p["b"]
            h = h + b * u if layer.role == "hidden" else u
            out[f"layer{layer.index}"] = h
        return out

    def lr_multipliers(self, params, hparams: Mapping | None = None, family: str = "sgd"):
        in_dim = params[0]["w"].shape[0]
        return tuple({name: (layer.scale.lr_multiplier if name == "w"
                             else layer.scale.bias_lr_multiplier) for name in p}
                     for layer, p in zip(self.layers(in_dim, hparams, family), params))

    def roles(self, params):
        in_dim = params[0]["w"].shape[0]
        return tuple({name: layer.role if name == "w" else "bias" for name in p}
                     for layer, p in zip(self.layers(in_dim), params))

    def config(self) -> dict:
        return {"model": "ResidualMLP", **dataclasses.asdict(self)}
