"""Adapter from user flax models (linen or nnx) to the traindyn ``Model`` protocol.

``FlaxModel`` wraps a flax model as pure functions on a params pytree so the
training loop can jit/vmap/grad through it:

* ``init(key, x, hparams=None) -> params`` and
  ``apply(params, x, hparams=None) -> output_scale * g(params, x)`` with outputs
  of shape ``(batch, out_dim)``; a module returning ``(batch,)`` is reshaped to
  ``(batch, 1)``; any other rank is rejected.
* ``hparams()`` is ``{"output_scale": ...}`` (the only sweepable float);
  ``lr_multipliers`` is 1.0 on every leaf (user models carry no
  parametrization); ``center`` is only recorded: ``apply`` never centers.

Limits:

* Only stateless models: all variables must be parameters (the linen
  ``"params"`` collection / ``nnx.Param``).  Modules with ``batch_stats``,
  other mutable collections, or stored nnx RNG streams (e.g.
  ``nnx.Dropout(..., rngs=rngs)``) are rejected with ``UnsupportedFlaxModel``
  (a ``ValueError``).  Calls are deterministic: no rngs are passed to ``apply``.
* nnx params are plain nested dicts (``nnx.to_pure_dict``), not ``nnx.State``:
  they are ordinary pytrees for optax, ``jax.vmap`` and ``tree_map``.  The
  graphdef is computed once, from ``nnx.eval_shape`` with a fixed key, so it
  never depends on the init key; ``apply`` rebuilds a fresh module with
  ``nnx.merge`` per call and discards it, so in-place updates made by the
  module's ``__call__`` are lost.
* nnx modules declare their shapes in the factory, so ``init`` ignores ``x``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen, nnx

__all__ = ["FlaxModel", "UnsupportedFlaxModel", "from_linen", "from_nnx"]


class UnsupportedFlaxModel(ValueError):
    """The flax model holds state other than parameters."""


def _stateless_error(extra) -> UnsupportedFlaxModel:
    return UnsupportedFlaxModel(
        "only stateless flax modules (a 'params' collection / nnx.Param state) are "
        f"supported; found extra variable collections/types: {sorted(extra)}"
    )


@dataclasses.dataclass(frozen=True, eq=False)
class FlaxModel:
    """A flax model seen through the traindyn ``Model`` protocol.

    Build it with ``FlaxModel.from_linen`` / ``FlaxModel.from_nnx`` (or the
    module-level ``from_linen`` / ``from_nnx``).  ``_init(key, x)`` and
    ``_g(params, x)`` are the unscaled flax calls.
    """

    kind: str                                  # "flax.linen" or "flax.nnx"
    name: str
    _init: Callable[[jax.Array, Any], Any] = dataclasses.field(repr=False)
    _g: Callable[[Any, Any], jax.Array] = dataclasses.field(repr=False)
    output_scale: float = 1.0
    center: bool = False

    def __post_init__(self):
        if not float(self.output_scale) > 0:   # also rejects nan
            raise ValueError(f"output_scale must be > 0, got {self.output_scale}")
        object.__setattr__(self, "output_scale", float(self.output_scale))
        object.__setattr__(self, "center", bool(self.center))

    # -- constructors -------------------------------------------------------
    @classmethod
    def from_linen(cls, module: linen.Module, *, output_scale: float = 1.0,
                   center: bool = False, name: str | None = None) -> FlaxModel:
        """Wrap a stateless ``flax.linen`` module; params = ``module.init(key, x)["params"]``."""

        def init(key, x):
            variables = module.init(key, x)
            extra = set(variables) - {"params"}
            if extra:
                raise _stateless_error(extra)
            return variables.get("params", {})

        def g(params, x):
            return module.apply({"params": params}, x)

        return cls("flax.linen", name or type(module).__name__, init, g,
                   output_scale, center)

    @classmethod
    def from_nnx(cls, factory: Callable[[nnx.Rngs], nnx.Module], *,
                 output_scale: float = 1.0, center: bool = False,
                 name: str | None = None) -> FlaxModel:
        """Wrap ``factory(rngs) -> nnx.Module``; params = its ``nnx.Param`` state as a pure dict.

        The factory is evaluated abstractly once here (``nnx.eval_shape``) to get
        the graphdef and to reject non-Param state early.
        """

        def split(model):
            graphdef, params, rest = nnx.split(model, nnx.Param, ...)
            if len(rest):
                types = {type(v).__name__ for _, v in nnx.to_flat_state(rest)}
                raise _stateless_error(types)
            return graphdef, params

        graphdef, _ = split(nnx.eval_shape(lambda: factory(nnx.Rngs(0))))

        def init(key, x):
            del x  # shapes are fixed by the factory
            return nnx.to_pure_dict(split(factory(nnx.Rngs(key)))[1])

        def g(params, x):
            return nnx.merge(graphdef, params)(x)

        return cls("flax.nnx", name or getattr(factory, "__name__", type(factory).__name__),
                   init, g, output_scale, center)

    # -- protocol -----------------------------------------------------------
    def hparams(self) -> dict[str, float]:
        return {"output_scale": self.output_scale}

    def _hp(self, hparams: Mapping[str, Any] | None) -> dict[str, Any]:
        # The training loop passes every hyperparameter of a run (optimizer and task
        # ones too); a model reads its own and ignores the others. Unknown sweep names
        # are refused earlier, by ``dynamics.sweep``.
        hp = self.hparams()
        if hparams:
            hp.update({k: v for k, v in hparams.items() if k in hp})
        return hp

    def init(self, key, x, hparams=None):
        del hparams  # no hyperparameter of a flax model affects its initialisation
        return self._init(key, x)

    def apply(self, params, x, hparams=None) -> jax.Array:
        out = self._g(params, x)
        if out.ndim == 1:
            out = out[:, None]
        elif out.ndim != 2:
            raise ValueError(f"flax model must return (batch, out_dim) or (batch,), got shape {out.shape}")
        scale = self._hp(hparams)["output_scale"]
        return jnp.asarray(scale, out.dtype) * out   # keep the model's dtype

    def lr_multipliers(self, params, hparams=None):
        return jax.tree_util.tree_map(lambda _: 1.0, params)

    def config(self) -> dict:
        return {"model": self.kind, "name": self.name,
                "output_scale": self.output_scale, "center": self.center}

    def validate_data(self, x, out_dim: int) -> None:
        """Abstractly run init + apply on ``x[:1]``; ValueError if that fails or out_dim differs."""
        x1 = x[:1]
        try:
            out = jax.eval_shape(lambda k, xx: self.apply(self.init(k, xx), xx),
                                 jax.random.key(0), x1)
        except UnsupportedFlaxModel:
            raise
        except Exception as e:  # flax/jax shape errors come in many types
            raise ValueError(f"flax model cannot take inputs of shape {tuple(x1.shape[1:])} "
                             f"(per example): {e}") from e
        if out.shape[-1] != out_dim:
            raise ValueError(f"flax model produces {out.shape[-1]} outputs but the data "
                             f"has out_dim={out_dim}")


from_linen = FlaxModel.from_linen
from_nnx = FlaxModel.from_nnx
