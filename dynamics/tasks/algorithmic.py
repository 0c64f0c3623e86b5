"""Algorithmic tasks: modular arithmetic (Power et al. 2022), as one-hot pairs for MLPs or
as token sequences for transformers."""

from __future__ import annotations

import numpy as np

from dynamics.checks import check_choice, check_float, check_int, is_int
from dynamics.losses import LOSSES, takes_labels
from dynamics.tasks.task import Task, check_label_noise, check_seed, generated, one_hot, rng

OPERATIONS = ("add", "sub", "mul", "div")
ENCODINGS = ("onehot", "tokens")


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    k = 3
    while k * k <= n:
        if n % k == 0:
            return False
        k += 2
    return True

def _modular_labels(a: np.ndarray, b: np.ndarray, p: int, operation: str) -> np.ndarray:
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    if operation == "add":
        return (a + b) % p
    if operation == "sub":
        return (a - b) % p
    if operation == "mul":
        return (a * b) % p
    inverse = np.zeros(p, dtype=np.int64)
    inverse[1:] = [pow(k, p - 2, p) for k in range(1, p)]  # Fermat: b^{p-2} = b^{-1} mod p
    return (a * inverse[b]) % p


def modular_arithmetic(
    p: int = 97,
    operation: str = "add",
    train_fraction: float = 0.5,
    seed: int = 0,
    loss: str = "cross_entropy",
    label_noise: float = 0.0,
    encoding: str = "onehot",
) -> Task:
    """All pairs ``(a, b)`` with label ``c = a op b mod p`` (Power et al., 2022).

    Power, Burda, Edwards, Babuschkin & Misra (2022, "Grokking: generalization
    beyond overfitting on small algorithmic datasets"). ``p`` must be prime
    (so that ``Z_p`` is a field and ``div`` is defined); ``operation`` is
    ``add`` (a + b), ``sub`` (a - b), ``mul`` (a b) or ``div`` (a b^{-1}, with
    ``b != 0``, ``b^{-1} = b^{p-2} mod p``). The ``N = p^2`` pairs (``p (p - 1)`` for div)
    are shuffled with the seed's ``split`` stream; the first
    ``round(train_fraction * N)`` form the train set, the rest the test set (both must
    be non-empty).

    ``encoding="onehot"``: the input is the concatenation ``[onehot_p(a), onehot_p(b)]``
    (dimension ``2p``), as in the MLP setting of Gromov (2023, "Grokking modular
    arithmetic"); ``n_classes = p``.

    ``encoding="tokens"``: the input is the integer sequence ``(a, b, =)`` of shape
    ``(N, 3)`` over a vocabulary of ``p + 1`` tokens (``0..p-1`` and ``= = p``), as in the
    transformer setting of Power et al. (2022) and Nanda et al. (2023, "Progress
    measures for grokking via mechanistic interpretability"); the targets are the next
    tokens ``(b, =, c)`` per position with a mask that keeps the last position only, so
    the loss and the accuracy are those of the answer ``c``; ``n_classes = p + 1`` (the
    vocabulary, so that embeddings can be tied).

    ``loss="mse"`` gives one-hot float32 targets in {0, 1} (Gromov, 2023).
    """
    if not is_int(p) or p < 2 or not _is_prime(int(p)):
        raise ValueError(f"p must be a prime int (>= 2), got {p!r}")
    p = int(p)
    operation = check_choice("operation", operation, OPERATIONS)
    train_fraction = check_float("train_fraction", train_fraction, 0.0, 1.0,
                                 low_open=True, high_open=True)
    seed = check_seed(seed)
    loss = check_choice("loss", loss, LOSSES)
    label_noise = check_label_noise(label_noise, loss)
    encoding = check_choice("encoding", encoding, ENCODINGS)

    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    if operation == "div":
        a, b = a[b != 0], b[b != 0]
    n_pairs = a.size
    n_train = int(round(train_fraction * n_pairs))
    if not 1 <= n_train <= n_pairs - 1:
        raise ValueError(
            f"train_fraction={train_fraction} gives {n_train} of {n_pairs} pairs for training; "
            f"both train and test sets must be non-empty"
        )
    order = rng(seed, "split").permutation(n_pairs)
    a, b = a[order], b[order]
    labels = _modular_labels(a, b, p, operation).astype(np.int32)
    mask = None
    if encoding == "onehot":
        n_classes = p
        x = np.zeros((n_pairs, 2 * p), dtype=np.float32)
        x[np.arange(n_pairs), a] = 1.0
        x[np.arange(n_pairs), p + b] = 1.0
    else:
        n_classes = p + 1
        equals = np.full(n_pairs, p, dtype=np.int32)
        x = np.stack([a, b, equals], axis=1).astype(np.int32)
        labels = np.stack([b, equals, labels], axis=1).astype(np.int32)
        mask = np.zeros((n_pairs, 3), dtype=bool)
        mask[:, -1] = True
    y = labels if takes_labels(loss) else one_hot(labels, n_classes)

    def rows(arr, lo, hi):
        return None if arr is None else arr[lo:hi]

    return generated(
        "modular_arithmetic",
        x[:n_train], y[:n_train], x[n_train:], y[n_train:],
        loss=loss, n_classes=n_classes, label_noise=label_noise, seed=seed,
        mask_train=rows(mask, 0, n_train), mask_test=rows(mask, n_train, None),
        config=dict(p=p, operation=operation, train_fraction=train_fraction, seed=seed,
                    loss=loss, label_noise=label_noise, encoding=encoding),
    )
