"""Synthetic tasks: teachers and their students, Gaussian mixtures, a polynomial target.

Every generator is seeded through the named sub-streams of ``dynamics.tasks.task`` and
its targets are computed in float64 from the stored float32 inputs, rounded once.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.special

from dynamics.checks import check_choice, check_float, check_int
from dynamics.losses import LOSSES, takes_labels
from dynamics.tasks.task import (
    Task,
    check_label_noise,
    check_seed,
    generated,
    one_hot,
    rng,
)

ACTIVATIONS = ("linear", "relu", "tanh", "erf", "gelu")

# --------------------------------------------------------------------------- #
# 1. Linear teacher-student
# --------------------------------------------------------------------------- #


def linear_teacher(dim: int, out_dim: int = 1, seed: int = 0) -> np.ndarray:
    """Teacher weights ``beta ~ N(0, I)`` of shape ``(dim, out_dim)`` (float64).

    Exactly the ``beta`` used by :func:`teacher_student_linear` with the same
    arguments (drawn from the seed's ``teacher`` stream).
    """
    dim = check_int("dim", dim)
    out_dim = check_int("out_dim", out_dim)
    return rng(check_seed(seed), "teacher").standard_normal((dim, out_dim))


def _gaussian_inputs(seed: int, stream: str, n: int, dim: int, scale: float = 1.0) -> np.ndarray:
    """``x ~ N(0, scale^2 I_dim)``, ``n`` rows, rounded to float32."""
    return (scale * rng(seed, stream).standard_normal((n, dim))).astype(np.float32)


def teacher_student_linear(
    dim: int = 20,
    n_train: int = 100,
    n_test: int = 1000,
    out_dim: int = 1,
    label_noise: float = 0.0,
    seed: int = 0,
) -> Task:
    """Linear teacher: ``x ~ N(0, I_D)``, ``y = x @ beta / sqrt(D)``, ``beta ~ N(0, I)``.

    ``beta`` has shape ``(D, K)`` (:func:`linear_teacher`), so each target has
    variance ``|beta_k|^2 / D ~ 1``. Loss mse; ``label_noise`` is the standard
    deviation of additive Gaussian output noise on the training targets. This
    is the classic linear teacher-student model of the statistical mechanics of
    learning (Seung, Sompolinsky & Tishby, 1992), whose gradient-descent
    dynamics and double descent under label noise are solved by Advani, Saxe &
    Sompolinsky (2020, "High-dimensional dynamics of generalization error in
    neural networks").

    Targets are computed in float64 from the stored float32 inputs and rounded
    once to float32.
    """
    dim = check_int("dim", dim)
    n_train = check_int("n_train", n_train)
    n_test = check_int("n_test", n_test)
    out_dim = check_int("out_dim", out_dim)
    label_noise = check_label_noise(label_noise, "mse")
    seed = check_seed(seed)
    beta = linear_teacher(dim, out_dim, seed)
    x_train = _gaussian_inputs(seed, "train", n_train, dim)
    x_test = _gaussian_inputs(seed, "test", n_test, dim)

    def target(x):
        return (x.astype(np.float64) @ beta / np.sqrt(dim)).astype(np.float32)

    return generated(
        "teacher_student_linear",
        x_train, target(x_train), x_test, target(x_test),
        loss="mse", n_classes=None, label_noise=label_noise, seed=seed,
        config=dict(dim=dim, n_train=n_train, n_test=n_test, out_dim=out_dim,
                    label_noise=label_noise, seed=seed),
    )


# --------------------------------------------------------------------------- #
# 2. MLP teacher-student
# --------------------------------------------------------------------------- #


def _gelu(h: np.ndarray) -> np.ndarray:
    # Exact GELU (Hendrycks & Gimpel, 2016): h * Phi(h), Phi the standard normal CDF.
    return 0.5 * h * (1.0 + scipy.special.erf(h / np.sqrt(2.0)))


_ACTIVATION_FNS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda h: h,
    "relu": lambda h: np.maximum(h, 0.0),
    "tanh": np.tanh,
    "erf": scipy.special.erf,
    "gelu": _gelu,
}


def mlp_teacher(
    dim: int, teacher_width: int = 64, teacher_depth: int = 1, out_dim: int = 1, seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Teacher weights ``(W^0, ..., W^L)``, all entries ``N(0, 1)`` (float64).

    ``W^0``: ``(dim, width)``; ``W^l``: ``(width, width)`` for ``0 < l < L``;
    ``W^L``: ``(width, out_dim)``; ``L = teacher_depth`` hidden layers. Exactly the
    weights used by :func:`teacher_student_mlp` with the same arguments.
    """
    dim = check_int("dim", dim)
    width = check_int("teacher_width", teacher_width)
    depth = check_int("teacher_depth", teacher_depth)
    out_dim = check_int("out_dim", out_dim)
    gen = rng(check_seed(seed), "teacher")
    fans = [dim] + [width] * depth + [out_dim]
    return tuple(gen.standard_normal((fans[i], fans[i + 1])) for i in range(depth + 1))


def mlp_teacher_apply(weights: tuple[np.ndarray, ...], x: np.ndarray, activation: str) -> np.ndarray:
    """Teacher output in NTK scaling, float64.

    ``h^1 = x W^0 / sqrt(D)``, ``h^{l+1} = phi(h^l) W^l / sqrt(width)``,
    ``f(x) = phi(h^L) W^L / sqrt(width)`` (Jacot, Gabriel & Hongler, 2018).
    """
    phi = _ACTIVATION_FNS[check_choice("activation", activation, ACTIVATIONS)]
    h = np.asarray(x, dtype=np.float64) @ weights[0] / np.sqrt(weights[0].shape[0])
    for w in weights[1:]:
        h = phi(h) @ w / np.sqrt(w.shape[0])
    return h


def teacher_student_mlp(
    dim: int = 20,
    teacher_width: int = 64,
    teacher_depth: int = 1,
    activation: str = "tanh",
    n_train: int = 100,
    n_test: int = 1000,
    out_dim: int = 1,
    label_noise: float = 0.0,
    seed: int = 0,
) -> Task:
    """Random MLP teacher: ``x ~ N(0, I_D)``, ``y = f_teacher(x)``.

    The teacher (:func:`mlp_teacher`, :func:`mlp_teacher_apply`) has
    ``teacher_depth`` hidden layers of width ``teacher_width``, weights
    ``W ~ N(0, 1)`` and NTK-style scaling ``h^{l+1} = W^l phi(h^l) / sqrt(fan_in)``
    (Jacot, Gabriel & Hongler, 2018), with a linear readout divided by
    ``sqrt(width)``; so preactivations are O(1). ``activation`` is one of
    ``linear, relu, tanh, erf, gelu``; ``gelu`` is the exact
    ``h * Phi(h) = h (1 + erf(h / sqrt 2)) / 2`` (Hendrycks & Gimpel, 2016),
    not the tanh approximation. Teacher-student learning with a two-layer
    teacher: Saad & Solla (1995); Goldt, Advani, Saxe, Krzakala & Zdeborová
    (2019). Loss mse; ``label_noise`` is Gaussian output noise std. Targets are
    computed in float64 from the stored float32 inputs.
    """
    dim = check_int("dim", dim)
    n_train = check_int("n_train", n_train)
    n_test = check_int("n_test", n_test)
    out_dim = check_int("out_dim", out_dim)
    teacher_width = check_int("teacher_width", teacher_width)
    teacher_depth = check_int("teacher_depth", teacher_depth)
    activation = check_choice("activation", activation, ACTIVATIONS)
    label_noise = check_label_noise(label_noise, "mse")
    seed = check_seed(seed)
    weights = mlp_teacher(dim, teacher_width, teacher_depth, out_dim, seed)
    x_train = _gaussian_inputs(seed, "train", n_train, dim)
    x_test = _gaussian_inputs(seed, "test", n_test, dim)

    def target(x):
        return mlp_teacher_apply(weights, x, activation).astype(np.float32)

    return generated(
        "teacher_student_mlp",
        x_train, target(x_train), x_test, target(x_test),
        loss="mse", n_classes=None, label_noise=label_noise, seed=seed,
        config=dict(dim=dim, teacher_width=teacher_width, teacher_depth=teacher_depth,
                    activation=activation, n_train=n_train, n_test=n_test, out_dim=out_dim,
                    label_noise=label_noise, seed=seed),
    )


# --------------------------------------------------------------------------- #
# 3. Gaussian mixture
# --------------------------------------------------------------------------- #


def gaussian_mixture_means(
    n_classes: int = 2, dim: int = 10, separation: float = 2.0, seed: int = 0
) -> np.ndarray:
    """Class means ``mu_c = separation * q_c``, shape ``(n_classes, dim)`` (float64).

    ``q_1, ..., q_C`` are orthonormal: the columns of ``Q`` in the QR
    factorisation of a ``(dim, C)`` standard Gaussian matrix (signs fixed so
    that ``diag(R) > 0``, which makes ``Q`` Haar-distributed; Mezzadri, 2007).
    Requires ``n_classes <= dim``. Exactly the means used by
    :func:`gaussian_mixture` with the same arguments.
    """
    n_classes = check_int("n_classes", n_classes, minimum=2)
    dim = check_int("dim", dim)
    separation = check_float("separation", separation, 0.0)
    if n_classes > dim:
        raise ValueError(
            f"n_classes must be <= dim={dim} (means are orthonormal directions), got {n_classes}"
        )
    g = rng(check_seed(seed), "teacher").standard_normal((dim, n_classes))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))
    return separation * q.T


def _balanced_labels(gen: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    """``n`` labels with every class appearing floor(n/C) or ceil(n/C) times, shuffled."""
    return gen.permutation(np.arange(n) % n_classes).astype(np.int32)


def gaussian_mixture(
    n_classes: int = 2,
    dim: int = 10,
    separation: float = 2.0,
    n_train: int = 200,
    n_test: int = 1000,
    label_noise: float = 0.0,
    seed: int = 0,
    loss: str = "cross_entropy",
) -> Task:
    """Isotropic Gaussian mixture: ``x = mu_y + z``, ``z ~ N(0, I_D)``.

    Means ``mu_c = separation * q_c`` with ``q_c`` random orthonormal directions
    (:func:`gaussian_mixture_means`; needs ``n_classes <= dim``), so every pair of
    means is at distance ``separation * sqrt(2)`` and the Bayes error of two
    classes is ``Phi(-separation / sqrt(2))``. Classes are balanced: each
    appears ``floor(N/C)`` or ``ceil(N/C)`` times in each split, in random
    order. High-dimensional Gaussian-mixture classification as a model of
    learning: Mignacco, Krzakala, Lu, Urbani & Zdeborová (2020); Refinetti,
    Goldt, Krzakala & Zdeborová (2021).

    ``loss="cross_entropy"`` (or ``"cross_entropy_z_loss"``): int32 labels; ``loss="mse"``:
    one-hot float32 targets ``(N, C)`` in {0, 1} (``n_classes`` still set; its label noise
    is Gaussian noise on the one-hot vectors).
    """
    n_classes = check_int("n_classes", n_classes, minimum=2)
    dim = check_int("dim", dim)
    separation = check_float("separation", separation, 0.0)
    n_train = check_int("n_train", n_train)
    n_test = check_int("n_test", n_test)
    loss = check_choice("loss", loss, LOSSES)
    label_noise = check_label_noise(label_noise, loss)
    seed = check_seed(seed)
    means = gaussian_mixture_means(n_classes, dim, separation, seed)

    def split(stream, n):
        gen = rng(seed, stream)
        labels = _balanced_labels(gen, n, n_classes)
        x = (means[labels] + gen.standard_normal((n, dim))).astype(np.float32)
        return x, labels if takes_labels(loss) else one_hot(labels, n_classes)

    x_train, y_train = split("train", n_train)
    x_test, y_test = split("test", n_test)
    return generated(
        "gaussian_mixture",
        x_train, y_train, x_test, y_test,
        loss=loss, n_classes=n_classes, label_noise=label_noise, seed=seed,
        config=dict(n_classes=n_classes, dim=dim, separation=separation, n_train=n_train,
                    n_test=n_test, label_noise=label_noise, seed=seed, loss=loss),
    )


# --------------------------------------------------------------------------- #
# 4. Quadratic single-index polynomial (grokking without regularisation)
# --------------------------------------------------------------------------- #


def polynomial_teacher(dim: int = 100, seed: int = 0) -> np.ndarray:
    """``beta* ~ N(0, I_dim)``, shape ``(dim,)`` (float64).

    Exactly the ``beta*`` used by :func:`polynomial` with the same ``dim`` and
    ``seed`` (the seed's ``teacher`` stream), so it need not be stored.
    """
    dim = check_int("dim", dim)
    return rng(check_seed(seed), "teacher").standard_normal(dim)


def polynomial(
    dim: int = 100,
    n_train: int = 400,
    n_test: int = 1000,
    label_noise: float = 0.0,
    seed: int = 0,
) -> Task:
    """Quadratic target of Kumar, Bordelon, Gershman & Pehlevan (2024).

    "Grokking as the transition from lazy to rich training dynamics" (ICLR
    2024): ``x ~ N(0, I_D / D)``, ``y = (beta* . x)^2 / 2`` with
    ``beta* ~ N(0, I_D)`` (:func:`polynomial_teacher`), so ``beta* . x`` is
    ``N(0, |beta*|^2 / D)``, O(1), and ``E[y] = |beta*|^2 / (2D) ~ 1/2``.
    Targets shape ``(N, 1)``, loss mse; computed in float64 from the stored
    float32 inputs. The default sizes are ours, not the paper's.
    """
    dim = check_int("dim", dim)
    n_train = check_int("n_train", n_train)
    n_test = check_int("n_test", n_test)
    label_noise = check_label_noise(label_noise, "mse")
    seed = check_seed(seed)
    beta = polynomial_teacher(dim, seed)
    scale = 1.0 / np.sqrt(dim)
    x_train = _gaussian_inputs(seed, "train", n_train, dim, scale)
    x_test = _gaussian_inputs(seed, "test", n_test, dim, scale)

    def target(x):
        return (0.5 * (x.astype(np.float64) @ beta) ** 2)[:, None].astype(np.float32)

    return generated(
        "polynomial",
        x_train, target(x_train), x_test, target(x_test),
        loss="mse", n_classes=None, label_noise=label_noise, seed=seed,
        config=dict(dim=dim, n_train=n_train, n_test=n_test, label_noise=label_noise, seed=seed),
    )


