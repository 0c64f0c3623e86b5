r"""Two-layer networks (``L = 1``): sampled single-site processes integrated forward.

With one hidden layer the drives are static: ``u ~ N(0, sigma^2 Phi^0)`` over the
examples and a scalar ``rho ~ N(0, sigma^2)`` (the readout weight), and the single-site
equations of ``kernels.dmft`` reduce to two running sums per sample,

.. math::

    a(t) = \sum_{s<t} \Phi^0 (\Delta(s) \odot g(s)), \quad
    \zeta(t) = \sum_{s<t} \Delta(s)\cdot\phi(h(s)), \qquad
    h(t) = u + \gamma\sigma^2\eta\, a(t), \quad z(t) = \rho + \gamma\sigma^2\eta\,\zeta(t),

``g = phi'(h) z``; the output is ``f(t) = sigma^2 <d phi(h(t))/d rho>/gamma +
eta sigma^2 <zeta(t) phi(h(t))>`` (Stein's lemma on ``rho``; the derivative is carried
forward as a tangent). Every step averages over the ``S`` samples to get ``f(t)`` and
``Delta(t)`` before the next: the samples are integrated together, with no outer
iteration (Bordelon & Pehlevan 2022, Sec. 5, two-layer case).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels.dmft.common import activation_pair, psd_sqrt


@functools.partial(jax.jit, static_argnames=("activation", "steps"))
def _integrate(eps_u, eps_rho, phi0, y, train_mask, *, activation, steps, sigma, gamma, eta):
    phi_fn, dphi_fn = activation_pair(activation)
    s2 = sigma**2
    u = eps_u @ psd_sqrt(s2 * phi0)
    rho = sigma * eps_rho
    n_train = jnp.sum(train_mask)
    y_full = jnp.zeros(phi0.shape[0], phi0.dtype).at[: y.shape[0]].set(y)
    n_samples = u.shape[0]

    def fields(a, zeta, rho):
        h = u + gamma * s2 * eta * a
        z = rho[:, None] + gamma * s2 * eta * zeta[:, None]
        return phi_fn(h), dphi_fn(h) * z

    def step(carry, _):
        a, zeta, a_dot, zeta_dot = carry
        (phi, g), (phi_dot, g_dot) = jax.jvp(
            fields, (a, zeta, rho), (a_dot, zeta_dot, jnp.full_like(rho, 1.0 / gamma)))
        f = s2 * jnp.mean(phi_dot, 0) + s2 * eta * jnp.mean(zeta[:, None] * phi, 0)
        delta = (2.0 / n_train) * (y_full - f) * train_mask
        phi1 = phi.T @ phi / n_samples
        g1 = g.T @ g / n_samples
        carry = (a + (delta * g) @ phi0, zeta + phi @ delta,
                 a_dot + (delta * g_dot) @ phi0, zeta_dot + phi_dot @ delta)
        return carry, (f, phi1, g1)

    zeros = jnp.zeros_like(u)
    init = (zeros, jnp.zeros_like(rho), zeros, jnp.zeros_like(rho))
    _, (f, phi1, g1) = jax.lax.scan(step, init, None, length=steps + 1)
    return f, phi1[:, None], g1[:, None]


def solve_two_layer(problem, samples: int, key, half: bool = True):
    """Outputs ``f (T+1, n)`` and equal-time ``Phi^1``, ``G^1`` (``(T+1, 1, n, n)``) from
    ``samples`` sampled processes; also the same with the first half of the samples (for
    the Monte Carlo error) when ``half``, else ``None``."""
    p = problem
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    k_u, k_rho = jax.random.split(key)
    eps_u = jax.random.normal(k_u, (samples, p.n), dtype)
    eps_rho = jax.random.normal(k_rho, (samples,), dtype)
    args = (jnp.asarray(p.phi0, dtype), jnp.asarray(p.y, dtype),
            jnp.asarray(p.train_mask, dtype))
    kw = dict(activation=p.activation, steps=p.steps, sigma=p.sigma, gamma=p.gamma, eta=p.eta)
    full = _integrate(eps_u, eps_rho, *args, **kw)
    if not half:
        return full, None
    return full, _integrate(eps_u[: samples // 2], eps_rho[: samples // 2], *args, **kw)
