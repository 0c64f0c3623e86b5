r"""Stochastic trace estimators with standard errors.

* Hutchinson (1989; Avron & Toledo 2011, Def. 1): ``tr(A) ~ (1/m) sum_i z_i^T A z_i``
  with Rademacher ``z_i`` (entries +-1). Unbiased, with per-sample variance
  ``2 (||A||_F^2 - sum_i A_ii^2)`` (Avron & Toledo 2011, Lemma 1); the standard error
  reported is the sample standard deviation of the ``m`` terms over ``sqrt(m)``.
* Hutch++ (Meyer, Musco, Musco & Woodruff 2021, Alg. 1): with ``m`` products, a sketch
  ``Q = orth(A S)`` of ``m/3`` Rademacher columns captures the top of the spectrum
  exactly, ``tr(Q^T A Q)``, and Hutchinson with ``m/3`` Rademacher vectors projected onto
  the complement estimates the rest, ``tr((I - QQ^T) A (I - QQ^T))``. Error
  ``O(1/m)`` instead of ``O(1/sqrt m)`` for positive semi-definite ``A`` (their Thm 1).
  The standard error is that of the Hutchinson part (the sketched part is exact given
  ``Q``).

Products are taken one probe at a time (``lax.map``), so memory is that of one product.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from dynamics import runtime
from dynamics.curvature.lanczos import flat_operator, small_dtype


class TraceEstimate(NamedTuple):
    """``estimate`` and its ``stderr`` (sample standard deviation of the Hutchinson
    terms over the square root of their number)."""

    estimate: jax.Array
    stderr: jax.Array


def rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype)


def _mean_and_stderr(terms):
    m = terms.shape[0]
    mean = jnp.mean(terms)
    if m < 2:
        return mean, jnp.full((), jnp.nan, terms.dtype)
    return mean, jnp.std(terms, ddof=1) / jnp.sqrt(m)


def hutchinson(matvec: Callable, like, key, *, samples: int = 10) -> TraceEstimate:
    """Hutchinson's estimate of ``tr(A)`` from ``samples`` Rademacher probes."""
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an int >= 1, got {samples!r}")
    flat_matvec, flat, _ = flat_operator(matvec, like)
    tdt = small_dtype(flat.dtype)
    z = rademacher(key, (samples, flat.shape[0]), flat.dtype)
    terms = jax.lax.map(lambda v: jnp.dot(v.astype(tdt), flat_matvec(v).astype(tdt)), z)
    return TraceEstimate(*_mean_and_stderr(terms))


def hutch_plus_plus(matvec: Callable, like, key, *, samples: int = 12) -> TraceEstimate:
    """Hutch++ (Meyer et al. 2021, Alg. 1) with ``samples`` products (a multiple of 3:
    ``samples/3`` for the sketch ``A S``, as many for ``Q^T A Q``, and ``samples/3``
    Hutchinson probes on the complement)."""
    if not isinstance(samples, int) or samples < 6 or samples % 3:
        raise ValueError(f"samples must be a multiple of 3 and >= 6, got {samples!r}")
    flat_matvec, flat, _ = flat_operator(matvec, like)
    tdt = small_dtype(flat.dtype)
    third = samples // 3
    n = flat.shape[0]
    k_s, k_g = jax.random.split(key)
    s = rademacher(k_s, (third, n), flat.dtype)
    g = rademacher(k_g, (third, n), flat.dtype)
    sketch = jax.lax.map(flat_matvec, s)  # rows: (A S)^T
    q, _ = runtime.unbatched_lapack(jnp.linalg.qr)(sketch.T)  # (n, third), orthonormal
    aq = jax.lax.map(flat_matvec, q.T)  # rows: (A Q)^T
    top = jnp.sum(q.T.astype(tdt) * aq.astype(tdt))
    g_perp = g - (g @ q) @ q.T
    terms = jax.lax.map(
        lambda v: jnp.dot(v.astype(tdt), flat_matvec(v).astype(tdt)), g_perp
    )
    mean, stderr = _mean_and_stderr(terms)
    return TraceEstimate(top + mean, stderr)
