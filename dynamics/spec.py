"""``Spec``: everything about a run that is static (fixes shapes and the program).

Float hyperparameters (``lr``, ``momentum``, ``output_scale``, ``sigma_w``, ``gamma0``,
``label_noise``, ...) have their defaults in the model, optimizer and task; they are
*swept values*, traced into one compiled program. Everything here that changes an array
shape or the program's structure (width, depth, steps, batch size, observables) is a
*static axis*: a sweep over it compiles once per value.

Time: one step is one optimizer update; logs are taken at steps
``0, log_every, 2 log_every, ..., steps``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import numbers
from typing import Any, Callable

import numpy as np

from dynamics import observables as obs_lib
from dynamics.models import Model
from dynamics.optimizers import ADAPTIVE, Optimizer

STRATEGIES = ("auto", "vmap", "map", "chunked", "loop")


@functools.lru_cache(maxsize=32)
def _task_as(task, dtype: str):
    """``task.astype(dtype)``, one object per (task, dtype): equal specs share it, so a
    sweep over them compiles once."""
    return task.astype(dtype)


def _check_parts(model, task, observables) -> None:
    """Clear errors for the mistakes of a first session: ``Spec(task, model)`` and a bare
    name or object for ``observables``."""
    if hasattr(model, "x_train"):
        raise ValueError("model must be a model (dynamics.MLP, dynamics.from_linen(...)), got "
                         "a task: the arguments are Spec(model, task, ...), model first")
    if not (callable(getattr(model, "init", None)) and callable(getattr(model, "apply", None))):
        raise ValueError(f"model must be a model with init and apply (dynamics.MLP, "
                         f"dynamics.from_linen(...)), got {type(model).__name__}")
    if not hasattr(task, "x_train"):
        raise ValueError(f"task must be a dynamics task (dynamics.tasks), got "
                         f"{type(task).__name__}")
    if isinstance(observables, (str, obs_lib.Observable)):
        raise ValueError(f"observables must be a tuple of observables and names, got "
                         f"{observables!r}; write observables=({observables!r},)")
    try:
        iter(observables)
    except TypeError:
        raise ValueError(f"observables must be a tuple of observables and names, got "
                         f"{observables!r}") from None


@dataclasses.dataclass(frozen=True)
class Spec:
    """A training setup; see the module doc for what is static and what is swept.

    * ``batch_size=None``: full-batch gradient descent; otherwise minibatch SGD drawing
      each epoch a fresh permutation of the training set from the run's key (batches of
      ``batch_size``, the remainder of an epoch dropped).
    * ``scale_lr_by_output_scale``: divide every learning rate by ``output_scale**2``, so
      that the function-space dynamics at initialisation do not depend on ``alpha``
      (Chizat, Oyallon & Bach 2019, Sec. 2).
    * ``init``: optional ``init(key, x, hparams) -> params`` replacing ``model.init`` (for
      prescribed initial conditions, e.g. the decoupled initialisation of Saxe et al.).
    * ``strategy``: how the runs of a sweep are batched (``dynamics.sweeps``).
    * ``chunk_size``: runs per vmapped chunk for the ``"chunked"`` strategy.
    * ``dtype``: ``"float32"`` or ``"float64"`` for the whole run (data, parameters,
      optimizer state, observables); ``None`` takes the task's. float64 runs execute under
      ``jax.enable_x64`` for the duration of the call only: the caller's global setting is
      left as it was.
    """

    model: Model
    task: Any
    optimizer: Optimizer = Optimizer()
    steps: int = 1000
    batch_size: int | None = None
    log_every: int = 10
    observables: tuple = ("default",)
    root_seed: int = 0
    scale_lr_by_output_scale: bool = False
    init: Callable | None = None
    strategy: str = "auto"
    chunk_size: int = 8
    dtype: str | None = None

    def __post_init__(self):
        _check_parts(self.model, self.task, self.observables)

        def need_int(name, value, low):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

        need_int("steps", self.steps, 1)
        need_int("log_every", self.log_every, 1)
        need_int("root_seed", self.root_seed, 0)
        need_int("chunk_size", self.chunk_size, 1)
        if self.steps % self.log_every:
            raise ValueError(
                f"log_every must divide steps={self.steps}, got log_every={self.log_every}"
            )
        if not isinstance(self.optimizer, Optimizer):
            raise ValueError(f"optimizer must be a dynamics.Optimizer, got {self.optimizer!r}")
        self.optimizer.check_steps(self.steps)
        if self.dtype is None:
            object.__setattr__(self, "dtype", self.task.dtype)
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.task.dtype != self.dtype:
            object.__setattr__(self, "task", _task_as(self.task, self.dtype))
        n_train = self.task.n_train
        if self.batch_size is not None:
            need_int("batch_size", self.batch_size, 1)
            if self.batch_size > n_train:
                raise ValueError(
                    f"batch_size must be <= the number of training examples ({n_train}), "
                    f"got {self.batch_size}"
                )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        self.model.validate_data(self.task.x_train, self.task.out_dim)
        if getattr(self.model, "parametrization", None) == "mup" and self.optimizer.name in ADAPTIVE:
            raise ValueError(
                f"optimizer {self.optimizer.name!r} with parametrization='mup': the mup "
                "learning-rate multipliers are those of gradient descent; use 'sgd' or "
                "'momentum' (see dynamics.parametrization)"
            )
        object.__setattr__(self, "observables", obs_lib.resolve(self.observables))
        self.hparams()  # name collisions

    # -- hyperparameters ---------------------------------------------------------------

    def hparams(self) -> dict[str, float]:
        """Default values of every swept hyperparameter, by name."""
        out: dict[str, float] = {}
        for part in (self.model.hparams(), self.optimizer.hparams(), self.task.hparams()):
            for k, v in part.items():
                if k in out:
                    raise ValueError(f"hyperparameter {k!r} is defined twice")
                out[k] = v
        return out

    def check_hparam_values(self, name: str, values) -> None:
        """Range checks for concrete values of hyperparameter ``name``."""
        for v in np.atleast_1d(np.asarray(values)).tolist():
            if name in self.model.hparams():
                check = getattr(self.model, "check_hparams", None)
                if check is not None:
                    check({name: v})
            elif name in self.optimizer.hparams():
                self.optimizer.check_hparams({name: v})
            else:
                if not (isinstance(v, numbers.Real) and np.isfinite(v) and v >= 0):
                    raise ValueError(f"{name} must be a finite real >= 0, got {v!r}")
                if name == "label_noise" and self.task.loss == "cross_entropy" and v > 1:
                    raise ValueError(f"label_noise must be in [0, 1] for classification, got {v!r}")

    # -- static axes -------------------------------------------------------------------

    def static_fields(self) -> dict[str, str]:
        """Names that may be swept as static axes, and where they live."""
        names = {"batch_size": "spec"}
        if dataclasses.is_dataclass(self.model):
            for f in dataclasses.fields(self.model):
                value = getattr(self.model, f.name)
                not_static = ("out_dim", "kind", "name")
                if isinstance(value, (bool, int, str)) and f.name not in not_static:
                    names[f.name] = "model"
        return names

    def with_static(self, name: str, value) -> "Spec":
        where = self.static_fields()[name]
        if isinstance(value, np.generic):
            value = value.item()
        if where == "model":
            return dataclasses.replace(self, model=dataclasses.replace(self.model, **{name: value}))
        return dataclasses.replace(self, **{name: value})

    # -- description -------------------------------------------------------------------

    @property
    def classification(self) -> bool:
        return self.task.n_classes is not None

    @property
    def n_logs(self) -> int:
        return self.steps // self.log_every

    def config(self) -> dict:
        return {
            "model": self.model.config(),
            "task": {"name": self.task.name, **self.task.config},
            "optimizer": self.optimizer.config(),
            "steps": self.steps,
            "batch_size": self.batch_size,
            "log_every": self.log_every,
            "observables": [repr(o) for o in self.observables],
            "root_seed": self.root_seed,
            "scale_lr_by_output_scale": self.scale_lr_by_output_scale,
            "init": None if self.init is None else getattr(self.init, "__name__", repr(self.init)),
            "dtype": self.dtype,
        }

    def config_json(self) -> str:
        return json.dumps(self.config(), default=str, sort_keys=True)
