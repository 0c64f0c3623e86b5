r"""Observables of the training instabilities of transformers (Wortsman et al. 2023,
"Small-scale proxies for large-scale Transformer training instabilities", Sec. 3.1).

* ``AttentionLogits``: ``max_attention_logit`` (dim ``block``), per block the largest
  ``|s_ts|``, ``s_ts = tau q_t . k_s`` the scaled attention logits, over the examples, the
  heads and the positions the causal mask allows (``s <= t``). Its growth is the
  attention-logit instability (Dehghani et al. 2023, "Scaling vision transformers to 22
  billion parameters", Sec. 2, "QK normalization"; Wortsman et al. 2023, Sec. 3.1.1),
  which collapses the attention's entropy (Zhai et al. 2023, "Stabilizing transformer
  training by preventing attention entropy collapse") and which qk-layernorm prevents.
  Needs a model with ``max_attention_logits(params, x, hparams)``
  (``dynamics.models.transformer``).
* ``LogPartition``: the log-partition ``log Z = log sum_v exp(f_v)`` of the trained
  outputs ``f`` (output scale and centering included: the logits the cross-entropy sees)
  at every position of the training set; ``log_z_mean`` and ``log_z_max`` over the
  positions that count in the loss (the mask of a masked task), and ``z_loss``, the mean of
  ``(log Z)^2`` over them, the auxiliary loss of Chowdhery et al. (2022, "PaLM", Sec. 5)
  without its coefficient (``1e-4`` there). Its drift away from 0 is the output-logit
  divergence (Wortsman et al. 2023, Sec. 3.1.2). Classification tasks only.

Both are evaluated on the full training set, or on its first ``probe_size`` examples.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dynamics import losses
from dynamics.observables import Observable


def _check_probe_size(owner, value):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                              or value < 1):
        raise ValueError(f"{owner}.probe_size must be None or an int >= 1, got {value!r}")


def _check_rows(owner, probe_size, spec):
    n = spec.task.n_train
    if probe_size is not None and probe_size > n:
        raise ValueError(f"{owner}.probe_size must be <= the {n} training examples, got "
                         f"{probe_size}")


def log_partition_statistics(logits, mask=None) -> dict:
    """``log_z_mean``, ``log_z_max`` and ``z_loss`` (module doc) of ``logits (..., V)``
    over the positions where ``mask`` (shaped like ``logits[..., 0]``; ``None``: every
    position) is true."""
    log_z = jax.nn.logsumexp(logits, axis=-1)
    if mask is None:
        mask = jnp.ones(log_z.shape, bool)
    mask = jnp.broadcast_to(mask, log_z.shape)
    w = mask.astype(log_z.dtype)
    count = jnp.sum(w)
    return {
        "log_z_mean": jnp.sum(w * log_z) / count,
        "log_z_max": jnp.max(jnp.where(mask, log_z, -jnp.inf)),
        "z_loss": jnp.sum(w * jnp.square(log_z)) / count,
    }


@dataclasses.dataclass(frozen=True)
class AttentionLogits(Observable):
    """``max_attention_logit`` (dim ``block``): see the module doc. ``blocks`` (the
    coordinate ``block = 0..blocks-1``) is set from the model's ``depth`` when the spec is
    built, so that a sweep over ``depth`` pads the shallower models' missing blocks with
    NaN."""

    probe_size: int | None = None
    blocks: int | None = None
    dims: ClassVar = {"max_attention_logit": ("block",)}
    descriptions: ClassVar = {
        "max_attention_logit": (
            "largest attention logit",
            "max |s_ts| per block over the training examples (the first `probe_size`), the "
            "heads and the causally allowed positions s <= t, s_ts = tau q_t . k_s the scaled "
            "attention logit (tau = 1/sqrt(d) or, under mup, sqrt(d_0)/d) (Dehghani et al. "
            "2023, Sec. 2; Wortsman et al. 2023, Sec. 3.1.1)"),
        "block": ("transformer block", "index of the block, 0 nearest the embedding"),
    }

    def __post_init__(self):
        _check_probe_size(type(self).__name__, self.probe_size)

    def bind(self, spec):
        if not hasattr(spec.model, "max_attention_logits"):
            raise ValueError(f"AttentionLogits needs a model with attention logits "
                             f"(max_attention_logits, e.g. dynamics.models.transformer."
                             f"Transformer), got {type(spec.model).__name__}")
        _check_rows(type(self).__name__, self.probe_size, spec)
        return dataclasses.replace(self, blocks=getattr(spec.model, "depth", None))

    def coords(self):
        return {} if self.blocks is None else {"block": np.arange(self.blocks)}

    def __call__(self, ctx):
        x = ctx.data["x_train"]
        if self.probe_size is not None:
            x = x[: self.probe_size]
        return {"max_attention_logit": ctx.model.max_attention_logits(ctx.params, x,
                                                                      ctx.hparams)}


@dataclasses.dataclass(frozen=True)
class LogPartition(Observable):
    """``log_z_mean``, ``log_z_max`` and ``z_loss``: see the module doc."""

    probe_size: int | None = None
    descriptions: ClassVar = {
        "log_z_mean": (
            "mean output log-partition",
            "(1/M) Σ log Z over the M positions that count in the loss (the mask of a masked "
            "task; every position otherwise) of the training examples (the first "
            "`probe_size`), log Z = log Σ_v exp(f_v) of the trained outputs f (output scale "
            "and centering included) (Wortsman et al. 2023, Sec. 3.1.2)"),
        "log_z_max": ("largest output log-partition",
                      "max of log Z = log Σ_v exp(f_v) over the same positions as log_z_mean"),
        "z_loss": ("z-loss", "(1/M) Σ (log Z)² over the same positions as log_z_mean, the "
                   "auxiliary loss of Chowdhery et al. 2022 (PaLM, Sec. 5) without its "
                   "coefficient"),
    }

    def __post_init__(self):
        _check_probe_size(type(self).__name__, self.probe_size)

    def applies_to(self, classification):
        return classification

    def bind(self, spec):
        _check_rows(type(self).__name__, self.probe_size, spec)
        return self

    def __call__(self, ctx):
        _, mask = losses.split(ctx.data["y_train"])
        if self.probe_size is None:
            logits = ctx.train_outputs
        else:
            rows = jnp.arange(self.probe_size)
            logits = ctx.outputs(ctx.params, "train", rows)
            mask = None if mask is None else mask[: self.probe_size]
        return log_partition_statistics(logits, mask)
