"""Seeded training tasks generated on the machine (no downloads at run time).

A :class:`Task` holds a fixed train/test split as float32 numpy arrays, the loss
it is meant to be trained with (``"mse"`` or ``"cross_entropy"``), and fixed
*noise draws* that turn the scalar hyperparameter ``label_noise`` into training
targets in a jax-traceable way (:meth:`Task.train_targets`), so that a sweep
over ``label_noise`` can be ``jax.vmap``-ed without regenerating data.

Randomness
----------
Every generator is a pure function of its arguments: all randomness comes from
``np.random.default_rng`` seeded with the integer ``seed`` of the task. Each
part of a task is drawn from its own named sub-stream,
``np.random.default_rng([seed, STREAM])`` (a ``SeedSequence`` built from the
pair), with ``STREAM`` one of :data:`_STREAMS`:

* ``teacher``: the target function (teacher weights, class means);
* ``train`` / ``test``: the inputs of the train / test split;
* ``split``: the shuffle that splits a finite data set (modular arithmetic,
  digits);
* ``noise``: the label-noise draws stored in :attr:`Task.noise`.

Separate streams make the teacher and the test set independent of
``n_train``, and the training inputs of a smaller ``n_train`` a prefix of those
of a larger one (same seed), which is what learning-curve sweeps need.

Label noise
-----------
``mse``: ``targets = y_train + label_noise * xi`` with ``xi ~ N(0, 1)`` i.i.d. of
shape ``y_train.shape`` (``noise = (xi,)``): additive Gaussian output noise of
standard deviation ``label_noise``, as in the noisy teacher of Advani, Saxe &
Sompolinsky (2020). For one-hot targets this is Gaussian noise on the one-hot
vectors, *not* label flipping.

``cross_entropy``: ``targets = where(u < label_noise, other, y_train)`` with
``u ~ U[0, 1)`` (float32) and ``other = (y_train + r) mod C``,
``r ~ Uniform{1, ..., C-1}`` (``noise = (u, other)``): each training label is,
independently with probability ``label_noise``, replaced by a class drawn
uniformly among the ``C - 1`` wrong ones (symmetric label noise; Zhang, Bengio,
Hardt, Recht & Vinyals, 2017; Rolnick, Veit, Belongie & Shavit, 2017). The
draws are fixed by the seed, so the flipped set grows monotonically with
``label_noise``. Test labels never get noise.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
from dataclasses import field
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
import scipy.special

__all__ = [
    "LOSSES",
    "ACTIVATIONS",
    "OPERATIONS",
    "Task",
    "TASKS",
    "make",
    "teacher_student_linear",
    "teacher_student_mlp",
    "gaussian_mixture",
    "polynomial",
    "modular_arithmetic",
    "digits",
    "from_arrays",
    "linear_teacher",
    "mlp_teacher",
    "mlp_teacher_apply",
    "gaussian_mixture_means",
    "polynomial_teacher",
]

FLOAT_DTYPES = ("float32", "float64")
from dynamics.losses import LOSSES  # noqa: E402  (the normalisation lives there)
ACTIVATIONS = ("linear", "relu", "tanh", "erf", "gelu")
OPERATIONS = ("add", "sub", "mul", "div")

# Sub-stream identifiers (see module docstring). Never renumber: it would change
# every generated task.
_STREAMS = {"teacher": 0, "train": 1, "test": 2, "split": 3, "noise": 4}


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``int(value)`` if it is an int ``>= minimum``, else raise ValueError."""
    if not _is_int(value) or value < minimum:
        if minimum == 1:
            allowed = "a positive int"
        elif minimum == 0:
            allowed = "a non-negative int"
        else:
            allowed = f"an int >= {minimum}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def _check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` if it is a finite real number in the given range."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        value = float(value)
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
        rng = " and ".join(s for s in (lo, hi) if s)
        allowed = "a finite real number" + (f" {rng}" if rng else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def _check_choice(name: str, value: Any, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_seed(seed: Any) -> int:
    return _check_int("seed", seed, minimum=0)


def _check_label_noise(label_noise: Any, loss: str) -> float:
    if loss == "cross_entropy":
        return _check_float("label_noise", label_noise, 0.0, 1.0)
    return _check_float("label_noise", label_noise, 0.0)


def _check_finite(name: str, array: np.ndarray) -> None:
    if array.size and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or inf")


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


def _rng(seed: int, stream: str) -> np.random.Generator:
    """Independent generator for one named part of the task with this seed."""
    return np.random.default_rng([seed, _STREAMS[stream]])


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


# --------------------------------------------------------------------------- #
# Task
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A fixed supervised learning problem.

    Arrays are copied into read-only numpy arrays at construction:
    ``x_*`` float32 of shape ``(N, D)``; for ``loss="mse"`` ``y_*`` float32 of
    shape ``(N, K)``; for ``loss="cross_entropy"`` ``y_*`` int32 labels of shape
    ``(N,)`` in ``[0, n_classes)``. The test set must be non-empty.

    ``n_classes`` is set for classification problems (for ``mse`` on one-hot
    targets it must equal ``K``; accuracy is then the argmax match).
    ``label_noise`` is the default value of the swept hyperparameter of the
    same name and ``noise`` the fixed draws that implement it (see the module
    docstring); ``noise == ()`` means the task has no noise draws and then
    ``label_noise`` must be 0. ``config`` is a JSON-able description of how the
    task was made: ``make(**config)``-style regeneration is
    ``make(config["generator"], **{k: v for k, v in config.items() if k != "generator"})``
    for the generators in :data:`TASKS`.

    ``eq=False``: tasks compare and hash by identity, so a task can be a static
    argument of a jitted function.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    loss: str
    n_classes: int | None = None
    label_noise: float = 0.0
    noise: tuple = ()
    config: dict = field(default_factory=dict)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        _check_choice("dtype", self.dtype, FLOAT_DTYPES)
        fdtype = np.dtype(self.dtype)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty str, got {self.name!r}")
        _check_choice("loss", self.loss, LOSSES)

        # Inputs: 2-D, real, finite, float32.
        for attr in ("x_train", "x_test"):
            x = np.asarray(getattr(self, attr))
            if x.ndim != 2:
                raise ValueError(f"{attr} must be 2-D (N, D), got shape {x.shape}")
            if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
                raise ValueError(f"{attr} must hold real numbers, got dtype {x.dtype}")
            x = np.array(x, dtype=fdtype)  # copy: the task owns its arrays
            _check_finite(attr, x)
            set_(attr, _readonly(x))
        if self.x_train.shape[0] < 1:
            raise ValueError(f"x_train must have at least one row, got shape {self.x_train.shape}")
        if self.x_test.shape[0] < 1:
            raise ValueError(f"x_test must have at least one row, got shape {self.x_test.shape}")
        if self.x_test.shape[1] != self.x_train.shape[1]:
            raise ValueError(
                f"x_test has {self.x_test.shape[1]} features but x_train has "
                f"{self.x_train.shape[1]}: shapes {self.x_test.shape} and {self.x_train.shape}"
            )

        # n_classes.
        if self.n_classes is not None:
            if not _is_int(self.n_classes) or self.n_classes < 2:
                raise ValueError(f"n_classes must be an int >= 2 or None, got {self.n_classes!r}")
            set_("n_classes", int(self.n_classes))
        elif self.loss == "cross_entropy":
            raise ValueError("n_classes must be set (an int >= 2) for loss 'cross_entropy', got None")

        # Targets.
        for attr, x_attr in (("y_train", "x_train"), ("y_test", "x_test")):
            y = np.asarray(getattr(self, attr))
            n = getattr(self, x_attr).shape[0]
            if self.loss == "mse":
                if y.ndim != 2:
                    raise ValueError(f"{attr} must be 2-D (N, K) for loss 'mse', got shape {y.shape}")
                if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
                    raise ValueError(f"{attr} must hold real numbers, got dtype {y.dtype}")
                y = np.array(y, dtype=fdtype)
                _check_finite(attr, y)
            else:
                if y.ndim != 1:
                    raise ValueError(
                        f"{attr} must be 1-D integer labels (N,) for loss 'cross_entropy', "
                        f"got shape {y.shape}"
                    )
                if not np.issubdtype(y.dtype, np.integer):
                    raise ValueError(
                        f"{attr} must hold integer class labels for loss 'cross_entropy', "
                        f"got dtype {y.dtype}"
                    )
                if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                    raise ValueError(
                        f"{attr} labels must lie in [0, n_classes={self.n_classes}), "
                        f"got range [{y.min()}, {y.max()}]"
                    )
                y = np.array(y, dtype=np.int32)
            if y.shape[0] != n:
                raise ValueError(
                    f"{attr} and {x_attr} must have the same number of rows, got shapes "
                    f"{y.shape} and {getattr(self, x_attr).shape}"
                )
            set_(attr, _readonly(y))
        if self.loss == "mse":
            if self.y_test.shape[1] != self.y_train.shape[1]:
                raise ValueError(
                    f"y_test and y_train must have the same number of outputs, got shapes "
                    f"{self.y_test.shape} and {self.y_train.shape}"
                )
            if self.n_classes is not None and self.y_train.shape[1] != self.n_classes:
                raise ValueError(
                    f"n_classes={self.n_classes} must equal the number of target columns "
                    f"for loss 'mse' (one-hot targets), got y_train shape {self.y_train.shape}"
                )

        # Label noise and its draws.
        set_("label_noise", _check_label_noise(self.label_noise, self.loss))
        if not isinstance(self.noise, tuple):
            raise ValueError(f"noise must be a tuple of arrays, got {type(self.noise).__name__}")
        if self.noise == ():
            if self.label_noise > 0:
                raise ValueError(
                    f"label_noise must be 0 for a task without noise draws (noise=()), "
                    f"got {self.label_noise}"
                )
        else:
            set_("noise", self._validated_noise(self.noise))

        # Config.
        if not isinstance(self.config, dict):
            raise ValueError(f"config must be a dict, got {type(self.config).__name__}")
        try:
            json.dumps(self.config)
        except (TypeError, ValueError) as err:
            raise ValueError(f"config must be JSON-able, got {self.config!r} ({err})") from None

    def _validated_noise(self, noise: tuple) -> tuple:
        p = self.n_train
        if self.loss == "mse":
            if len(noise) != 1:
                raise ValueError(f"noise must hold 1 array (xi,) for loss 'mse', got {len(noise)}")
            xi = np.array(noise[0], dtype=self.dtype)
            if xi.shape != self.y_train.shape:
                raise ValueError(
                    f"noise[0] must have the shape of y_train {self.y_train.shape}, got {xi.shape}"
                )
            _check_finite("noise[0]", xi)
            return (_readonly(xi),)
        if len(noise) != 2:
            raise ValueError(
                f"noise must hold 2 arrays (u, other) for loss 'cross_entropy', got {len(noise)}"
            )
        u = np.asarray(noise[0])
        other = np.asarray(noise[1])
        if u.shape != (p,) or other.shape != (p,):
            raise ValueError(
                f"noise arrays must have shape ({p},) for loss 'cross_entropy', "
                f"got {u.shape} and {other.shape}"
            )
        if u.dtype != np.float32 or not np.all((u >= 0) & (u < 1)):
            raise ValueError("noise[0] must be float32 uniform draws in [0, 1)")
        if not np.issubdtype(other.dtype, np.integer):
            raise ValueError(f"noise[1] must hold integer labels, got dtype {other.dtype}")
        if np.any((other < 0) | (other >= self.n_classes)) or np.any(other == self.y_train):
            raise ValueError(
                f"noise[1] must hold labels in [0, {self.n_classes}) that differ from y_train"
            )
        return (_readonly(np.array(u)), _readonly(np.array(other, dtype=np.int32)))

    # ----------------------------------------------------------------- sizes
    @property
    def out_dim(self) -> int:
        """Network output width: K for mse, n_classes for cross_entropy."""
        return self.y_train.shape[1] if self.loss == "mse" else int(self.n_classes)

    @property
    def in_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def n_test(self) -> int:
        return self.x_test.shape[0]

    # -------------------------------------------------------------- methods
    def hparams(self) -> dict[str, float]:
        """Default values of the task's swept hyperparameters (none without noise draws)."""
        return {"label_noise": self.label_noise} if self.noise != () else {}

    def astype(self, dtype: str) -> "Task":
        """The same task with its float arrays in ``dtype`` ("float32" or "float64"; the
        latter for float64 runs under ``jax.enable_x64``)."""
        return dataclasses.replace(self, dtype=dtype)

    def train_targets(self, label_noise: Any = None) -> jnp.ndarray:
        """Training targets at noise level ``label_noise`` (jax-traceable).

        ``label_noise`` may be a traced scalar (``jax.jit`` / ``jax.vmap``);
        ``None`` means ``self.label_noise``. mse: ``y_train + label_noise *
        noise[0]`` (float32, shape ``(P, K)``); cross_entropy:
        ``where(noise[0] < label_noise, noise[1], y_train)`` (int32, ``(P,)``).
        Without noise draws (``noise == ()``) returns ``y_train``; a concrete
        ``label_noise > 0`` then raises ValueError (a traced one cannot be
        checked and is ignored).
        """
        if label_noise is None:
            label_noise = self.label_noise
        concrete = isinstance(label_noise, numbers.Real) or (
            isinstance(label_noise, np.ndarray) and label_noise.ndim == 0
        )
        if concrete:
            value = _check_label_noise(float(label_noise), self.loss)
            if self.noise == () and value > 0:
                raise ValueError(
                    f"label_noise must be 0 for a task without noise draws (noise=()), got {value}"
                )
        if self.noise == ():
            return jnp.asarray(self.y_train)
        s = jnp.asarray(label_noise, dtype=self.x_train.dtype)
        if self.loss == "mse":
            return jnp.asarray(self.y_train) + s * jnp.asarray(self.noise[0])
        u, other = self.noise
        return jnp.where(jnp.asarray(u) < s, jnp.asarray(other), jnp.asarray(self.y_train))

    def summary(self) -> str:
        """One line: name, sizes and loss."""
        return (
            f"{self.name}: P={self.n_train} train, Q={self.n_test} test, D={self.in_dim} in, "
            f"K={self.out_dim} out, loss={self.loss}"
            + (f", n_classes={self.n_classes}" if self.n_classes is not None else "")
            + (f", label_noise={self.label_noise:g}" if self.label_noise else "")
        )


def _noise_draws(y_train: np.ndarray, loss: str, n_classes: int | None, seed: int) -> tuple:
    """The fixed label-noise draws of a task (module docstring), from the noise stream."""
    rng = _rng(seed, "noise")
    if loss == "mse":
        return (rng.standard_normal(y_train.shape).astype(np.float32),)
    p = y_train.shape[0]
    u = rng.random(p, dtype=np.float32)  # float32 draws are in [0, 1) (no rounding up to 1)
    shift = rng.integers(1, n_classes, size=p)  # uniform on {1, ..., C-1}
    other = ((y_train.astype(np.int64) + shift) % n_classes).astype(np.int32)
    return (u, other)


def _task(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    loss: str,
    n_classes: int | None,
    label_noise: float,
    seed: int,
    config: dict,
) -> Task:
    """Build a generator's Task, with noise draws from the seed's noise stream."""
    return Task(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        loss=loss,
        n_classes=n_classes,
        label_noise=label_noise,
        noise=_noise_draws(np.asarray(y_train), loss, n_classes, seed),
        config={"generator": name, **config},
    )


# --------------------------------------------------------------------------- #
# 1. Linear teacher-student
# --------------------------------------------------------------------------- #


def linear_teacher(dim: int, out_dim: int = 1, seed: int = 0) -> np.ndarray:
    """Teacher weights ``beta ~ N(0, I)`` of shape ``(dim, out_dim)`` (float64).

    Exactly the ``beta`` used by :func:`teacher_student_linear` with the same
    arguments (drawn from the seed's ``teacher`` stream).
    """
    dim = _check_int("dim", dim)
    out_dim = _check_int("out_dim", out_dim)
    return _rng(_check_seed(seed), "teacher").standard_normal((dim, out_dim))


def _gaussian_inputs(seed: int, stream: str, n: int, dim: int, scale: float = 1.0) -> np.ndarray:
    """``x ~ N(0, scale^2 I_dim)``, ``n`` rows, rounded to float32."""
    return (scale * _rng(seed, stream).standard_normal((n, dim))).astype(np.float32)


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
    dim = _check_int("dim", dim)
    n_train = _check_int("n_train", n_train)
    n_test = _check_int("n_test", n_test)
    out_dim = _check_int("out_dim", out_dim)
    label_noise = _check_label_noise(label_noise, "mse")
    seed = _check_seed(seed)
    beta = linear_teacher(dim, out_dim, seed)
    x_train = _gaussian_inputs(seed, "train", n_train, dim)
    x_test = _gaussian_inputs(seed, "test", n_test, dim)

    def target(x):
        return (x.astype(np.float64) @ beta / np.sqrt(dim)).astype(np.float32)

    return _task(
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
    dim = _check_int("dim", dim)
    width = _check_int("teacher_width", teacher_width)
    depth = _check_int("teacher_depth", teacher_depth)
    out_dim = _check_int("out_dim", out_dim)
    rng = _rng(_check_seed(seed), "teacher")
    fans = [dim] + [width] * depth + [out_dim]
    return tuple(rng.standard_normal((fans[i], fans[i + 1])) for i in range(depth + 1))


def mlp_teacher_apply(weights: tuple[np.ndarray, ...], x: np.ndarray, activation: str) -> np.ndarray:
    """Teacher output in NTK scaling, float64.

    ``h^1 = x W^0 / sqrt(D)``, ``h^{l+1} = phi(h^l) W^l / sqrt(width)``,
    ``f(x) = phi(h^L) W^L / sqrt(width)`` (Jacot, Gabriel & Hongler, 2018).
    """
    phi = _ACTIVATION_FNS[_check_choice("activation", activation, ACTIVATIONS)]
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
    dim = _check_int("dim", dim)
    n_train = _check_int("n_train", n_train)
    n_test = _check_int("n_test", n_test)
    out_dim = _check_int("out_dim", out_dim)
    teacher_width = _check_int("teacher_width", teacher_width)
    teacher_depth = _check_int("teacher_depth", teacher_depth)
    activation = _check_choice("activation", activation, ACTIVATIONS)
    label_noise = _check_label_noise(label_noise, "mse")
    seed = _check_seed(seed)
    weights = mlp_teacher(dim, teacher_width, teacher_depth, out_dim, seed)
    x_train = _gaussian_inputs(seed, "train", n_train, dim)
    x_test = _gaussian_inputs(seed, "test", n_test, dim)

    def target(x):
        return mlp_teacher_apply(weights, x, activation).astype(np.float32)

    return _task(
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
    n_classes = _check_int("n_classes", n_classes, minimum=2)
    dim = _check_int("dim", dim)
    separation = _check_float("separation", separation, 0.0)
    if n_classes > dim:
        raise ValueError(
            f"n_classes must be <= dim={dim} (means are orthonormal directions), got {n_classes}"
        )
    g = _rng(_check_seed(seed), "teacher").standard_normal((dim, n_classes))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))
    return separation * q.T


def _balanced_labels(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    """``n`` labels with every class appearing floor(n/C) or ceil(n/C) times, shuffled."""
    return rng.permutation(np.arange(n) % n_classes).astype(np.int32)


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

    ``loss="cross_entropy"``: int32 labels; ``loss="mse"``: one-hot float32
    targets ``(N, C)`` in {0, 1} (``n_classes`` still set; its label noise is
    Gaussian noise on the one-hot vectors).
    """
    n_classes = _check_int("n_classes", n_classes, minimum=2)
    dim = _check_int("dim", dim)
    separation = _check_float("separation", separation, 0.0)
    n_train = _check_int("n_train", n_train)
    n_test = _check_int("n_test", n_test)
    loss = _check_choice("loss", loss, LOSSES)
    label_noise = _check_label_noise(label_noise, loss)
    seed = _check_seed(seed)
    means = gaussian_mixture_means(n_classes, dim, separation, seed)

    def split(stream, n):
        rng = _rng(seed, stream)
        labels = _balanced_labels(rng, n, n_classes)
        x = (means[labels] + rng.standard_normal((n, dim))).astype(np.float32)
        return x, labels if loss == "cross_entropy" else _one_hot(labels, n_classes)

    x_train, y_train = split("train", n_train)
    x_test, y_test = split("test", n_test)
    return _task(
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
    dim = _check_int("dim", dim)
    return _rng(_check_seed(seed), "teacher").standard_normal(dim)


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
    dim = _check_int("dim", dim)
    n_train = _check_int("n_train", n_train)
    n_test = _check_int("n_test", n_test)
    label_noise = _check_label_noise(label_noise, "mse")
    seed = _check_seed(seed)
    beta = polynomial_teacher(dim, seed)
    scale = 1.0 / np.sqrt(dim)
    x_train = _gaussian_inputs(seed, "train", n_train, dim, scale)
    x_test = _gaussian_inputs(seed, "test", n_test, dim, scale)

    def target(x):
        return (0.5 * (x.astype(np.float64) @ beta) ** 2)[:, None].astype(np.float32)

    return _task(
        "polynomial",
        x_train, target(x_train), x_test, target(x_test),
        loss="mse", n_classes=None, label_noise=label_noise, seed=seed,
        config=dict(dim=dim, n_train=n_train, n_test=n_test, label_noise=label_noise, seed=seed),
    )


# --------------------------------------------------------------------------- #
# 5. Modular arithmetic
# --------------------------------------------------------------------------- #


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
) -> Task:
    """All pairs ``(a, b)`` with label ``c = a op b mod p`` (Power et al., 2022).

    Power, Burda, Edwards, Babuschkin & Misra (2022, "Grokking: generalization
    beyond overfitting on small algorithmic datasets"). ``p`` must be prime
    (so that ``Z_p`` is a field and ``div`` is defined); ``operation`` is
    ``add`` (a + b), ``sub`` (a - b), ``mul`` (a b) or ``div`` (a b^{-1}, with
    ``b != 0``, ``b^{-1} = b^{p-2} mod p``). The input is the concatenation
    ``[onehot_p(a), onehot_p(b)]`` (dimension ``2p``), as in the MLP setting of
    Gromov (2023, "Grokking modular arithmetic"). The ``N = p^2`` pairs
    (``p (p - 1)`` for div) are shuffled with the seed's ``split`` stream; the
    first ``round(train_fraction * N)`` form the train set, the rest the test
    set (both must be non-empty). ``n_classes = p``; ``loss="mse"`` gives
    one-hot float32 targets ``(N, p)`` in {0, 1} (Gromov, 2023).
    """
    if not _is_int(p) or p < 2 or not _is_prime(int(p)):
        raise ValueError(f"p must be a prime int (>= 2), got {p!r}")
    p = int(p)
    operation = _check_choice("operation", operation, OPERATIONS)
    train_fraction = _check_float("train_fraction", train_fraction, 0.0, 1.0,
                                  low_open=True, high_open=True)
    seed = _check_seed(seed)
    loss = _check_choice("loss", loss, LOSSES)
    label_noise = _check_label_noise(label_noise, loss)

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
    order = _rng(seed, "split").permutation(n_pairs)
    a, b = a[order], b[order]
    labels = _modular_labels(a, b, p, operation).astype(np.int32)
    x = np.zeros((n_pairs, 2 * p), dtype=np.float32)
    x[np.arange(n_pairs), a] = 1.0
    x[np.arange(n_pairs), p + b] = 1.0
    y = labels if loss == "cross_entropy" else _one_hot(labels, p)
    return _task(
        "modular_arithmetic",
        x[:n_train], y[:n_train], x[n_train:], y[n_train:],
        loss=loss, n_classes=p, label_noise=label_noise, seed=seed,
        config=dict(p=p, operation=operation, train_fraction=train_fraction, seed=seed,
                    loss=loss, label_noise=label_noise),
    )


# --------------------------------------------------------------------------- #
# 6. Digits (real data shipped with scikit-learn)
# --------------------------------------------------------------------------- #


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return _readonly(np.asarray(x, dtype=np.float64)), _readonly(np.asarray(y, dtype=np.int64))


def digits(
    n_train: int = 1000,
    n_test: int | None = None,
    classes: tuple[int, ...] | None = None,
    loss: str = "cross_entropy",
    standardize: bool = True,
    label_noise: float = 0.0,
    seed: int = 0,
) -> Task:
    """Handwritten digits: scikit-learn's ``load_digits`` (8x8 images, D = 64).

    The UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin &
    Kaynak, 1998; Kaynak, 1995): 1797 images, pixel values 0..16, 10 classes.
    ``classes``: optional sequence of distinct digits to keep (at least 2),
    relabelled ``0..C-1`` in the given order. The kept examples are shuffled
    with the seed's ``split`` stream; the first ``n_train`` are the train set,
    the next ``n_test`` (``None``: all the rest) the test set.

    ``standardize``: ``x -> (x - m) / s`` with the per-feature mean ``m`` and
    standard deviation ``s`` (ddof 0) of the *train* split only; a feature
    constant on the train split gets ``s = 1`` (it is only centred, so it is 0
    on the train split; the convention of scikit-learn's ``StandardScaler``).
    ``loss="cross_entropy"``: int32 labels; ``loss="mse"``: one-hot float32
    targets ``(N, C)`` with entries in {0, 1} (``n_classes`` still set).
    """
    n_train = _check_int("n_train", n_train)
    if n_test is not None:
        n_test = _check_int("n_test", n_test)
    loss = _check_choice("loss", loss, LOSSES)
    if not isinstance(standardize, (bool, np.bool_)):
        raise ValueError(f"standardize must be a bool, got {standardize!r}")
    label_noise = _check_label_noise(label_noise, loss)
    seed = _check_seed(seed)

    x_all, y_all = _load_digits()
    if classes is None:
        keep_classes = list(range(10))
    else:
        if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
            raise ValueError(f"classes must be a sequence of digits 0..9 or None, got {classes!r}")
        keep_classes = list(classes)
        if (
            len(keep_classes) < 2
            or not all(_is_int(c) and 0 <= c <= 9 for c in keep_classes)
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
    order = _rng(seed, "split").permutation(available)
    train_idx, test_idx = order[:n_train], order[n_train:n_train + n_test]
    x_train, x_test = x_kept[train_idx], x_kept[test_idx]
    if standardize:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    n_classes = len(keep_classes)

    def targets(labels):
        labels = labels.astype(np.int32)
        return labels if loss == "cross_entropy" else _one_hot(labels, n_classes)

    return _task(
        "digits",
        x_train.astype(np.float32), targets(y_kept[train_idx]),
        x_test.astype(np.float32), targets(y_kept[test_idx]),
        loss=loss, n_classes=n_classes, label_noise=label_noise, seed=seed,
        config=dict(n_train=n_train, n_test=n_test,
                    classes=None if classes is None else keep_classes, loss=loss,
                    standardize=bool(standardize), label_noise=label_noise, seed=seed),
    )


# --------------------------------------------------------------------------- #
# 7. User data
# --------------------------------------------------------------------------- #


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
) -> Task:
    """Wrap a user's own data in a :class:`Task`.

    ``dtype`` ("float32" or "float64") is the precision the arrays are stored in; pass
    "float64" (and run under ``jax.enable_x64``) for float64 oracles.

    ``x_*``: ``(N, D)`` real arrays. ``loss="mse"``: ``y_*`` real, ``(N,)``
    (reshaped to ``(N, 1)``) or ``(N, K)``. ``loss="cross_entropy"``: ``y_*``
    integer labels ``(N,)``; ``n_classes`` defaults to ``max label + 1`` over
    both splits. Give both ``x_test`` and ``y_test`` or neither; with neither
    the train set is also used as test set (``config["test"] == "train"``).

    Without ``seed`` the task has no noise draws (``noise == ()``) and
    ``label_noise`` must be 0. With an int ``seed``, noise draws are made from
    the seed as for the generators, so ``label_noise`` can be swept on user
    data too. Raises ValueError naming the array for NaN/inf, wrong rank or
    dtype, and naming both shapes for mismatched shapes.
    """
    loss = _check_choice("loss", loss, LOSSES)
    if (x_test is None) != (y_test is None):
        raise ValueError(
            "x_test and y_test must be given together or both omitted, got "
            f"x_test={'None' if x_test is None else 'array'}, "
            f"y_test={'None' if y_test is None else 'array'}"
        )
    test_given = x_test is not None
    if not test_given:
        x_test, y_test = x_train, y_train

    arrays = {}
    for attr, value in (("x_train", x_train), ("x_test", x_test)):
        x = np.asarray(value)
        if x.ndim != 2:
            raise ValueError(f"{attr} must be 2-D (N, D), got shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ValueError(f"{attr} must hold real numbers, got dtype {x.dtype}")
        _check_finite(attr, x)
        arrays[attr] = x
    for attr, value in (("y_train", y_train), ("y_test", y_test)):
        y = np.asarray(value)
        if loss == "mse":
            if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)):
                raise ValueError(f"{attr} must hold real numbers, got dtype {y.dtype}")
            _check_finite(attr, y)
            if y.ndim == 1:
                y = y[:, None]
            if y.ndim != 2:
                raise ValueError(f"{attr} must be 1-D (N,) or 2-D (N, K) for loss 'mse', got shape {y.shape}")
        else:
            if not np.issubdtype(y.dtype, np.integer):
                raise ValueError(
                    f"{attr} must hold integer class labels for loss 'cross_entropy', "
                    f"got dtype {y.dtype}"
                )
            if y.ndim != 1:
                raise ValueError(
                    f"{attr} must be 1-D (N,) labels for loss 'cross_entropy', got shape {y.shape}"
                )
            if y.size and y.min() < 0:
                raise ValueError(f"{attr} labels must be non-negative, got minimum {y.min()}")
        arrays[attr] = y
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x_{split} and y_{split} must have the same number of rows, got shapes "
                f"{x.shape} and {y.shape}"
            )
    if arrays["x_train"].shape[1] != arrays["x_test"].shape[1]:
        raise ValueError(
            f"x_train and x_test must have the same number of features, got shapes "
            f"{arrays['x_train'].shape} and {arrays['x_test'].shape}"
        )
    if loss == "mse" and arrays["y_train"].shape[1] != arrays["y_test"].shape[1]:
        raise ValueError(
            f"y_train and y_test must have the same number of outputs, got shapes "
            f"{arrays['y_train'].shape} and {arrays['y_test'].shape}"
        )
    if loss == "cross_entropy" and n_classes is None:
        n_classes = int(max(arrays["y_train"].max(initial=0), arrays["y_test"].max(initial=0))) + 1
        if n_classes < 2:
            raise ValueError(
                f"n_classes inferred from the labels is {n_classes}; cross_entropy needs >= 2 "
                f"(pass n_classes explicitly)"
            )
    if n_classes is not None:
        if not _is_int(n_classes) or n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2 or None, got {n_classes!r}")
        n_classes = int(n_classes)
    if loss == "cross_entropy":
        for attr in ("y_train", "y_test"):
            y = arrays[attr]
            if y.size and y.max() >= n_classes:
                raise ValueError(
                    f"{attr} labels must lie in [0, n_classes={n_classes}), got maximum {y.max()}"
                )
    label_noise = _check_label_noise(label_noise, loss)
    if seed is None:
        noise: tuple = ()
    else:
        seed = _check_seed(seed)
        noise = _noise_draws(arrays["y_train"], loss, n_classes, seed)
    return Task(
        name=name,
        x_train=arrays["x_train"],
        y_train=arrays["y_train"],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
        loss=loss,
        n_classes=n_classes,
        label_noise=label_noise,
        noise=noise,
        dtype=dtype,
        config={
            "generator": "from_arrays",
            "name": name,
            "loss": loss,
            "n_classes": n_classes,
            "test": "given" if test_given else "train",
            "shapes": {k: list(v.shape) for k, v in arrays.items()},
            "label_noise": label_noise,
            "seed": seed,
        },
    )


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #

TASKS: dict[str, Callable[..., Task]] = {
    "teacher_student_linear": teacher_student_linear,
    "teacher_student_mlp": teacher_student_mlp,
    "gaussian_mixture": gaussian_mixture,
    "polynomial": polynomial,
    "modular_arithmetic": modular_arithmetic,
    "digits": digits,
}


def make(name: str, **kwargs: Any) -> Task:
    """``TASKS[name](**kwargs)``; ValueError listing the known names if unknown."""
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"name must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name](**kwargs)
