"""Weight decay: how it couples to the learning rate, and which leaves it decays.

With ``lambda = weight_decay``, ``eta(t) = lr s(t)`` the scheduled learning rate (``s`` the
schedule's shape, peak 1, ``dynamics.optimizers.schedules``), ``c_l`` the
parametrization's learning-rate multiplier of leaf ``l`` and ``u_l`` the step the optimizer
returns for the gradient it is given, the update of a decayed leaf ``theta_l`` is

* ``"l2"`` (coupled L2): the gradient becomes ``g + lambda theta`` *before* the optimizer,
  so its moments see the decay (Adam with L2, as ``torch.optim.Adam(weight_decay=...)``;
  for plain SGD the same as the other two): ``theta <- theta + c_l u_l(g + lambda theta)``;
* ``"decoupled"`` (Loshchilov & Hutter 2019, "Decoupled weight decay regularization", as
  ``optax.adamw`` and ``torch.optim.AdamW`` implement it, the decay scaled by the
  learning rate): ``theta <- theta + c_l (u_l(g) - eta(t) lambda theta)``;
* ``"independent"`` (Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer
  training instabilities", Sec. 3.2.2; Loshchilov & Hutter 2019, Algorithm 2, whose
  schedule multiplier ``eta_t`` scales the decay but the learning rate ``alpha`` does not):
  ``theta <- theta + c_l u_l(g) - s(t) lambda theta``, independent of ``lr`` and of the
  multipliers, so that the decay does not change when the learning rate is swept.

Mask (which leaves are decayed), ``weight_decay_mask``:

* ``"auto"`` (the default): by the leaves' roles when the model declares them
  (``model.roles(params)``, ``dynamics.parametrization.ROLES``): every leaf but biases and normalisation gains, and but embeddings when
  ``decay_embeddings=False``. A model that declares no roles falls back to decaying the
  leaves with ``ndim >= 2`` (weight matrices and kernels; biases and gains are vectors);
* ``"all"``: every leaf;
* a pytree of booleans like the parameters, or a callable ``params -> that pytree``
  (optax's convention for ``mask``).

Scales (a decay per leaf), ``weight_decay_scales``: a pytree of non-negative reals like
the parameters, or a callable ``params -> that pytree``: leaf ``l`` (when the mask decays
it) is decayed at ``lambda c_l`` instead of ``lambda``, in every coupling above. This
writes a separate decay per layer, as the regularised objectives of the unconstrained
features models do (``lambda_H`` on the features, ``lambda_W`` on the layers: Dang et al.
2023, "Neural Collapse in Deep Linear Networks", Sec. 3): ``weight_decay = lambda_W``
and the scale ``lambda_H / lambda_W`` on the features' leaf.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import optax

from dynamics.parametrization import ROLES

COUPLINGS = ("l2", "decoupled", "independent")
MASKS = ("auto", "all")
NEVER_DECAYED = ("bias", "norm")


def check_mask(mask) -> None:
    if isinstance(mask, str) and mask not in MASKS:
        raise ValueError(f"weight_decay_mask must be one of {list(MASKS)}, a pytree of "
                         f"booleans or a callable of the parameters, got {mask!r}")


def decay_mask(mask, roles=None, decay_embeddings: bool = True) -> Any:
    """The optax ``mask`` (pytree or callable of the parameters; ``None``: every leaf) of
    the setting ``mask`` (see the module doc) for a model with ``roles`` (or ``None``)."""
    if isinstance(mask, str):
        if mask == "all":
            return None
        if roles is None:
            return lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
        skipped = NEVER_DECAYED + (() if decay_embeddings else ("embedding",))

        def decayed(role):
            if role not in ROLES:
                raise ValueError(f"roles must be among {list(ROLES)}, got {role!r}")
            return role not in skipped

        return jax.tree.map(decayed, roles)
    return mask


def check_scales(scales) -> None:
    """``weight_decay_scales``: ``None``, a callable, or a pytree of reals >= 0."""
    if scales is None or callable(scales):
        return
    leaves = jax.tree.leaves(scales)
    bad = [v for v in leaves if not (isinstance(v, numbers.Real) and not isinstance(v, bool)
                                      and v >= 0)]
    if not leaves or bad:
        raise ValueError("weight_decay_scales must be a pytree of reals >= 0 like the "
                         "parameters, or a callable of the parameters that returns one, got "
                         f"{scales!r}")


def scaled_decayed_weights(rate, mask, scales) -> optax.GradientTransformation:
    """``u_l + rate c_l theta_l`` on the leaves the optax ``mask`` decays (``None``:
    every leaf; a pytree or a callable of the parameters) and ``u_l`` on the others, with
    the per-leaf scales ``c_l`` of ``scales`` (a pytree or a callable of the parameters):
    ``optax.add_decayed_weights`` with a decay per leaf (module doc)."""

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("weight decay needs the parameters in update()")
        decayed = mask(params) if callable(mask) else mask
        if decayed is None:
            decayed = jax.tree.map(lambda _: True, params)
        c = scales(params) if callable(scales) else scales
        out = jax.tree.map(lambda u, p, keep, s: u + (rate * s) * p if keep else u,
                           updates, params, decayed, c)
        return out, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
