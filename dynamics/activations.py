"""Elementwise activations by name.

``linear`` gives deep linear networks (Saxe, McClelland & Ganguli 2014); ``erf`` has
closed-form infinite-width kernels (Williams 1997); ``gelu`` is the exact form
x * Phi(x) (Hendrycks & Gimpel 2016), not the tanh approximation; ``quadratic`` is
``x^2``, the activation of the two-layer networks that learn modular arithmetic with
interpretable periodic weights (Gromov 2023, "Grokking modular arithmetic";
Doshi, Das, He & Gromov 2024, "To grok or not to grok").
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _linear(x):
    return x


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def _quadratic(x):
    return x * x


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "linear": _linear,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "erf": jax.scipy.special.erf,
    "gelu": _gelu,
    "quadratic": _quadratic,
}


def get(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called ``name``; ``ValueError`` listing the known ones otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}"
        ) from None


def _selu(x):
    """selu (Klambauer et al. 2017, eq. 2): ``lambda x`` for ``x > 0``,
    ``lambda alpha (e^x - 1)`` otherwise, with their ``alpha_01 ~ 1.6733``,
    ``lambda_01 ~ 1.0507`` (Sec. 3), which make mean 0 and variance 1 the fixed point of
    a layer with normalised weights (``kernels.criticality.selu_moment_map``)."""
    return jax.nn.selu(x)


ACTIVATIONS["selu"] = _selu
