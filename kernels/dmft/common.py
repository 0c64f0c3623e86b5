"""Pieces every DMFT solver uses: activations with their derivative, Gaussian drives,
and the conversion of equal-time order parameters to a Dataset."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from dynamics import activations


def activation_pair(name: str):
    """``(phi, phi')``, elementwise; ``phi'`` by automatic differentiation."""
    phi = activations.get(name)
    dphi = jnp.vectorize(jax.grad(phi))
    return phi, dphi


def psd_sqrt(c):
    """The symmetric square root of a positive semi-definite matrix (negative eigenvalues
    from rounding clipped at 0): ``C^{1/2} eps ~ N(0, C)`` for ``eps ~ N(0, I)``, and it
    is continuous in ``C`` (a Cholesky factor is not, for singular ``C``)."""
    c = (c + c.T) / 2
    lam, v = jnp.linalg.eigh(c)
    return (v * jnp.sqrt(jnp.clip(lam, 0.0))) @ v.T


def causal_root(c):
    """A lower-triangular ``L`` with ``L L^T = C + delta I`` (Cholesky, with a jitter
    ``delta`` of ``1e-12`` (float64) or ``1e-6`` (float32) times the largest variance, for
    the singular covariances of nearly static fields). On the time-major ``(t, mu)`` grid
    it is causal: the sample ``(L eps)(t)`` uses covariances between times ``<= t`` only,
    which keeps the iteration's solution on ``[0, t]`` independent of later steps."""
    c = (c + c.T) / 2
    tiny = 1e-12 if c.dtype == jnp.float64 else 1e-6
    delta = tiny * jnp.max(jnp.abs(jnp.diag(c)))
    return jnp.linalg.cholesky(c + delta * jnp.eye(c.shape[0], dtype=c.dtype))


def to_dataset(problem, f, phi, g, *, attrs: dict) -> xr.Dataset:
    """Dataset at the recorded steps from internal arrays on the full grid:
    ``f (T+1, n)``, equal-time ``phi``, ``g`` of shape ``(T+1, L, n, n)``."""
    p = problem
    rec = p.record
    f = np.asarray(f, np.float64)[rec]
    phi = np.asarray(phi, np.float64)[rec]
    g = np.asarray(g, np.float64)[rec]
    tr = slice(0, p.n_train)
    phi0 = p.phi0
    # K = alpha^2 sigma^2 sum_{l=0}^{L} G^{l+1} Phi^l, G^{L+1} = 1 (see kernels.dmft)
    ntk = phi[:, -1] + g[:, 0] * phi0[None]
    for l in range(1, p.depth):
        ntk = ntk + g[:, l] * phi[:, l - 1]
    ntk = p.alpha**2 * p.sigma**2 * ntk
    data = {
        "train_outputs": (("step", "train_example", "output"), f[:, tr, None]),
        "train_loss": (("step",), np.mean((f[:, tr] - p.y[None]) ** 2, axis=1)),
        "feature_kernel": (("step", "layer", "train_example", "train_example_2"),
                           phi[:, :, tr, tr]),
        "gradient_kernel": (("step", "layer", "train_example", "train_example_2"),
                            g[:, :, tr, tr]),
        "ntk": (("step", "train_example", "train_example_2"), ntk[:, tr, tr]),
    }
    if p.n > p.n_train:
        te = slice(p.n_train, p.n)
        data["test_outputs"] = (("step", "test_example", "output"), f[:, te, None])
        if p.y_test is not None:
            data["test_loss"] = (("step",), np.mean((f[:, te] - p.y_test[None]) ** 2, axis=1))
    ds = xr.Dataset(data, coords={"step": p.step_coord, "layer": np.arange(1, p.depth + 1),
                                  "output": [0]})
    ds.attrs = {"predictor": "dmft", "config": json.dumps(p.config()),
                "normalisation": json.dumps(
                    "L = (1/P) sum (f - y)^2; Phi^l = <phi(h^l) phi(h^l)>, G^l = <g^l g^l>, "
                    "g^l = (gamma0/alpha) N df/dh^l; ntk weighted by the lr multipliers"),
                **attrs}
    return ds


def relative_change(new, old) -> jax.Array:
    """``||new - old|| / max(||old||, ||new||, tiny)`` over a pytree, the largest leaf's
    (at most 2; a leaf that starts at zero, like the responses of the ``gamma = 0``
    start, counts as a change of 1, not of ``1/tiny``)."""
    leaves = jax.tree_util.tree_map(
        lambda a, b: jnp.linalg.norm((a - b).ravel()) / jnp.maximum(
            jnp.maximum(jnp.linalg.norm(b.ravel()), jnp.linalg.norm(a.ravel())), 1e-30),
        new, old)
    return jnp.max(jnp.stack(jax.tree_util.tree_leaves(leaves)))
