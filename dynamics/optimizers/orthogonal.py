"""⊥Grad: the gradient with its component along the weights removed.

Prieto, Barsbey, Mediano & Birdal (2025), "Grokking at the edge of numerical stability":
the gradient's component along the current weights, the "naive loss minimisation"
direction that scales the logits without changing the predictions, is removed before
the optimizer sees the gradient,

    g_perp = g - (theta . g) / (theta . theta) theta,

so that gradient descent on ``g_perp`` moves the weights orthogonally to themselves
(⊥SGD; ⊥AdamW feeds ``g_perp`` to AdamW). The paper writes the projection for the
parameter vector; its code (``orthograd.py`` of the authors' repository) applies it to
each parameter tensor separately, with ``1e-30`` added to ``theta . theta`` and to
``|g_perp|``, and rescales the projected gradient to the norm of the original one,
``g_perp |g| / |g_perp|``. Both are offered: ``per_layer`` (each leaf of the parameters,
as the code) or the whole parameter vector (as the formula), with or without ``rescale``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

TINY = 1e-30  # the authors' guard against 0 / 0 (a leaf initialised at zero)


def _project(g_leaves, theta_leaves, rescale: bool):
    dot = sum(jnp.vdot(t, g) for t, g in zip(theta_leaves, g_leaves))
    norm2 = sum(jnp.vdot(t, t) for t in theta_leaves)
    coef = dot / (norm2 + TINY)
    out = [g - coef * t for g, t in zip(g_leaves, theta_leaves)]
    if rescale:
        before = jnp.sqrt(sum(jnp.vdot(g, g) for g in g_leaves))
        after = jnp.sqrt(sum(jnp.vdot(o, o) for o in out))
        out = [o * (before / (after + TINY)) for o in out]
    return out


def orthogonal_gradient(per_layer: bool = True, rescale: bool = True
                        ) -> optax.GradientTransformation:
    """⊥Grad as an optax transformation to chain before any optimizer (module doc)."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("orthogonal_gradient needs the parameters: call "
                             "update(grads, state, params)")
        g_leaves, treedef = jax.tree.flatten(updates)
        theta_leaves = treedef.flatten_up_to(params)
        if per_layer:
            out = [_project([g], [t], rescale)[0] for g, t in zip(g_leaves, theta_leaves)]
        else:
            out = _project(g_leaves, theta_leaves, rescale)
        return jax.tree.unflatten(treedef, out), state

    return optax.GradientTransformation(init, update)
