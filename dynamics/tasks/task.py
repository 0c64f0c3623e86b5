"""The common ``Task``: a fixed train/test split, its loss, its label-noise draws.

Shapes
------
Inputs ``x_*`` have a batch axis first and any trailing shape: features ``(N, D)``,
images ``(N, H, W, C)``, token sequences ``(N, T)``. Real inputs are stored in the task's
float ``dtype``; integer inputs (tokens, indices) stay integers (int32) and are never cast
to float.

Targets are per example or per position:

* ``loss="mse"``: real targets ``(N, K)`` or ``(N, T, K)`` (any ``(N, ..., K)``);
* ``loss="cross_entropy"`` or ``"cross_entropy_z_loss"`` (the losses that take labels,
  ``dynamics.losses.takes_labels``): integer labels ``(N,)`` or ``(N, T)`` in
  ``[0, n_classes)``. A z-loss task is a cross-entropy task in everything (targets, masks,
  label noise, ``n_classes``, accuracy) but the loss it trains on.

An optional boolean mask per position (``mask_train``, ``mask_test``, of shape ``(N, ...)``:
the labels' shape, or the mse targets' shape without ``K``) says which positions count in
the loss and the accuracy (e.g. only the answer token of a sequence). The reduction and its
normalisation are written once, in ``dynamics.losses``.

Randomness
----------
Every generator is a pure function of its arguments: all randomness comes from
``np.random.default_rng`` seeded with the integer ``seed`` of the task. Each part of a task
is drawn from its own named sub-stream, ``np.random.default_rng([seed, STREAM])`` (a
``SeedSequence`` built from the pair), with ``STREAM`` one of :data:`STREAMS`:

* ``teacher``: the target function (teacher weights, class means);
* ``train`` / ``test``: the inputs of the train / test split;
* ``split``: the shuffle that splits a finite data set (modular arithmetic, digits) and the
  seeded row order of a user's arrays (``n_train`` as a sweep axis);
* ``noise``: the label-noise draws stored in :attr:`Task.noise`;
* ``corruption``: the training rows whose stored labels are replaced by wrong ones, and
  those labels (``modular_arithmetic(corrupt_fraction=...)``).

Separate streams make the teacher and the test set independent of ``n_train``, and the
training inputs of a smaller ``n_train`` a prefix of those of a larger one (same seed),
which is what learning-curve sweeps need.

Label noise
-----------
``mse``: ``targets = y_train + label_noise * xi`` with ``xi ~ N(0, 1)`` i.i.d. of shape
``y_train.shape`` (``noise = (xi,)``): additive Gaussian output noise of standard deviation
``label_noise``, as in the noisy teacher of Advani, Saxe & Sompolinsky (2020). For one-hot
targets this is Gaussian noise on the one-hot vectors, *not* label flipping.

Labels (``cross_entropy``, ``cross_entropy_z_loss``):
``targets = where(u < label_noise, other, y_train)`` with ``u ~ U[0, 1)`` (float32) and
``other = (y_train + r) mod C``, ``r ~ Uniform{1, ..., C-1}`` (``noise = (u, other)``,
both of the labels' shape): each training label is, independently
with probability ``label_noise``, replaced by a class drawn uniformly among the ``C - 1``
wrong ones (symmetric label noise; Zhang, Bengio, Hardt, Recht & Vinyals, 2017; Rolnick,
Veit, Belongie & Shavit, 2017). The draws are fixed by the seed, so the flipped set grows
monotonically with ``label_noise``. Test labels never get noise.

Arrays as program inputs
------------------------
``task.arrays()`` is the dict of arrays a compiled training program takes as an argument
(never as constants baked into it), and :func:`train_targets` the pure function that turns
those arrays and a (possibly traced) ``label_noise`` into training targets.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import numbers
from dataclasses import field
from typing import Any

import jax.numpy as jnp
import numpy as np

from dynamics.checks import check_choice, check_finite, check_float, check_int, is_int
from dynamics.losses import LOSSES, Masked, takes_labels

FLOAT_DTYPES = ("float32", "float64")

# Sub-stream identifiers (see module docstring). Never renumber: it would change every
# generated task.
STREAMS = {"teacher": 0, "train": 1, "test": 2, "split": 3, "noise": 4, "corruption": 5}


def rng(seed: int, stream: str) -> np.random.Generator:
    """Independent generator for one named part of the task with this seed."""
    return np.random.default_rng([seed, STREAMS[stream]])


def check_seed(seed: Any) -> int:
    return check_int("seed", seed, minimum=0)


def check_label_noise(label_noise: Any, loss: str) -> float:
    """A probability of flipping a label for a loss that takes labels, a noise standard
    deviation >= 0 otherwise."""
    if takes_labels(loss):
        return check_float("label_noise", label_noise, 0.0, 1.0)
    return check_float("label_noise", label_noise, 0.0)


def readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float32)[labels]


def _is_numeric(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A fixed supervised learning problem (shapes and noise: see the module doc).

    Arrays are copied into read-only numpy arrays at construction. ``n_classes`` is set for
    classification problems (for ``mse`` on one-hot targets it must equal ``K``; accuracy
    is then the arg-max match). ``label_noise`` is the default value of the swept
    hyperparameter of the same name and ``noise`` the fixed draws that implement it;
    ``noise == ()`` means the task has no noise draws and then ``label_noise`` must be 0.
    ``config`` is a JSON-able description of how the task was made; for the generators of
    ``dynamics.tasks.TASKS`` it regenerates the task
    (``make(config["generator"], **rest)``), which is how a shape-changing field such as
    ``n_train`` becomes a static sweep axis (:meth:`with_static`).

    ``eq=False``: tasks compare and hash by identity, so a task can be a static argument
    of a jitted function.
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
    mask_train: np.ndarray | None = None
    mask_test: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        check_choice("dtype", self.dtype, FLOAT_DTYPES)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty str, got {self.name!r}")
        check_choice("loss", self.loss, LOSSES)
        for attr in ("x_train", "x_test"):
            set_(attr, readonly(self._inputs(attr, getattr(self, attr))))
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise ValueError(
                f"x_train and x_test must have the same per-example shape, got shapes "
                f"{self.x_train.shape} and {self.x_test.shape}"
            )
        if self.x_test.dtype.kind != self.x_train.dtype.kind:
            raise ValueError(f"x_train and x_test must both be integers or both be real, got "
                             f"dtypes {self.x_train.dtype} and {self.x_test.dtype}")
        if self.n_classes is not None:
            if not is_int(self.n_classes) or self.n_classes < 2:
                raise ValueError(f"n_classes must be an int >= 2 or None, got {self.n_classes!r}")
            set_("n_classes", int(self.n_classes))
        elif takes_labels(self.loss):
            raise ValueError(f"n_classes must be set (an int >= 2) for loss {self.loss!r}, "
                             "got None")
        for split in ("train", "test"):
            set_(f"y_{split}", readonly(self._targets(split)))
        if self.y_test.shape[1:] != self.y_train.shape[1:]:
            real = not takes_labels(self.loss)
            what = "outputs" if self.y_train.ndim == 2 and real else "per-example shape"
            raise ValueError(
                f"y_test and y_train must have the same number of {what}, got shapes "
                f"{self.y_test.shape} and {self.y_train.shape}"
            )
        if (not takes_labels(self.loss) and self.n_classes is not None
                and self.y_train.shape[-1] != self.n_classes):
            raise ValueError(
                f"n_classes={self.n_classes} must equal the number of target columns "
                f"for loss 'mse' (one-hot targets), got y_train shape {self.y_train.shape}"
            )
        for split in ("train", "test"):
            set_(f"mask_{split}", self._mask(split))
        set_("label_noise", check_label_noise(self.label_noise, self.loss))
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
        if not isinstance(self.config, dict):
            raise ValueError(f"config must be a dict, got {type(self.config).__name__}")
        try:
            json.dumps(self.config)
        except (TypeError, ValueError) as err:
            raise ValueError(f"config must be JSON-able, got {self.config!r} ({err})") from None

    # ------------------------------------------------------------- validation
    def _inputs(self, attr: str, value) -> np.ndarray:
        x = np.asarray(value)
        if x.ndim < 2:
            raise ValueError(f"{attr} must have a batch axis and at least one feature axis "
                             f"(N, ...), e.g. (N, D), (N, H, W, C) or tokens (N, T); got "
                             f"shape {x.shape}")
        if not _is_numeric(x):
            raise ValueError(f"{attr} must hold real numbers or integer tokens, got dtype {x.dtype}")
        if x.shape[0] < 1:
            raise ValueError(f"{attr} must have at least one row, got shape {x.shape}")
        if np.issubdtype(x.dtype, np.integer):
            if x.size and (x.min() < np.iinfo(np.int32).min or x.max() > np.iinfo(np.int32).max):
                raise ValueError(f"{attr} integers must fit in int32, got range "
                                 f"[{x.min()}, {x.max()}]")
            return np.array(x, dtype=np.int32)  # a copy: the task owns its arrays
        x = np.array(x, dtype=self.dtype)
        check_finite(attr, x)
        return x

    def _targets(self, split: str) -> np.ndarray:
        attr, x_attr = f"y_{split}", f"x_{split}"
        y = np.asarray(getattr(self, attr))
        n = getattr(self, x_attr).shape[0]
        if not takes_labels(self.loss):
            if y.ndim < 2:
                raise ValueError(f"{attr} must be (N, K) or per position (N, T, K) for loss "
                                 f"'mse', got shape {y.shape}")
            if not _is_numeric(y):
                raise ValueError(f"{attr} must hold real numbers, got dtype {y.dtype}")
            y = np.array(y, dtype=self.dtype)
            check_finite(attr, y)
        else:
            if y.ndim < 1:
                raise ValueError(f"{attr} must be integer labels (N,) or per position (N, T) "
                                 f"for loss {self.loss!r}, got shape {y.shape}")
            if not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"{attr} must hold integer class labels for loss "
                                 f"{self.loss!r}, got dtype {y.dtype}")
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise ValueError(f"{attr} labels must lie in [0, n_classes={self.n_classes}), "
                                 f"got range [{y.min()}, {y.max()}]")
            y = np.array(y, dtype=np.int32)
        if y.shape[0] != n:
            raise ValueError(f"{x_attr} and {attr} must have the same number of rows, got "
                             f"shapes {getattr(self, x_attr).shape} and {y.shape}")
        return y

    @property
    def position_shape(self) -> tuple[int, ...]:
        """The shape of the loss's terms per split: the labels' shape, or the mse targets'
        shape without their last axis."""
        return self.y_train.shape if takes_labels(self.loss) else self.y_train.shape[:-1]

    def _mask(self, split: str):
        attr = f"mask_{split}"
        mask = getattr(self, attr)
        if mask is None:
            return None
        mask = np.asarray(mask)
        y = getattr(self, f"y_{split}")
        want = y.shape if takes_labels(self.loss) else y.shape[:-1]
        if mask.shape != want:
            raise ValueError(f"{attr} must have shape {want} (one entry per position of "
                             f"y_{split} {y.shape}), got {mask.shape}")
        if mask.dtype != np.bool_ and not (_is_numeric(mask) and np.all((mask == 0) | (mask == 1))):
            raise ValueError(f"{attr} must hold booleans (or 0/1), got dtype {mask.dtype}")
        mask = mask.astype(bool)
        if not mask.any():
            raise ValueError(f"{attr} masks out every position: nothing would be trained or "
                             "measured")
        return readonly(np.array(mask))

    def _validated_noise(self, noise: tuple) -> tuple:
        shape = self.y_train.shape
        if not takes_labels(self.loss):
            if len(noise) != 1:
                raise ValueError(f"noise must hold 1 array (xi,) for loss 'mse', got {len(noise)}")
            xi = np.array(noise[0], dtype=self.dtype)
            if xi.shape != shape:
                raise ValueError(f"noise[0] must have the shape of y_train {shape}, got {xi.shape}")
            check_finite("noise[0]", xi)
            return (readonly(xi),)
        if len(noise) != 2:
            raise ValueError(
                f"noise must hold 2 arrays (u, other) for loss {self.loss!r}, got {len(noise)}"
            )
        u, other = np.asarray(noise[0]), np.asarray(noise[1])
        if u.shape != shape or other.shape != shape:
            raise ValueError(f"noise arrays must have the labels' shape {shape} for loss "
                             f"{self.loss!r}, got {u.shape} and {other.shape}")
        if u.dtype != np.float32 or not np.all((u >= 0) & (u < 1)):
            raise ValueError("noise[0] must be float32 uniform draws in [0, 1)")
        if not np.issubdtype(other.dtype, np.integer):
            raise ValueError(f"noise[1] must hold integer labels, got dtype {other.dtype}")
        if np.any((other < 0) | (other >= self.n_classes)) or np.any(other == self.y_train):
            raise ValueError(
                f"noise[1] must hold labels in [0, {self.n_classes}) that differ from y_train"
            )
        return (readonly(np.array(u)), readonly(np.array(other, dtype=np.int32)))

    # ----------------------------------------------------------------- sizes
    @property
    def out_dim(self) -> int:
        """Network output width: K for mse, n_classes for a loss that takes labels."""
        return int(self.n_classes) if takes_labels(self.loss) else self.y_train.shape[-1]

    @property
    def in_dim(self) -> int:
        """The size of the inputs' last axis (features; sequence length for tokens)."""
        return self.x_train.shape[-1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example's input."""
        return self.x_train.shape[1:]

    @property
    def integer_inputs(self) -> bool:
        return bool(np.issubdtype(self.x_train.dtype, np.integer))

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
        """The same task with its real arrays in ``dtype`` ("float32" or "float64"; the
        latter for float64 runs under ``jax.enable_x64``); integer arrays stay integers."""
        return dataclasses.replace(self, dtype=dtype)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays a compiled training program takes as its data argument: inputs and
        targets of both splits, the masks when set, and the label-noise draws."""
        out = {"x_train": self.x_train, "y_train": self.y_train,
               "x_test": self.x_test, "y_test": self.y_test}
        for split in ("train", "test"):
            mask = getattr(self, f"mask_{split}")
            if mask is not None:
                out[f"mask_{split}"] = mask
        for i, a in enumerate(self.noise):
            out[f"noise_{i}"] = a
        return out

    def train_targets(self, label_noise: Any = None):
        """Training targets at noise level ``label_noise`` (jax-traceable; see
        :func:`train_targets`). ``None`` means ``self.label_noise``. Without noise draws
        (``noise == ()``) a concrete ``label_noise > 0`` raises ValueError (a traced one
        cannot be checked and is ignored)."""
        if label_noise is None:
            label_noise = self.label_noise
        concrete = isinstance(label_noise, numbers.Real) or (
            isinstance(label_noise, np.ndarray) and label_noise.ndim == 0
        )
        if concrete:
            value = check_label_noise(float(label_noise), self.loss)
            if self.noise == () and value > 0:
                raise ValueError(
                    f"label_noise must be 0 for a task without noise draws (noise=()), got {value}"
                )
        return train_targets(self.arrays(), label_noise, self.loss)

    # ---------------------------------------------------------- static axes
    def static_fields(self) -> dict[str, Any]:
        """Fields that may be swept as static axes (each value regenerates the task): every
        keyword of a generated task but its seed and its (swept) label noise; for a user's
        arrays, ``n_train`` (a seeded prefix of the given rows)."""
        generator = self.config.get("generator")
        if generator == "from_arrays":
            return {"n_train": self.n_train}
        from dynamics.tasks import TASKS

        if generator not in TASKS:
            return {}
        skip = ("generator", "seed", "label_noise")
        return {k: v for k, v in self.config.items() if k not in skip}

    def with_static(self, name: str, value) -> "Task":
        """The task with static field ``name`` set to ``value`` (see :meth:`static_fields`),
        in the same dtype."""
        fields = self.static_fields()
        if name not in fields:
            raise ValueError(f"{name!r} is not a static field of task {self.name!r}; its "
                             f"static fields are {sorted(fields)}")
        if isinstance(value, np.generic):
            value = value.item()
        if self.config.get("generator") == "from_arrays":
            from dynamics.tasks.arrays import train_prefix

            return train_prefix(self, value)
        from dynamics.tasks import make

        kwargs = {k: v for k, v in self.config.items() if k != "generator"}
        kwargs[name] = value
        task = make(self.config["generator"], **kwargs)
        return task if task.dtype == self.dtype else task.astype(self.dtype)

    def summary(self) -> str:
        """One line: name, sizes and loss."""
        return (
            f"{self.name}: P={self.n_train} train, Q={self.n_test} test, "
            f"input {self.input_shape} {self.x_train.dtype}, K={self.out_dim} out, loss={self.loss}"
            + (f", n_classes={self.n_classes}" if self.n_classes is not None else "")
            + (f", label_noise={self.label_noise:g}" if self.label_noise else "")
            + (", masked" if self.mask_train is not None else "")
        )


def train_targets(arrays: dict, label_noise, loss: str):
    """Training targets from a task's ``arrays()`` at noise level ``label_noise`` (may be
    traced): mse ``y_train + label_noise * noise_0``; labels (cross_entropy, z-loss)
    ``where(noise_0 < label_noise, noise_1, y_train)``; ``y_train`` without noise draws.
    With a training mask the targets are ``losses.Masked(values, mask)``."""
    y = jnp.asarray(arrays["y_train"])
    if "noise_0" in arrays:
        xi = jnp.asarray(arrays["noise_0"])
        if takes_labels(loss):
            s = jnp.asarray(label_noise, xi.dtype)
            y = jnp.where(xi < s, jnp.asarray(arrays["noise_1"]), y)
        else:
            y = y + jnp.asarray(label_noise, y.dtype) * xi
    return with_mask(y, arrays.get("mask_train"))


def clean_targets(arrays: dict, split: str):
    """The targets of ``split`` ("train" or "test") of a task's ``arrays()`` without label
    noise, with their mask if any."""
    return with_mask(jnp.asarray(arrays[f"y_{split}"]), arrays.get(f"mask_{split}"))


def with_mask(y, mask):
    return y if mask is None else Masked(y, jnp.asarray(mask))


def noise_draws(y_train: np.ndarray, loss: str, n_classes: int | None, seed: int) -> tuple:
    """The fixed label-noise draws of a task (module docstring), from the noise stream."""
    r = rng(seed, "noise")
    if not takes_labels(loss):
        return (r.standard_normal(y_train.shape).astype(np.float32),)
    shape = y_train.shape
    u = r.random(shape, dtype=np.float32)  # float32 draws are in [0, 1) (no rounding up to 1)
    shift = r.integers(1, n_classes, size=shape)  # uniform on {1, ..., C-1}
    other = ((y_train.astype(np.int64) + shift) % n_classes).astype(np.int32)
    return (u, other)


def generated(name: str, x_train, y_train, x_test, y_test, *, loss: str,
              n_classes: int | None, label_noise: float, seed: int, config: dict,
              mask_train=None, mask_test=None) -> Task:
    """A generator's Task, with noise draws from the seed's noise stream and the config that
    regenerates it."""
    return Task(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        loss=loss,
        n_classes=n_classes,
        label_noise=label_noise,
        noise=noise_draws(np.asarray(y_train), loss, n_classes, seed),
        config={"generator": name, **config},
        mask_train=mask_train,
        mask_test=mask_test,
    )
