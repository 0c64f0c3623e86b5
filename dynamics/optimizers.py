"""Optimizers and learning-rate schedules, with every float a swept (traced) value.

``Optimizer`` is a frozen description; ``build(hparams, steps, lr_multipliers)`` turns it
into an optax transformation

    inject_hyperparams(base)(lr, momentum, b1, b2, eps, weight_decay)
      -> scale_by_schedule(shape)      (the schedule's shape, peak 1)
      -> per-layer learning-rate multipliers of the parametrization

so that the learning rate of step ``t`` of layer ``l`` is ``lr * shape(t) * c_l``. The
float hyperparameters live in the optimizer state (``optax.inject_hyperparams``): they are
traced inputs of the compiled program, never constants baked into it, so a sweep over them
is one compile. Weight decay is coupled (L2 added to the gradient, ``add_decayed_weights``
before the learning rate) for ``sgd`` and ``momentum`` and decoupled for ``adamw``
(Loshchilov & Hutter 2019).

Schedules (``t`` counts optimizer steps from 0, ``T`` the run's steps, ``W`` the warmup
steps, ``w(t) = min(1, (t + 1) / W)`` the linear warmup, ``f`` the final fraction):

* ``constant``: 1;  ``warmup``: ``w(t)``;
* ``linear_decay``: ``w(t) (1 - (1 - f) s)`` with ``s = clip((t - W) / (T - W), 0, 1)``;
* ``cosine``: ``w(t) (f + (1 - f)(1 + cos(pi s)) / 2)`` (Loshchilov & Hutter 2017);
* ``wsd`` (warmup-stable-decay; Hu et al. 2024, Hägele et al. 2024): ``w(t)`` until the
  last ``D = decay_steps`` steps (default ``T // 5``), then linear from 1 to ``f``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "warmup", "linear_decay", "cosine", "wsd")
ADAPTIVE = ("adam", "adamw")

_HPARAMS = {
    "sgd": ("lr", "weight_decay"),
    "momentum": ("lr", "momentum", "weight_decay"),
    "adam": ("lr", "b1", "b2", "eps"),
    "adamw": ("lr", "b1", "b2", "eps", "weight_decay"),
}


def _sgd(learning_rate, weight_decay):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


def _momentum_factory(nesterov: bool):
    def _momentum(learning_rate, momentum, weight_decay):
        return optax.chain(
            optax.add_decayed_weights(weight_decay),
            optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
        )

    return _momentum


def _adam(learning_rate, b1, b2, eps):
    return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)


def _adamw(learning_rate, b1, b2, eps, weight_decay):
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def _scale_by_tree(multipliers) -> optax.GradientTransformation:
    """Multiply each update leaf by its (possibly traced) multiplier."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u * m, updates, multipliers), state

    return optax.GradientTransformation(init, update)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An optax optimizer with swept hyperparameters and a schedule (see module doc)."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_steps: int | None = None
    final_lr_fraction: float = 0.0

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.name!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        for field in ("warmup_steps",) + (("decay_steps",) if self.decay_steps is not None else ()):
            v = getattr(self, field)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{field} must be an int >= 0, got {v!r}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(
                f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction!r}"
            )
        self.check_hparams({k: getattr(self, k) for k in self.hparams()})

    def hparams(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in _HPARAMS[self.name]}

    @staticmethod
    def check_hparams(values: Mapping[str, Any]) -> None:
        """Range checks of concrete hyperparameter values."""
        for name, v in values.items():
            if not isinstance(v, numbers.Real) or isinstance(v, bool):
                raise ValueError(f"{name} must be a real number, got {v!r}")
            if name in ("lr", "eps") and not v > 0:
                raise ValueError(f"{name} must be > 0, got {v!r}")
            if name in ("momentum", "b1", "b2") and not 0 <= v < 1:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
            if name == "weight_decay" and not v >= 0:
                raise ValueError(f"weight_decay must be >= 0, got {v!r}")

    def check_steps(self, steps: int) -> None:
        if self.warmup_steps > steps:
            raise ValueError(f"warmup_steps must be <= steps={steps}, got {self.warmup_steps}")
        if self.decay_steps is not None and self.decay_steps > steps:
            raise ValueError(f"decay_steps must be <= steps={steps}, got {self.decay_steps}")

    def schedule_shape(self, steps: int):
        """``t -> shape(t)`` with peak 1 (module doc); ``t`` may be traced."""
        W, T, f = self.warmup_steps, steps, self.final_lr_fraction
        D = self.decay_steps if self.decay_steps is not None else T // 5

        def warm(t):
            return jnp.minimum(1.0, (t + 1.0) / W) if W > 0 else 1.0

        def shape(t):
            t = jnp.asarray(t, jnp.float32)
            if self.schedule in ("constant", "warmup"):
                return jnp.ones_like(t) * warm(t)
            if self.schedule == "wsd":
                s = jnp.clip((t - (T - D)) / max(D, 1), 0.0, 1.0)
                return warm(t) * (1.0 - (1.0 - f) * s)
            s = jnp.clip((t - W) / max(T - W, 1), 0.0, 1.0)
            if self.schedule == "linear_decay":
                return warm(t) * (1.0 - (1.0 - f) * s)
            return warm(t) * (f + (1.0 - f) * 0.5 * (1.0 + jnp.cos(jnp.pi * s)))

        return shape

    def build(self, hparams: Mapping, steps: int, lr_multipliers=None):
        """The optax transformation for values ``hparams`` (may be traced)."""
        values = {k: hparams.get(k, getattr(self, k)) for k in _HPARAMS[self.name]}
        values["learning_rate"] = values.pop("lr")
        base = {
            "sgd": _sgd,
            "momentum": _momentum_factory(self.nesterov),
            "adam": _adam,
            "adamw": _adamw,
        }[self.name]
        parts = [optax.inject_hyperparams(base)(**values)]
        if self.schedule != "constant" or self.warmup_steps:
            parts.append(optax.scale_by_schedule(self.schedule_shape(steps)))
        if lr_multipliers is not None:
            parts.append(_scale_by_tree(lr_multipliers))
        return optax.chain(*parts)

    def config(self) -> dict:
        return dataclasses.asdict(self)


def sgd(lr=0.1, **kw) -> Optimizer:
    return Optimizer("sgd", lr=lr, **kw)


def momentum(lr=0.1, momentum=0.9, **kw) -> Optimizer:
    return Optimizer("momentum", lr=lr, momentum=momentum, **kw)


def adam(lr=1e-3, **kw) -> Optimizer:
    return Optimizer("adam", lr=lr, **kw)


def adamw(lr=1e-3, weight_decay=1e-4, **kw) -> Optimizer:
    return Optimizer("adamw", lr=lr, weight_decay=weight_decay, **kw)
