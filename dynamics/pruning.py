"""Pruning hidden neurons: the network with chosen neurons of a hidden layer removed.

Removing neuron ``k`` of hidden layer ``l`` of an ``MLP`` (``params`` a tuple over weight
layers of ``{"w": (n_in, n_out), "b": (n_out,)}``) zeroes its incoming weights (column
``k`` of ``params[l]["w"]``), its bias ``params[l]["b"][k]`` when there is one, and its
outgoing weights (row ``k`` of ``params[l + 1]["w"]``): the neuron then contributes
nothing to the outputs, whatever its activation (``phi(0)`` times a zero row). This is
the pruning of the memorising, low-IPR neurons of Doshi, Das, He & Gromov (2024, "To
grok or not to grok", their pruning experiment; ``dynamics.fourier``), which zeroes
both sides of each pruned neuron.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from dynamics.checks import check_int


def prune_neurons(params, neurons, layer: int = 0):
    """``params`` with the hidden neurons ``neurons`` (indices, or a boolean mask of the
    layer's width) of the output of weight layer ``layer`` removed (module doc). Pure: the
    input is not modified. ``layer`` must have a next layer (not the readout)."""
    check_int("layer", layer, minimum=0)
    if not isinstance(params, (tuple, list)) or layer + 1 >= len(params):
        raise ValueError(f"layer must index a hidden layer with a next weight layer, i.e. be "
                         f"< {len(params) - 1 if isinstance(params, (tuple, list)) else 0}, "
                         f"got {layer}")
    width = params[layer]["w"].shape[-1]
    idx = np.asarray(neurons)
    if idx.dtype == np.bool_:
        if idx.shape != (width,):
            raise ValueError(f"neurons as a mask must have shape ({width},), got {idx.shape}")
        keep = ~idx
    else:
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0
                         or idx.max() >= width):
            raise ValueError(f"neurons must be indices in [0, {width}) or a boolean mask, got "
                             f"{neurons!r}")
        keep = np.ones(width, bool)
        keep[idx.astype(np.int64)] = False
    keep = jnp.asarray(keep)
    out = list(params)
    this = dict(params[layer])
    this["w"] = jnp.where(keep[None, :], this["w"], 0)
    if "b" in this:
        this["b"] = jnp.where(keep, this["b"], 0)
    nxt = dict(params[layer + 1])
    nxt["w"] = jnp.where(keep[:, None], nxt["w"], 0)
    out[layer], out[layer + 1] = this, nxt
    return type(params)(out) if isinstance(params, tuple) else out
