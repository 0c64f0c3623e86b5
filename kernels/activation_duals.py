r"""Dual activations: Gaussian expectations of an activation and of its derivative.

For a centred Gaussian pair ``(u, v)`` with ``E u^2 = q1``, ``E v^2 = q2``, ``E uv = c``,
the dual of ``phi`` (Daniely, Frostig & Singer 2016) is the pair

.. math::

    k(q_1, q_2, c) = E[\phi(u)\phi(v)], \qquad \dot k(q_1, q_2, c) = E[\phi'(u)\phi'(v)],

which is all the infinite-width recursion of ``kernels.infinite`` needs (Lee et al. 2018,
eq. 5; Jacot, Gabriel & Hongler 2018, Thm 1). Closed forms, with
``cos theta = c / sqrt(q1 q2)``:

* ``linear``: ``k = c``, ``kdot = 1``.
* ``relu``: the first- and zeroth-order arc-cosine kernels (Cho & Saul 2009, eq. 6 with
  ``n = 1`` and ``n = 0``): ``k = sqrt(q1 q2) (sin theta + (pi - theta) cos theta) / (2 pi)``,
  ``kdot = (pi - theta) / (2 pi)``.
* ``abrelu(a, b)``: ``phi(x) = a min(x, 0) + b max(x, 0) = (b - a) relu(x) + a x``, so
  ``k = (b - a)^2 k_relu + a b c`` and ``kdot = (b - a)^2 kdot_relu + a b`` (using
  ``E[relu(u) v] = c / 2``). ``leaky_relu(s)`` is ``abrelu(s, 1)``. The simulator's
  ``dynamics.MLP`` has no leaky-relu or abrelu activation; these duals serve the kernel
  functions (``kernels.nngp(..., activation=abrelu(a, b))``) and match neural-tangents'
  ``stax.ABRelu`` / ``stax.LeakyRelu``.
* ``erf``: Williams (1997), eq. 11: ``k = (2/pi) arcsin(2c / sqrt((1 + 2 q1)(1 + 2 q2)))``;
  with ``erf'(x) = (2/sqrt(pi)) exp(-x^2)``,
  ``kdot = (4/pi) / sqrt((1 + 2 q1)(1 + 2 q2) - 4 c^2)``.
* any other elementwise ``phi`` (``tanh``, ``gelu``, a user function): tensor-product
  Gauss-Hermite quadrature with ``degree`` nodes per axis on
  ``u = sqrt(q1) z1``, ``v = sqrt(q2) (rho z1 + sqrt(1 - rho^2) z2)``, ``phi'`` by
  ``jax.grad``. For analytic ``phi`` the error falls exponentially with ``degree`` but
  grows with the variance (``phi(sqrt(q) z)`` sharpens): with the default ``degree = 96``
  the relative error for ``erf`` against its closed form is ~1e-16 for ``q <= 1``, below
  1e-7 for ``q <= 4`` and ~1e-3 at ``q ~ 16``; ``gelu`` agrees with neural-tangents'
  closed form to 6e-7 on the reference cases. Kinks converge only algebraically
  (``relu`` by quadrature: ~2e-3), which is why ``relu`` uses its closed form.
  ``selu`` (Klambauer et al. 2017, eq. 2) has a kink at 0 too: its quadrature dual is off
  by ~1e-4 at ``q1 = q2 = c = 1`` (``E selu(z)^2 = 1`` there exactly); the single-input
  moments in closed form are ``kernels.criticality.selu_moment_map``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dynamics import activations


@dataclasses.dataclass(frozen=True)
class Dual:
    """``fn(q1, q2, c) -> (k, kdot)`` (broadcasting arrays) for the activation ``name``."""

    name: str
    fn: Callable = dataclasses.field(repr=False, compare=False)

    def __call__(self, q1, q2, c):
        return self.fn(q1, q2, c)


def _cos_theta(q1, q2, c):
    return jnp.clip(c / jnp.sqrt(q1 * q2), -1.0, 1.0)


def _relu(q1, q2, c):
    cos = _cos_theta(q1, q2, c)
    theta = jnp.arccos(cos)
    sin = jnp.sqrt(jnp.clip(1.0 - cos**2, 0.0, 1.0))
    k = jnp.sqrt(q1 * q2) * (sin + (jnp.pi - theta) * cos) / (2 * jnp.pi)
    return k, (jnp.pi - theta) / (2 * jnp.pi)


def _linear(q1, q2, c):
    return c, jnp.ones_like(c)


def _erf(q1, q2, c):
    a = (1 + 2 * q1) * (1 + 2 * q2)
    k = (2 / jnp.pi) * jnp.arcsin(jnp.clip(2 * c / jnp.sqrt(a), -1.0, 1.0))
    return k, (4 / jnp.pi) / jnp.sqrt(a - 4 * c**2)


def abrelu(a: float, b: float) -> Dual:
    """``phi(x) = a min(x, 0) + b max(x, 0)`` (closed form, see the module doc)."""

    def fn(q1, q2, c):
        k, kdot = _relu(q1, q2, c)
        return (b - a) ** 2 * k + a * b * c, (b - a) ** 2 * kdot + a * b

    return Dual(f"abrelu({a}, {b})", fn)


def leaky_relu(slope: float) -> Dual:
    """``phi(x) = max(x, slope x)`` for ``0 <= slope <= 1``: ``abrelu(slope, 1)``."""
    d = abrelu(slope, 1.0)
    return Dual(f"leaky_relu({slope})", d.fn)


def quadrature(phi: Callable, degree: int = 96, name: str | None = None,
               chunk: int = 4096) -> Dual:
    """The dual of any elementwise ``phi`` by ``degree x degree`` Gauss-Hermite quadrature
    (see the module doc for its accuracy). Entries are evaluated ``chunk`` at a time."""
    if not isinstance(degree, int) or degree < 2:
        raise ValueError(f"degree must be an int >= 2, got {degree!r}")
    z, w = np.polynomial.hermite_e.hermegauss(degree)
    w = w / math.sqrt(2 * math.pi)
    dphi = jnp.vectorize(jax.grad(phi))

    def entry(args):
        q1, q2, c = args
        zz, ww = jnp.asarray(z, q1.dtype), jnp.asarray(w, q1.dtype)
        rho = jnp.clip(c / jnp.sqrt(q1 * q2), -1.0, 1.0)
        u = jnp.sqrt(q1) * zz[:, None]
        v = jnp.sqrt(q2) * (rho * zz[:, None] + jnp.sqrt(1 - rho**2) * zz[None, :])
        weights = ww[:, None] * ww[None, :]
        return jnp.sum(weights * phi(u) * phi(v)), jnp.sum(weights * dphi(u) * dphi(v))

    @jax.jit
    def fn(q1, q2, c):
        q1, q2, c = jnp.broadcast_arrays(q1, q2, c)
        shape = c.shape
        flat = tuple(a.reshape(-1) for a in (q1, q2, c))
        k, kdot = jax.lax.map(entry, flat, batch_size=min(chunk, max(flat[0].size, 1)))
        return k.reshape(shape), kdot.reshape(shape)

    return Dual(name or getattr(phi, "__name__", "quadrature"), fn)


CLOSED_FORMS = {"linear": _linear, "relu": _relu, "erf": _erf}


def get(activation) -> Dual:
    """The dual of ``activation``: a ``Dual``, a name with a closed form
    (``linear``, ``relu``, ``erf``), ``leaky_relu`` (slope 0.01), or any other name of
    ``dynamics.activations`` (``tanh``, ``gelu``: quadrature)."""
    if isinstance(activation, Dual):
        return activation
    if activation in CLOSED_FORMS:
        return Dual(activation, CLOSED_FORMS[activation])
    if activation == "leaky_relu":
        return leaky_relu(0.01)
    known = sorted(set(CLOSED_FORMS) | set(activations.ACTIVATIONS) | {"leaky_relu"})
    if not isinstance(activation, str) or activation not in activations.ACTIVATIONS:
        raise ValueError(f"activation must be a kernels.activation_duals.Dual or one of "
                         f"{known}, got {activation!r}")
    return _named_quadrature(activation)


@functools.lru_cache(maxsize=None)
def _named_quadrature(name: str) -> Dual:
    """One quadrature dual (one compiled program per shape) per activation name."""
    return quadrature(activations.get(name), name=name)
