r"""Additive Gaussian gradient noise: the stochastic gradient of the noisy-quadratic and
river-valley models of SGD.

With ``gradient_noise = sigma`` (an optimizer keyword, a swept value), every optimizer
step sees the gradient

.. math::

    \tilde g_t = \nabla L(\theta_t) + \sigma\, \xi_t, \qquad
    \xi_t \sim \mathcal{N}(0, I) \ \text{i.i.d. over steps and coordinates},

before clipping, ⊥Grad, weight decay and the optimizer itself: the oracle of SGD with
additive isotropic noise of variance ``sigma^2`` per coordinate (e.g. Mandt, Hoffman & Blei
2017, "Stochastic gradient descent as approximate Bayesian inference", Sec. 3; in Wen et
al. 2024, "Understanding warmup-stable-decay learning rates", Sec. 3, gradient noise makes
the iterate oscillate across the valley during the stable phase). ``xi_t`` is drawn from
``noise_key(run_key, t)`` (``dynamics.loop``, key stream 4), so that run ``k`` of a sweep
sees the same noise alone or batched with others.
"""

from __future__ import annotations

import jax


def noise_key(run_key, step):
    """The key of the gradient noise of optimizer step ``step`` of the run ``run_key``."""
    return jax.random.fold_in(jax.random.fold_in(run_key, 4), step)


def add_gradient_noise(grads, sigma, key):
    """``grads + sigma * xi`` with ``xi`` standard normal, independent per leaf and entry,
    in each leaf's dtype."""
    leaves, treedef = jax.tree.flatten(grads)
    keys = jax.random.split(key, max(len(leaves), 1))
    noisy = [g + sigma * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)
