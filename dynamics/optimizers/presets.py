"""sgd, momentum, adam and adamw: thin presets of ``from_optax``.

Their call signatures are the historical ones; every other keyword of ``from_optax``
(schedule, clipping, weight decay's coupling and mask, ⊥Grad) passes through.

* ``sgd``: ``optax.sgd`` with a coupled L2 weight decay (default 0, a swept value);
* ``momentum``: ``optax.sgd(momentum=..., nesterov=...)``, the same weight decay;
* ``adam``: ``optax.adam``; ``weight_decay`` given, it is coupled L2 (Adam with L2);
* ``adamw``: ``optax.adam`` with decoupled weight decay ``- lr s(t) lambda theta``, as
  ``optax.adamw`` (Loshchilov & Hutter 2019).

The weight decay of every preset is traindyn's, masked by default (no decay of biases and
normalisation gains: ``dynamics.optimizers.weight_decay``); ``weight_decay_mask="all"``
decays every leaf, as optax does without a mask.
"""

from __future__ import annotations

import optax

from dynamics.optimizers.optax_bridge import Optimizer


def _preset(factory, label: str, kind: str, **kw) -> Optimizer:
    """``from_optax(factory, **kw)`` named ``label``, of family ``kind`` unless ``kw`` say
    otherwise."""
    return Optimizer(factory, **{"name": label, "family": kind, **kw})


def sgd(lr=0.1, weight_decay=0.0, **kw) -> Optimizer:
    return _preset(optax.sgd, "sgd", "sgd", lr=lr, weight_decay=weight_decay, **kw)


def momentum(lr=0.1, momentum=0.9, weight_decay=0.0, **kw) -> Optimizer:
    return _preset(optax.sgd, "momentum", "sgd", lr=lr, momentum=float(momentum),
                   weight_decay=weight_decay, **kw)


def adam(lr=1e-3, **kw) -> Optimizer:
    return _preset(optax.adam, "adam", "adam", lr=lr, **kw)


def adamw(lr=1e-3, weight_decay=1e-4, **kw) -> Optimizer:
    kw.setdefault("weight_decay_coupling", "decoupled")
    return _preset(optax.adam, "adamw", "adam", lr=lr, weight_decay=weight_decay, **kw)


PRESETS = {"sgd": sgd, "momentum": momentum, "adam": adam, "adamw": adamw}


def preset(name: str, keywords: dict) -> Optimizer:
    """``Optimizer(name, **keywords)`` for a preset ``name``."""
    if name not in PRESETS:
        raise ValueError(f"optimizer must be one of {list(PRESETS)} (the presets) or an optax "
                         f"factory such as optax.lion (dynamics.optimizers.from_optax), "
                         f"got {name!r}")
    return PRESETS[name](**keywords)
