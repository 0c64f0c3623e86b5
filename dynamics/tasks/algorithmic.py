"""Algorithmic tasks: modular arithmetic (Power et al. 2022), as one-hot pairs for MLPs or
as token sequences for transformers, optionally with a fraction of corrupted training
labels (Doshi, Das, He & Gromov 2024)."""

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
    corrupt_fraction: float = 0.0,
    centred_targets: bool = False,
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

    ``loss="mse"`` gives one-hot float32 targets in {0, 1} (Gromov, 2023). With
    ``centred_targets=True`` (a loss on float targets only) every target row is the
    one-hot vector minus its mean, ``e_c - 1/n_classes`` (its entries sum to zero): the
    centred targets of Tian (2025, "Provable scaling laws of feature emergence from
    learning dynamics of grokking"), on which the constant direction of the outputs
    carries no signal. The arg-max of a row, and hence the accuracy, is that of the
    one-hot row.

    ``corrupt_fraction = xi``: exactly ``round(xi * n_train)`` training examples, drawn
    without replacement from the seed's ``corruption`` stream, have their stored label
    (the answer ``c``) replaced by ``(c + r) mod p`` with ``r`` uniform on ``{1, ..., p-1}``:
    a uniformly drawn *wrong* residue (the corrupted modular-arithmetic data of Doshi, Das,
    He & Gromov 2024, "To grok or not to grok", whose random labels may by chance
    equal the true one, with probability ``1/p``). The test set is never corrupted.
    :func:`corrupted_rows` gives the corrupted rows and their true labels. Unlike
    ``label_noise`` (an independent flip of each label with a swept probability, applied
    to the training targets in the loop), the corruption is part of the data: the same
    exact count in every run.
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
    corrupt_fraction = check_float("corrupt_fraction", corrupt_fraction, 0.0, 1.0)
    if not isinstance(centred_targets, bool):
        raise ValueError(f"centred_targets must be a bool, got {centred_targets!r}")
    if centred_targets and takes_labels(loss):
        raise ValueError(f"centred_targets needs a loss on float targets (such as "
                         f"'mse'), got loss={loss!r}, which takes integer labels")

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
    corrupted, wrong = corruption_draws(labels[:n_train], p, corrupt_fraction, seed)
    labels[corrupted] = wrong
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
    if centred_targets:
        y = (y - np.float32(1.0 / n_classes)).astype(np.float32)

    def rows(arr, lo, hi):
        return None if arr is None else arr[lo:hi]

    return generated(
        "modular_arithmetic",
        x[:n_train], y[:n_train], x[n_train:], y[n_train:],
        loss=loss, n_classes=n_classes, label_noise=label_noise, seed=seed,
        mask_train=rows(mask, 0, n_train), mask_test=rows(mask, n_train, None),
        config=dict(p=p, operation=operation, train_fraction=train_fraction, seed=seed,
                    loss=loss, label_noise=label_noise, encoding=encoding,
                    corrupt_fraction=corrupt_fraction,
                    centred_targets=centred_targets),
    )


def corruption_draws(labels: np.ndarray, p: int, corrupt_fraction: float, seed: int):
    """``(rows, wrong)``: the ``round(corrupt_fraction * len(labels))`` distinct rows
    (sorted) of the training labels ``labels`` that are corrupted and their new labels
    ``(labels[rows] + r) mod p``, ``r ~ Uniform{1, ..., p-1}`` (never the true one), drawn
    from the seed's ``corruption`` stream (``modular_arithmetic``)."""
    n_corrupt = int(round(corrupt_fraction * labels.shape[0]))
    draws = rng(seed, "corruption")
    rows = np.sort(draws.choice(labels.shape[0], size=n_corrupt, replace=False))
    shift = draws.integers(1, p, size=n_corrupt)
    wrong = ((labels[rows].astype(np.int64) + shift) % p).astype(np.int32)
    return rows, wrong


def operands(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """The operands ``(a, b)`` of every training example of a ``modular_arithmetic`` task,
    read back from its inputs (one-hot halves or the first two tokens)."""
    config = task.config
    if config.get("generator") != "modular_arithmetic":
        raise ValueError(f"task must be a modular_arithmetic task, got {task.name!r}")
    p, x = config["p"], task.x_train
    if config["encoding"] == "onehot":
        return np.argmax(x[:, :p], axis=1), np.argmax(x[:, p:], axis=1)
    return x[:, 0].astype(np.int64), x[:, 1].astype(np.int64)


def stored_answers(task: Task) -> np.ndarray:
    """The answer label each training example is trained on (the last position of a token
    task, the arg-max of mse one-hot targets), before any ``label_noise``."""
    y = np.asarray(task.y_train)
    if not takes_labels(task.loss):
        y = np.argmax(y, axis=-1)
    return y[:, -1] if y.ndim == 2 else y


def corrupted_rows(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, true_labels)``: the training rows of a ``modular_arithmetic`` task whose
    stored labels are corrupted (``corrupt_fraction``), in increasing order, and the true
    labels ``a op b mod p`` of those rows. The true labels are recomputed from the inputs,
    so the rows are exactly those whose stored answer differs from them (a corrupted label
    is never the true one)."""
    a, b = operands(task)
    true = _modular_labels(a, b, task.config["p"], task.config["operation"])
    rows = np.nonzero(stored_answers(task) != true)[0]
    return rows, true[rows].astype(np.int32)
