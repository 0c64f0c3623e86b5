"""Real data that ships offline: scikit-learn's handwritten digits."""

from __future__ import annotations

import functools

import numpy as np

from dynamics.checks import check_bool, check_choice, check_int, is_int
from dynamics.losses import LOSSES, takes_labels
from dynamics.tasks.task import Task, check_label_noise, check_seed, generated, one_hot, readonly, rng

SHAPES = ("flat", "image")


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return readonly(np.asarray(x, dtype=np.float64)), readonly(np.asarray(y, dtype=np.int64))


def digits(
    n_train: int = 1000,
    n_test: int | None = None,
    classes: tuple[int, ...] | None = None,
    loss: str = "cross_entropy",
    standardize: bool = True,
    label_noise: float = 0.0,
    seed: int = 0,
    shape: str = "flat",
) -> Task:
    """Handwritten digits: scikit-learn's ``load_digits`` (8x8 images, D = 64).

    The UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin &
    Kaynak, 1998; Kaynak, 1995): 1797 images, pixel values 0..16, 10 classes.
    ``classes``: optional sequence of distinct digits to keep (at least 2),
    relabelled ``0..C-1`` in the given order. The kept examples are shuffled
    with the seed's ``split`` stream; the first ``n_train`` are the train set and the last
    ``n_test`` (``None``: all the rest) the test set, so that with ``n_test`` given the test
    set is the same at every ``n_train`` and the training sets are nested (an ``n_train``
    sweep is a learning curve).

    ``standardize``: ``x -> (x - m) / s`` with the per-feature mean ``m`` and
    standard deviation ``s`` (ddof 0) of the *train* split only; a feature
    constant on the train split gets ``s = 1`` (it is only centred, so it is 0
    on the train split; the convention of scikit-learn's ``StandardScaler``).
    ``loss="cross_entropy"`` (or ``"cross_entropy_z_loss"``): int32 labels; ``loss="mse"``:
    one-hot float32 targets ``(N, C)`` with entries in {0, 1} (``n_classes`` still set).
    ``shape="flat"``: inputs ``(N, 64)``; ``shape="image"``: the same values as images
    ``(N, 8, 8, 1)`` (height, width, channels; row-major pixels), for convolutional networks.
    """
    n_train = check_int("n_train", n_train)
    if n_test is not None:
        n_test = check_int("n_test", n_test)
    loss = check_choice("loss", loss, LOSSES)
    standardize = check_bool("standardize", standardize)
    shape = check_choice("shape", shape, SHAPES)
    label_noise = check_label_noise(label_noise, loss)
    seed = check_seed(seed)

    x_all, y_all = _load_digits()
    if classes is None:
        keep_classes = list(range(10))
    else:
        if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
            raise ValueError(f"classes must be a sequence of digits 0..9 or None, got {classes!r}")
        keep_classes = list(classes)
        if (
            len(keep_classes) < 2
            or not all(is_int(c) and 0 <= c <= 9 for c in keep_classes)
            or len(set(keep_classes)) != len(keep_classes)
        ):
            raise ValueError(
                f"classes must be at least 2 distinct digits in 0..9, got {classes!r}"
            )
        keep_classes = [int(c) for c in keep_classes]
    relabel = np.full(10, -1, dtype=np.int64)
    relabel[keep_classes] = np.arange(len(keep_classes))
    mask = relabel[y_all] >= 0
    x_kept, y_kept = x_all[mask], relabel[y_all[mask]]
    available = y_kept.size
    n_test_given = n_test
    if n_test is None:
        if n_train >= available:
            raise ValueError(
                f"n_train={n_train} leaves no test examples: {available} examples are "
                f"available for classes {keep_classes}, so n_train must be <= {available - 1}"
            )
        n_test = available - n_train
    elif n_train + n_test > available:
        raise ValueError(
            f"n_train + n_test = {n_train} + {n_test} = {n_train + n_test} exceeds the "
            f"{available} examples available for classes {keep_classes}"
        )
    order = rng(seed, "split").permutation(available)
    train_idx, test_idx = order[:n_train], order[available - n_test:]
    x_train, x_test = x_kept[train_idx], x_kept[test_idx]
    if shape == "image":
        x_train, x_test = x_train.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    if standardize:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    n_classes = len(keep_classes)

    def targets(labels):
        labels = labels.astype(np.int32)
        return labels if takes_labels(loss) else one_hot(labels, n_classes)

    return generated(
        "digits",
        x_train.astype(np.float32), targets(y_kept[train_idx]),
        x_test.astype(np.float32), targets(y_kept[test_idx]),
        loss=loss, n_classes=n_classes, label_noise=label_noise, seed=seed,
        config=dict(n_train=n_train, n_test=n_test_given,
                    classes=None if classes is None else keep_classes, loss=loss,
                    standardize=standardize, label_noise=label_noise, seed=seed, shape=shape),
    )


