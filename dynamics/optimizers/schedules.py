"""Learning-rate schedules: the shape ``s(t)`` (peak 1) that multiplies the peak ``lr``.

The learning rate of optimizer step ``t`` (counted from 0) is ``lr * s(t)``. ``s`` is either
any optax schedule (a callable of the step count, used as it is) or one of the built-in
shapes below, whose lengths and final fraction are swept (traced) values: a sweep over
them, like one over ``lr``, is one compiled program.

Notation: ``T`` the run's steps; ``W`` the warmup length, ``warmup_steps`` or
``warmup_fraction * T`` (default 0); ``w(t) = min(1, (t + 1) / W)`` the linear warmup
(``w = 1`` for ``W = 0``); ``f`` the ``final_lr_fraction`` (default 0); ``D`` the decay
length, ``decay_steps`` or ``decay_fraction * T``.

* ``constant``: ``w(t)`` (1 without warmup);  ``warmup``: ``w(t)``;
* ``linear_decay``: ``w(t) (1 - (1 - f) u)`` with ``u = clip((t - W) / D, 0, 1)`` and
  ``D`` by default ``T - W`` (the decay ends with the run);
* ``cosine``: ``w(t) (f + (1 - f) (1 + cos(pi u)) / 2)``, ``u`` as above (Loshchilov &
  Hutter 2017, "SGDR", Eq. 5, one cycle without restarts);
* ``wsd``, warmup-stable-decay (Hu et al. 2024, "MiniCPM"; Hägele et al. 2024, "Scaling
  laws and compute-optimal training beyond fixed training durations"): ``w(t)``
  until the last ``D`` steps (default ``D = 0.2 T``), then linear from 1 to ``f``:
  ``w(t) (1 - (1 - f) u)`` with ``u = clip((t - (T - D)) / D, 0, 1)``.

A length below one step is read as one step in the divisions (``max(D, 1)``), so that a
zero-length decay is a drop to ``f`` instead of a division by zero.
"""

from __future__ import annotations

from typing import Callable, Mapping

import jax.numpy as jnp

SHAPES = ("constant", "warmup", "linear_decay", "cosine", "wsd")
LENGTHS = ("warmup_steps", "warmup_fraction", "decay_steps", "decay_fraction",
           "final_lr_fraction")


def default_values(shape: str, given: Mapping[str, float]) -> dict[str, float]:
    """The swept values of built-in ``shape``: those ``given`` (keys among ``LENGTHS``)
    and the defaults that make the shape sweepable without naming them."""
    values = {k: float(v) for k, v in given.items()}
    if shape == "constant":
        return values
    if "warmup_fraction" not in values:
        values.setdefault("warmup_steps", 0.0)
    if shape == "warmup":
        return values
    values.setdefault("final_lr_fraction", 0.0)
    if shape == "wsd" and "decay_steps" not in values:
        values.setdefault("decay_fraction", 0.2)
    return values


def shape_function(shape, steps: int, values: Mapping) -> Callable | None:
    """``t -> s(t)`` for ``shape`` (a name of ``SHAPES`` or an optax schedule) over a run
    of ``steps`` steps, with the (possibly traced) ``values`` of its lengths; ``None`` for
    a constant learning rate (no schedule at all: ``constant`` without a warmup length).
    Whether there is a schedule depends on which lengths are given, never on their
    values, so the optimizer state has one structure for every value of a sweep."""
    if callable(shape):
        return shape
    T = float(steps)
    if "warmup_fraction" in values:
        W = values["warmup_fraction"] * T
    else:
        W = values.get("warmup_steps", 0.0)
    if shape == "constant" and not ({"warmup_steps", "warmup_fraction"} & set(values)):
        return None
    f = values.get("final_lr_fraction", 0.0)
    if "decay_fraction" in values:
        D = values["decay_fraction"] * T
    elif "decay_steps" in values:
        D = values["decay_steps"]
    else:
        D = T - W

    def warm(t):
        return jnp.where(W > 0, jnp.minimum(1.0, (t + 1.0) / jnp.maximum(W, 1e-30)), 1.0)

    def s(count):
        t = jnp.asarray(count, jnp.result_type(float))
        if shape in ("constant", "warmup"):
            return warm(t)
        if shape == "wsd":
            u = jnp.clip((t - (T - D)) / jnp.maximum(D, 1.0), 0.0, 1.0)
            return warm(t) * (1.0 - (1.0 - f) * u)
        u = jnp.clip((t - W) / jnp.maximum(D, 1.0), 0.0, 1.0)
        if shape == "linear_decay":
            return warm(t) * (1.0 - (1.0 - f) * u)
        return warm(t) * (f + (1.0 - f) * 0.5 * (1.0 + jnp.cos(jnp.pi * u)))

    return s

