"""Models: a pure ``init`` / ``apply`` pair plus what the training loop needs to know.

Every model the simulator trains follows one protocol (``MLP`` here, a user's flax module
through ``dynamics.flax_adapter``):

* ``hparams() -> dict``: the float fields that may be swept (traced values);
* ``init(key, x, hparams=None) -> params`` and ``apply(params, x, hparams=None)``:
  pure functions; ``apply`` returns ``output_scale * g(params, x)`` of shape
  ``(batch, out_dim)`` and never centres (the loop subtracts ``f(theta0, x)`` when
  ``center`` is set, see ``dynamics.loop``);
* ``lr_multipliers(params, hparams=None)``: per-leaf learning-rate multipliers;
* ``config()`` (JSON-able) and ``validate_data(x, out_dim)`` (raises ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping, Protocol

import jax
import jax.numpy as jnp

from dynamics import activations, parametrization


class Model(Protocol):
    output_scale: float
    center: bool

    def hparams(self) -> dict[str, float]: ...

    def init(self, key, x, hparams: Mapping | None = None) -> Any: ...

    def apply(self, params, x, hparams: Mapping | None = None) -> jax.Array: ...

    def lr_multipliers(self, params, hparams: Mapping | None = None) -> Any: ...

    def config(self) -> dict: ...

    def validate_data(self, x, out_dim: int) -> None: ...


def _require(cond: bool, field: str, value, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{field} must be {allowed}, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class MLP:
    """A fully connected network, its scales set by ``parametrization``.

    ``depth`` is the number of hidden layers (``depth = 0`` is a linear model
    ``f = alpha (m_0 W^0 x + beta_0 b^0)``), ``width`` their size ``N``. The forward pass,
    the initial distributions and the per-layer learning rates of ``"standard"``,
    ``"ntk"`` and ``"mup"`` (with ``gamma0``) are written in
    ``dynamics.parametrization``. ``output_scale`` is ``alpha`` of Chizat, Oyallon & Bach
    (2019): ``f = alpha g(theta, x)``; with ``center=True`` the loop trains
    ``alpha (g(theta, x) - g(theta0, x))`` so that the output at initialisation is zero
    whatever ``alpha`` (their Sec. 2.2), which is what makes ``alpha -> infinity`` lazy.
    ``sigma_b`` is ignored when ``bias=False``.

    ``params`` is a tuple over layers of ``{"w": (n_in, n_out), "b": (n_out,)}``.
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

    def __post_init__(self):
        _require(_is_int(self.width) and self.width > 0, "width", self.width, "a positive int")
        _require(_is_int(self.depth) and self.depth >= 0, "depth", self.depth, "an int >= 0")
        _require(
            _is_int(self.out_dim) and self.out_dim > 0, "out_dim", self.out_dim, "a positive int"
        )
        activations.get(self.activation)
        parametrization.check(self.parametrization)
        _require(isinstance(self.center, bool), "center", self.center, "True or False")
        _require(isinstance(self.bias, bool), "bias", self.bias, "True or False")
        self.check_hparams(
            {k: getattr(self, k) for k in ("output_scale", "sigma_w", "sigma_b", "gamma0")}
        )

    @staticmethod
    def check_hparams(values: Mapping[str, Any]) -> None:
        """Range checks of the float fields (concrete values only)."""
        lower = {"output_scale": 0.0, "sigma_w": 0.0, "gamma0": 0.0}
        for name, value in values.items():
            if not _is_real(value):
                raise ValueError(f"{name} must be a real number, got {value!r}")
            if name in lower and not value > lower[name]:
                raise ValueError(f"{name} must be > 0, got {value!r}")
            if name == "sigma_b" and not value >= 0:
                raise ValueError(f"sigma_b must be >= 0, got {value!r}")

    # -- the protocol -----------------------------------------------------------------

    def hparams(self) -> dict[str, float]:
        names = ["output_scale", "sigma_w"]
        if self.bias:
            names.append("sigma_b")
        if self.parametrization == "mup":
            names.append("gamma0")
        return {n: float(getattr(self, n)) for n in names}

    def _hp(self, hparams: Mapping | None) -> dict:
        hp = self.hparams()
        if hparams:
            hp.update({k: v for k, v in hparams.items() if k in hp})
        hp.setdefault("sigma_b", 0.0)
        hp.setdefault("gamma0", self.gamma0)
        return hp

    def fan_ins(self, in_dim: int) -> tuple[int, ...]:
        return (in_dim,) + (self.width,) * self.depth

    def _scales(self, in_dim: int, hp: Mapping) -> list[parametrization.LayerScale]:
        return parametrization.layer_scales(
            self.parametrization, self.fan_ins(in_dim), hp["sigma_w"], hp["sigma_b"], hp["gamma0"]
        )

    def init(self, key, x, hparams: Mapping | None = None):
        hp = self._hp(hparams)
        in_dim = x.shape[-1]
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        fan_outs = (self.width,) * self.depth + (self.out_dim,)
        layers = []
        for l, (n_in, n_out, s) in enumerate(
            zip(self.fan_ins(in_dim), fan_outs, self._scales(in_dim, hp))
        ):
            k_w, k_b = jax.random.split(jax.random.fold_in(key, l))
            layer = {"w": s.weight_std * jax.random.normal(k_w, (n_in, n_out), dtype)}
            if self.bias:
                layer["b"] = s.bias_std * jax.random.normal(k_b, (n_out,), dtype)
            layers.append(layer)
        return tuple(layers)

    def apply(self, params, x, hparams: Mapping | None = None):
        hp = self._hp(hparams)
        phi = activations.get(self.activation)
        h = x
        for l, (layer, s) in enumerate(zip(params, self._scales(x.shape[-1], hp))):
            if l > 0:
                h = phi(h)
            h = s.multiplier * (h @ layer["w"])
            if self.bias:
                h = h + s.bias_multiplier * layer["b"]
        return hp["output_scale"] * h

    def lr_multipliers(self, params, hparams: Mapping | None = None):
        in_dim = params[0]["w"].shape[0]
        scales = self._scales(in_dim, self._hp(hparams))
        return tuple(
            {name: s.lr_multiplier for name in layer} for layer, s in zip(params, scales)
        )

    def config(self) -> dict:
        return {"model": "MLP", **dataclasses.asdict(self)}

    def validate_data(self, x, out_dim: int) -> None:
        if x.ndim != 2:
            raise ValueError(f"MLP inputs must be 2-D (examples, features), got shape {x.shape}")
        if out_dim != self.out_dim:
            raise ValueError(
                f"out_dim mismatch: the model has out_dim={self.out_dim} but the task has "
                f"{out_dim} outputs"
            )
