r"""``OrderParameters``: the DMFT's order parameters measured on a finite network.

For the ``mup`` MLP without biases (``kernels.dmft``), at every log point and on the
training examples: ``feature_kernel`` ``Phi^l = phi(h^l) phi(h^l)^T / N``,
``gradient_kernel`` ``G^l = g^l g^l^T / N`` with ``g^l = (gamma0/alpha) N df/dh^l``, and
``ntk = alpha^2 sigma^2 sum_{l=0}^{L} G^{l+1} Phi^l`` (``G^{L+1} = 1``,
``Phi^0 = x x^T / D``), which is the network's empirical NTK weighted by its learning-rate
multipliers (the kernel of ``f <- f - (2 lr / P) K (f - y)``). These are the variables
``kernels.dmft.solve`` returns, with the same names and dimensions, so a sweep over widths
lines up with the solver's Dataset.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from dynamics import activations
from dynamics.observables import Observable


def hidden_fields(params, x, activation, sigma):
    """Pre-activations ``h^1..h^L`` of the mup MLP (``(P, N)`` each) and the readout
    function of the last one's activation."""
    phi = activations.get(activation)
    d = x.shape[-1]
    hs = [sigma * x @ params[0]["w"] / jnp.sqrt(d)]
    for layer in params[1:-1]:
        n = layer["w"].shape[0]
        hs.append(sigma * phi(hs[-1]) @ layer["w"] / jnp.sqrt(n))
    return hs


@dataclasses.dataclass(frozen=True)
class OrderParameters(Observable):
    """The network's ``feature_kernel``, ``gradient_kernel`` (dims ``layer``,
    ``train_example``, ``train_example_2``) and ``ntk`` (module doc). ``activation`` must
    be the model's, ``depth`` its number of hidden layers (the ``layer`` coordinate is
    ``1..depth``, as in the solver's Dataset)."""

    activation: str = "tanh"
    depth: int = 1
    every: int | None = None
    dims: ClassVar = {
        "feature_kernel": ("layer", "train_example", "train_example_2"),
        "gradient_kernel": ("layer", "train_example", "train_example_2"),
        "ntk": ("train_example", "train_example_2"),
    }
    descriptions: ClassVar = {
        "feature_kernel": ("feature kernel Φ^l", "Φ^l = φ(h^l) φ(h^l)ᵀ / N on the training "
                           "examples, h^l the pre-activations of hidden layer l, N the width "
                           "(Bordelon & Pehlevan 2022)"),
        "gradient_kernel": ("gradient kernel G^l", "G^l = g^l g^lᵀ / N on the training "
                            "examples, g^l = (γ0/α) N ∂f/∂h^l (Bordelon & Pehlevan 2022)"),
        "ntk": ("learning-rate-weighted NTK", "α² σ² Σ_(l=0..L) G^(l+1) Φ^l (G^(L+1) = 1, "
                "Φ^0 = x xᵀ / D): the empirical NTK weighted by the mup learning-rate "
                "multipliers, so that GD reads f <- f - (2 lr / P) K (f - y)"),
        "layer": ("hidden layer", "index l = 1..depth of the hidden layer"),
    }

    def __post_init__(self):
        activations.get(self.activation)
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {self.depth!r}")

    def __call__(self, ctx):
        phi = activations.get(self.activation)
        params = ctx.params
        hp = ctx.hparams
        sigma, alpha = hp["sigma_w"], hp["output_scale"]
        gamma0 = hp["gamma0"]
        x = ctx.data["x_train"]
        n = params[-1]["w"].shape[0]
        depth = len(params) - 1

        def readout_from(perturb):
            """``f`` summed over examples with ``h^l + perturb[l]``: its gradient in the
            perturbations is ``df_mu/dh^l_mu`` row by row."""
            d = x.shape[-1]
            h = sigma * x @ params[0]["w"] / jnp.sqrt(d) + perturb[0]
            for l, layer in enumerate(params[1:-1], start=1):
                h = sigma * phi(h) @ layer["w"] / jnp.sqrt(n) + perturb[l]
            f = alpha * sigma * phi(h) @ params[-1]["w"] / (gamma0 * n)
            return jnp.sum(f), h

        hs = hidden_fields(params, x, self.activation, sigma)
        zeros = [jnp.zeros_like(h) for h in hs]
        grads = jax.grad(lambda p: readout_from(p)[0])(zeros)
        feats = jnp.stack([phi(h) @ phi(h).T / n for h in hs])
        gs = [(gamma0 / alpha) * n * g for g in grads]
        gkern = jnp.stack([g @ g.T / n for g in gs])
        phi0 = x @ x.T / x.shape[-1]
        ntk = feats[-1] + gkern[0] * phi0
        for l in range(1, depth):
            ntk = ntk + gkern[l] * feats[l - 1]
        return {"feature_kernel": feats, "gradient_kernel": gkern,
                "ntk": alpha**2 * sigma**2 * ntk}

    def coords(self):
        return {"layer": list(range(1, self.depth + 1))}
