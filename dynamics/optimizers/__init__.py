"""Optimizers: any optax optimizer, its float keywords swept values, with schedules,
clipping, weight decay (coupling and mask), ⊥Grad and the parametrization's per-layer
learning-rate multipliers chained around it.

* ``optax_bridge``: ``from_optax`` and the ``Optimizer`` the engine uses (``hparams``,
  ``check_hparams``, ``check_steps``, ``build``, ``family``, ``preconditioner``,
  ``static_fields`` / ``with_static``, ``config``);
* ``presets``: ``sgd``, ``momentum``, ``adam``, ``adamw``;
* ``schedules``: the built-in learning-rate shapes with swept lengths;
* ``weight_decay``: L2, decoupled and independent decay, the decay mask by layer role;
* ``gradient_noise``: additive Gaussian gradient noise (the noisy-SGD oracle);
* ``orthogonal``: ⊥Grad (Prieto et al. 2025);
* ``preconditioner``: Adam's diagonal preconditioner (Cohen et al. 2022);
* ``hyperparameters``: range checks by name.
"""

from dynamics.optimizers.optax_bridge import FAMILIES, Optimizer, from_optax
from dynamics.optimizers.orthogonal import orthogonal_gradient
from dynamics.optimizers.presets import adam, adamw, momentum, sgd
from dynamics.optimizers.schedules import SHAPES as SCHEDULES

__all__ = [
    "FAMILIES",
    "Optimizer",
    "SCHEDULES",
    "adam",
    "adamw",
    "from_optax",
    "momentum",
    "orthogonal_gradient",
    "sgd",
]
