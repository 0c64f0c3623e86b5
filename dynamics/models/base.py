r"""The model protocol, and the one place where output scale and centering are applied.

A model is a pure ``init`` / ``apply`` pair on a params pytree plus what the training loop
must know about it. What every model provides:

* ``init(key, x, hparams=None) -> params``;
* ``apply(params, x, hparams=None) -> g``: the network's outputs ``g(theta, x)``, one
  output vector per position (``(batch, K)``, or ``(batch, T, K)`` for sequence models).
  ``apply`` never multiplies by the output scale and never centres: :func:`outputs` does;
* ``hparams() -> dict[str, float]``: the float fields that may be swept (traced values);
* ``lr_multipliers(params, hparams=None, family="sgd")``: per-leaf learning-rate
  multipliers (the parametrization's, ``dynamics.parametrization``) for an optimizer of
  ``family`` ``"sgd"`` or ``"adam"``;
* ``config() -> dict`` (JSON-able).

What a model may provide (:func:`static_fields` and friends fall back to sensible
defaults when it does not):

* ``static_fields() -> dict`` and ``with_static(name, value)``: its int / str / bool fields
  that change shapes or the program, each a static sweep axis (default: those of a
  dataclass);
* ``output_scale`` and ``center`` (defaults 1 and False);
* ``roles(params)``: a pytree like ``params`` of layer roles (``"input"``, ``"hidden"``,
  ``"readout"``, ``"embedding"``, ``"attention"``, ``"bias"``, ``"norm"``) for the
  parametrization's rules and the optimizer's weight-decay mask;
* ``check_hparams(values)``: range checks of concrete swept values;
* ``activations(params, x, hparams=None) -> dict[str, Array]``: every layer's output in
  forward order (the coordinate check, ``dynamics.observables.CoordinateCheck``);
* state and randomness (BatchNorm statistics, dropout):
  ``init_variables(key, x, hparams) -> (params, state)`` and
  ``apply_train(params, x, hparams, *, state, key) -> (g, new_state)``, with
  ``apply(params, x, hparams, state=state)`` then the deterministic evaluation mode
  (running statistics, no dropout) and ``apply(..., train=True, key=key)`` the training
  mode without the state update.

Output scale and centering (Chizat, Oyallon & Bach 2019, Sec. 2): the trained outputs are

.. math::

    f(\theta, x) = \alpha\, \bigl(g(\theta, x) - g(\theta_0, x)\bigr) \ \text{with
    ``center``}, \qquad f(\theta, x) = \alpha\, g(\theta, x) \ \text{without},

with ``alpha = output_scale`` a swept value. ``g`` is evaluated at ``alpha``-free scale and
multiplied after the subtraction, so a large ``alpha`` loses no precision to cancellation,
and the centred outputs at initialisation are exactly zero whatever ``alpha``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol

import jax
import jax.numpy as jnp
import numpy as np


class Model(Protocol):
    def hparams(self) -> dict[str, float]: ...

    def init(self, key, x, hparams: Mapping | None = None) -> Any: ...

    def apply(self, params, x, hparams: Mapping | None = None) -> jax.Array: ...

    def lr_multipliers(self, params, hparams: Mapping | None = None, family: str = "sgd"
                       ) -> Any: ...

    def config(self) -> dict: ...


def output_scale(model) -> float:
    return float(getattr(model, "output_scale", 1.0))


def centred(model) -> bool:
    return bool(getattr(model, "center", False))


def resolve(model, hparams: Mapping | None) -> dict:
    """The model's swept values: its defaults overridden by the entries of ``hparams`` that
    are its own (a run's hyperparameters include the optimizer's and the task's)."""
    hp = dict(model.hparams())
    if hparams:
        hp.update({k: v for k, v in hparams.items() if k in hp})
    return hp


def outputs(g, g0, hparams: Mapping, model=None):
    """``alpha (g - g0)`` (``g0=None``: ``alpha g``) with ``alpha`` the ``output_scale`` of
    ``hparams`` (default: the model's, else 1); see the module doc. The one place where the
    output scale and centering are applied."""
    alpha = hparams.get("output_scale", output_scale(model) if model is not None else 1.0)
    if g0 is not None:
        g = g - g0
    return jnp.asarray(alpha, g.dtype) * g


def apply_scaled(model, params, x, hparams: Mapping | None = None):
    """``alpha g(params, x)``: the uncentred outputs at the model's (or ``hparams``')
    output scale, for code that works with one model outside the loop (kernels)."""
    hp = resolve(model, hparams)
    return outputs(model.apply(params, x, hp), None, hp, model)


def init_variables(model, key, x, hparams):
    """``(params, state)``; ``state`` is None for models without state."""
    if hasattr(model, "init_variables"):
        return model.init_variables(key, x, hparams)
    return model.init(key, x, hparams), None


def static_fields(model) -> dict[str, Any]:
    """The model's fields that may be swept as static axes (int / str / bool; for a
    dataclass every such field but ``out_dim``, which the task sets)."""
    if hasattr(model, "static_fields"):
        return dict(model.static_fields())
    if not dataclasses.is_dataclass(model):
        return {}
    out = {}
    for f in dataclasses.fields(model):
        value = getattr(model, f.name)
        if f.name == "out_dim":
            continue
        if isinstance(value, (bool, int, str, np.integer, np.bool_)):
            out[f.name] = value
    return out


def with_static(model, name: str, value):
    if hasattr(model, "with_static"):
        return model.with_static(name, value)
    return dataclasses.replace(model, **{name: value})


def roles(model, params):
    """The model's layer roles, or None when it declares none."""
    return model.roles(params) if hasattr(model, "roles") else None


def check_hparams(model, values: Mapping[str, Any]) -> None:
    check = getattr(model, "check_hparams", None)
    if check is not None:
        check(values)


def name(model) -> str:
    """A short name for messages."""
    return getattr(model, "name", None) or type(model).__name__
