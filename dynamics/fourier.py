r"""How periodic a network's neurons are: the inverse participation ratio (IPR) of a
vector, and of each hidden neuron's weights in the Fourier basis of ``Z_p``.

The IPR of order ``r`` of a vector ``v`` of ``n`` entries (Doshi, Das, He & Gromov 2024,
"To grok or not to grok", their ``IPR_r``, used with ``r = 2``) is

.. math::  \mathrm{IPR}_r(v) = \sum_{k=1}^{n} \Big(\frac{|v_k|}{\|v\|_2}\Big)^{2r}
           = \Big(\frac{\|v\|_{2r}}{\|v\|_2}\Big)^{2r},

which is 1 when ``v`` has a single non-zero entry and ``1 / n^{r-1}`` when its entries
all have the same modulus (``1/n`` at ``r = 2``): it counts, inversely, how many entries
share the vector's norm.

A network trained on ``a + b mod p`` learns periodic neurons: the weights of neuron ``k``
from the one-hot input ``a`` are close to ``cos(2 pi f a / p + phi)`` for one frequency
``f`` (Gromov 2023, "Grokking modular arithmetic", whose analytic solution has such
weights), so the moduli of their discrete Fourier transform sit on one frequency and the
IPR of those moduli is close to 1; a neuron that memorises a few examples has weights
without a dominant frequency and a low IPR. ``fourier_ipr`` takes the IPR of ``|rfft(v)|``
(the ``p // 2 + 1`` non-negative frequencies of a real vector; Doshi et al. 2024, the
convention of the authors' public code), and ``neuron_fourier_ipr`` averages it, for every
hidden neuron of a one-hidden-layer ``MLP`` on the one-hot pairs ``[onehot_p(a),
onehot_p(b)]``, over the neuron's three weight vectors: from ``a`` (``W^0[:p, k]``), from
``b`` (``W^0[p:, k]``) and to the ``p`` outputs (``W^1[k, :]``), as the paper does.

Closed forms (the tests' oracles): a pure mode ``cos(2 pi f n / p + phi)`` with ``0 < f <
p/2`` has ``|rfft|`` non-zero at ``f`` alone, IPR 1; a delta ``e_j`` has ``|rfft| = 1``
at every one of the ``p // 2 + 1`` frequencies, IPR ``(p // 2 + 1)^{1-r}``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from dynamics.checks import check_int
from dynamics.observables import Observable


def ipr(v, r: int = 2, axis: int = -1):
    """``IPR_r(v) = sum_k (|v_k| / ||v||_2)^{2r}`` along ``axis`` (module doc); NaN for a
    zero vector."""
    check_int("r", r)
    a = jnp.abs(jnp.asarray(v))
    norm = jnp.sqrt(jnp.sum(a * a, axis=axis, keepdims=True))
    return jnp.sum((a / norm) ** (2 * r), axis=axis)


def fourier_ipr(v, r: int = 2, axis: int = -1):
    """``IPR_r(|rfft(v)|)`` along ``axis``: the IPR of the moduli of the real discrete
    Fourier transform of ``v`` (module doc); 1 for a pure periodic mode."""
    return ipr(jnp.abs(jnp.fft.rfft(jnp.asarray(v), axis=axis)), r=r, axis=axis)


def neuron_fourier_ipr(params, p: int, r: int = 2):
    """Per hidden neuron of a one-hidden-layer ``MLP`` on one-hot pairs (``params[0]["w"]``
    of shape ``(2p, N)``, ``params[1]["w"]`` of shape ``(N, p)``): the mean of the Fourier
    IPRs of its weights from ``a``, from ``b`` and to the outputs, shape ``(N,)`` (module
    doc; Doshi et al. 2024)."""
    check_int("p", p, minimum=2)
    w_in, w_out = params[0]["w"], params[1]["w"]
    if w_in.shape[0] != 2 * p or w_out.shape[-1] != p:
        raise ValueError(f"params must be a one-hidden-layer MLP on one-hot pairs of Z_{p}: "
                         f"first weight (2p={2 * p}, N) and readout (N, p={p}), got shapes "
                         f"{w_in.shape} and {w_out.shape}")
    parts = (fourier_ipr(w_in[:p], r, axis=0), fourier_ipr(w_in[p:], r, axis=0),
             fourier_ipr(w_out, r, axis=1))
    return sum(parts) / 3.0


@dataclasses.dataclass(frozen=True)
class NeuronFourierIPR(Observable):
    """``neuron_fourier_ipr`` (dim ``neuron``): ``neuron_fourier_ipr(params, p, r)`` of a
    one-hidden-layer ``MLP`` on the one-hot pairs of ``Z_p``, at the log points."""

    p: int = 97
    r: int = 2

    dims: ClassVar = {"neuron_fourier_ipr": ("neuron",)}
    descriptions: ClassVar = {
        "neuron_fourier_ipr": ("Fourier IPR of each hidden neuron",
                               "mean over the neuron's weights from a, from b and to the "
                               "outputs of IPR_r(|rfft(w)|) = sum_f (|w_f| / ||w||)^(2r) "
                               "(Doshi et al. 2024): 1 for a pure frequency, ~2/(p/2) for "
                               "random weights"),
    }

    def __post_init__(self):
        check_int("p", self.p, minimum=2)
        check_int("r", self.r)

    def bind(self, spec):
        if spec.task.in_dim != 2 * self.p or spec.task.out_dim != self.p:
            raise ValueError(f"NeuronFourierIPR(p={self.p}) needs one-hot pairs of Z_p "
                             f"(in_dim 2p={2 * self.p}, out_dim p={self.p}), got in_dim "
                             f"{spec.task.in_dim} and out_dim {spec.task.out_dim}")
        return self

    def __call__(self, ctx):
        return {"neuron_fourier_ipr": neuron_fourier_ipr(ctx.params, self.p, self.r)}
