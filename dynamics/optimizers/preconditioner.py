"""The diagonal preconditioner of an Adam-like optimizer's state.

Cohen et al. (2022), "Adaptive gradient methods at the edge of stability", write a
preconditioned method as ``theta_{t+1} = theta_t - eta P_t^{-1} m_t``; for Adam
``m_t`` is the bias-corrected first moment and

    P_t = diag(sqrt(nu_t / (1 - b2^t)) + eps)

with ``nu_t`` the second moment after ``t`` updates (optax's ``eps_root``, when not 0,
enters as ``sqrt(nu_hat + eps_root)``, as in its update). Their preconditioned sharpness
is the top eigenvalue of ``P_t^{-1} H_t``. Before the first update (``t = 0``) the
second moment is zero and ``P_0 = sqrt(eps_root) + eps``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _find(state, kind):
    """Every node of type ``kind`` in an optax state (nested tuples, lists and dicts)."""
    if isinstance(state, kind):
        return [state]
    if isinstance(state, dict):
        children = list(state.values())
    elif isinstance(state, (tuple, list)):
        children = list(state)
    else:
        return []
    return [found for child in children for found in _find(child, kind)]


def adam_preconditioner(opt_state, b2, eps, eps_root=0.0):
    """``P_t`` (a pytree like the parameters) of the single ``ScaleByAdamState`` in
    ``opt_state``; ``None`` when the state holds none (or several)."""
    found = _find(opt_state, optax.ScaleByAdamState)
    if len(found) != 1:
        return None
    adam = found[0]
    count = adam.count
    correction = 1.0 - jnp.asarray(b2) ** count

    def p(nu):
        nu_hat = jnp.where(count > 0, nu / jnp.where(count > 0, correction, 1.0), 0.0)
        return (jnp.sqrt(nu_hat + eps_root) + eps).astype(nu.dtype)

    return jax.tree.map(p, adam.nu)


def injected_hyperparams(opt_state) -> dict:
    """The hyperparameters held by the outermost ``optax.inject_hyperparams`` state."""
    found = _find(opt_state, optax.InjectStatefulHyperparamsState)
    return dict(found[0].hyperparams) if found else {}
