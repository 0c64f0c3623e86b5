r"""Sequence tasks for language models, generated on the machine.

``markov_chain``: next-token prediction on sequences drawn from a random first-order
Markov chain over ``V`` tokens. Its transition matrix ``P`` has rows drawn from a
symmetric Dirichlet distribution ``Dir(concentration)`` (small concentrations give peaked
rows: a low-entropy "language"); the first token of a sequence is uniform. The input is
``x = (s_0, ..., s_{T-1})`` and the target at every position the next token
``y_t = s_{t+1}``: the per-position cross-entropy of a causal model.

Its Bayes-optimal loss has a closed form, which a trained model's loss is compared with:
the best prediction of ``s_{t+1}`` given the prefix is the row ``P_{s_t}``, so the
expected cross-entropy at position ``t`` is ``mu_t . h`` with ``h_i = -sum_j P_ij log P_ij``
the entropy of row ``i`` and ``mu_t = mu_0 P^t`` (``mu_0`` uniform) the distribution of
``s_t`` (Cover & Thomas 2006, eq. 4.25 for the entropy rate of a Markov chain, its
stationary limit ``pi . h``):

.. math::

    L^* = \frac{1}{T} \sum_{t=0}^{T-1} \mu_0 P^t h,

in nats, :func:`markov_chain_bayes_loss` of the task (the loss is the mean over
positions, ``dynamics.losses``). :func:`markov_chain_sample_loss` is the Bayes predictor's
loss on the sequences of a split themselves, ``-(1/NT) sum log P_{s_t s_{t+1}}``: the
floor of that split's measured loss, without the split's sampling noise around ``L^*``.
"""

from __future__ import annotations

import numpy as np

from dynamics.checks import check_choice, check_float, check_int
from dynamics.losses import LABEL_LOSSES
from dynamics.tasks.task import check_seed, generated, rng


def transition_matrix(vocab_size: int, concentration: float, seed: int) -> np.ndarray:
    """The chain's ``P`` (rows ``Dir(concentration)``), from the seed's teacher stream."""
    alpha = np.full(vocab_size, concentration)
    return rng(seed, "teacher").dirichlet(alpha, size=vocab_size)


def bayes_cross_entropy(p: np.ndarray, seq_len: int) -> float:
    """``L^*`` of the module doc for the transition matrix ``p``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    mu = np.full(p.shape[0], 1.0 / p.shape[0])
    total = 0.0
    for _ in range(seq_len):
        total += mu @ h
        mu = mu @ p
    return float(total / seq_len)


def _sample(p: np.ndarray, n: int, length: int, gen: np.random.Generator) -> np.ndarray:
    """``n`` sequences of ``length`` tokens (inverse-CDF sampling, all rows at once)."""
    cdf = np.cumsum(p, axis=1)
    cdf[:, -1] = 1.0
    s = np.empty((n, length), dtype=np.int32)
    s[:, 0] = gen.integers(0, p.shape[0], size=n)
    for t in range(1, length):
        u = gen.random(n)
        s[:, t] = np.minimum((u[:, None] > cdf[s[:, t - 1]]).sum(axis=1), p.shape[0] - 1)
    return s


def markov_chain(vocab_size: int = 32, seq_len: int = 16, n_train: int = 512,
                 n_test: int = 128, concentration: float = 0.2, seed: int = 0,
                 loss: str = "cross_entropy"):
    """Next-token prediction on a random Markov chain (module doc): inputs ``(N, T)``
    integer tokens, targets ``(N, T)`` the next tokens, ``n_classes = vocab_size``.
    ``loss``: a loss that takes labels, ``"cross_entropy"`` or ``"cross_entropy_z_loss"``
    (the same data; the Bayes loss is that of the cross-entropy either way). The chain
    comes from the seed's teacher stream, the train and test sequences from its train and
    test streams."""
    vocab_size = check_int("vocab_size", vocab_size, minimum=2)
    seq_len = check_int("seq_len", seq_len)
    n_train = check_int("n_train", n_train)
    n_test = check_int("n_test", n_test)
    concentration = check_float("concentration", concentration, 0.0, low_open=True)
    seed = check_seed(seed)
    loss = check_choice("loss", loss, LABEL_LOSSES)
    p = transition_matrix(vocab_size, concentration, seed)
    train = _sample(p, n_train, seq_len + 1, rng(seed, "train"))
    test = _sample(p, n_test, seq_len + 1, rng(seed, "test"))
    return generated(
        "markov_chain", train[:, :-1], train[:, 1:], test[:, :-1], test[:, 1:],
        loss=loss, n_classes=vocab_size, label_noise=0.0, seed=seed,
        config=dict(vocab_size=vocab_size, seq_len=seq_len, n_train=n_train, n_test=n_test,
                    concentration=concentration, seed=seed, loss=loss),
    )


def markov_chain_bayes_loss(task) -> float:
    """``L^*`` (module doc) of a ``markov_chain`` task, from its config."""
    c = task.config
    if c.get("generator") != "markov_chain":
        raise ValueError(f"task must be a markov_chain task, got {c.get('generator')!r}")
    p = transition_matrix(c["vocab_size"], c["concentration"], c["seed"])
    return bayes_cross_entropy(p, c["seq_len"])


def markov_chain_sample_loss(task, split: str = "test") -> float:
    """The cross-entropy of the chain's own predictions ``P_{s_t}`` on the sequences of
    ``split`` (module doc), in nats."""
    c = task.config
    if c.get("generator") != "markov_chain":
        raise ValueError(f"task must be a markov_chain task, got {c.get('generator')!r}")
    check_choice("split", split, ("train", "test"))
    p = transition_matrix(c["vocab_size"], c["concentration"], c["seed"])
    x = np.asarray(getattr(task, f"x_{split}"))
    y = np.asarray(getattr(task, f"y_{split}"))
    return float(-np.mean(np.log(p[x, y])))
