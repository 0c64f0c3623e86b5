"""A user's own arrays as a ``Task``."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dynamics.checks import check_int
from dynamics.losses import takes_labels
from dynamics.tasks.task import Task, check_label_noise, check_seed, noise_draws, rng

def from_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any = None,
    y_test: Any = None,
    loss: str = "mse",
    n_classes: int | None = None,
    name: str = "arrays",
    label_noise: float = 0.0,
    seed: int | None = None,
    dtype: str = "float32",
    mask_train: Any = None,
    mask_test: Any = None,
) -> Task:
    """Wrap a user's own data in a :class:`Task` (shapes, masks and noise: see
    ``dynamics.tasks.task``).

    ``x_*``: ``(N, ...)`` real arrays or integer tokens (kept as integers).
    ``loss="mse"``: real ``y_*`` of shape ``(N, K)``, ``(N, T, K)`` (per position), or
    ``(N,)`` (reshaped to ``(N, 1)``); integer targets are refused (they are class labels:
    use ``loss="cross_entropy"``, or one-hot float targets for mse).
    ``loss="cross_entropy"`` or ``"cross_entropy_z_loss"`` (the losses that take labels):
    integer labels ``(N,)`` or ``(N, T)``; ``n_classes`` defaults to ``max label + 1`` over
    both splits. ``mask_*``: optional booleans of the labels'
    shape (mse: the targets' shape without ``K``) selecting the positions that count.
    Give both ``x_test`` and ``y_test`` or neither; with neither the train set (and its
    mask) is also the test set (``config["test"] == "train"``). ``dtype`` ("float32" or
    "float64") is the precision of the real arrays.

    Without ``seed`` the task has no noise draws (``noise == ()``) and ``label_noise`` must
    be 0. With an int ``seed``, noise draws are made from the seed as for the generators,
    so ``label_noise`` can be swept on user data too; the seed also orders the rows for an
    ``n_train`` sweep (:func:`train_prefix`; seed 0 without one). Raises ValueError naming
    the array for NaN/inf, wrong rank or dtype, and naming both shapes for mismatched
    shapes.
    """
    labels = takes_labels(loss)  # ValueError naming LOSSES for an unknown loss
    if (x_test is None) != (y_test is None):
        raise ValueError(
            "x_test and y_test must be given together or both omitted, got "
            f"x_test={'None' if x_test is None else 'array'}, "
            f"y_test={'None' if y_test is None else 'array'}"
        )
    test_given = x_test is not None
    if not test_given:
        if mask_test is not None:
            raise ValueError("mask_test needs x_test and y_test; without them the test set "
                             "is the train set with mask_train")
        x_test, y_test, mask_test = x_train, y_train, mask_train
    ys = {"y_train": np.asarray(y_train), "y_test": np.asarray(y_test)}
    for attr, y in ys.items():
        if not labels and y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"{attr} holds integer class labels (dtype {y.dtype}, shape {y.shape}) but "
                "loss='mse' would regress them as one real output; use "
                "loss='cross_entropy' for class labels, or one-hot targets of shape (N, K) "
                "(y.astype(float) to regress the integers)"
            )
        if not labels and y.ndim == 1:
            ys[attr] = y[:, None]
    if labels and n_classes is None:
        for attr, y in ys.items():
            if not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"{attr} must hold integer class labels for loss "
                                 f"{loss!r}, got dtype {y.dtype}")
            if y.size and y.min() < 0:
                raise ValueError(f"{attr} labels must be non-negative, got minimum {y.min()}")
        n_classes = int(max(ys["y_train"].max(initial=0), ys["y_test"].max(initial=0))) + 1
        if n_classes < 2:
            raise ValueError(
                f"n_classes inferred from the labels is {n_classes}; {loss} needs >= 2 "
                f"(pass n_classes explicitly)"
            )
    label_noise = check_label_noise(label_noise, loss)
    task = Task(name=name, x_train=x_train, y_train=ys["y_train"], x_test=x_test,
                y_test=ys["y_test"], loss=loss, n_classes=n_classes, dtype=dtype,
                mask_train=mask_train, mask_test=mask_test)
    noise: tuple = ()
    if seed is not None:
        seed = check_seed(seed)
        noise = noise_draws(task.y_train, loss, task.n_classes, seed)
    return dataclasses.replace(
        task, label_noise=label_noise, noise=noise,
        config={
            "generator": "from_arrays",
            "name": name,
            "loss": loss,
            "n_classes": task.n_classes,
            "test": "given" if test_given else "train",
            "shapes": {k: list(getattr(task, k).shape)
                       for k in ("x_train", "y_train", "x_test", "y_test")},
            "masked": task.mask_train is not None,
            "label_noise": label_noise,
            "seed": seed,
        },
    )


def train_prefix(task: Task, n_train) -> Task:
    """The task with the first ``n_train`` rows of a seeded permutation of its training rows
    (the ``split`` stream of its seed, 0 without one): nested training sets for an
    ``n_train`` sweep of a user's arrays; the test set, and the noise draws of the kept rows,
    are unchanged."""
    n_train = check_int("n_train", n_train)
    seed = task.config.get("seed") or 0
    if n_train > task.n_train:
        raise ValueError(f"n_train must be <= the {task.n_train} training rows given, "
                         f"got {n_train}")
    rows = rng(seed, "split").permutation(task.n_train)[:n_train]

    def take(a):
        return None if a is None else a[rows]

    config = {**task.config, "n_train": n_train,
              "rows": f"seeded prefix (seed {seed}) of {task.n_train} given rows"}
    return dataclasses.replace(
        task, x_train=take(task.x_train), y_train=take(task.y_train),
        mask_train=take(task.mask_train), noise=tuple(take(a) for a in task.noise),
        config=config,
    )
