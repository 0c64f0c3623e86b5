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
from typing import Any, Callable

import jax
import numpy as np

from dynamics import observables as obs_lib
from dynamics.checks import check_int, is_real
from dynamics.losses import takes_labels
from dynamics.models import base as model_lib
from dynamics.optimizers import Optimizer
from dynamics.tasks import Task

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

    model: Any
    task: Task
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
        check_int("steps", self.steps)
        check_int("log_every", self.log_every)
        check_int("root_seed", self.root_seed, minimum=0)
        check_int("chunk_size", self.chunk_size)
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
            check_int("batch_size", self.batch_size)
            if self.batch_size > n_train:
                raise ValueError(
                    f"batch_size must be <= the number of training examples ({n_train}), "
                    f"got {self.batch_size}"
                )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        if getattr(self.model, "parametrization", "standard") != "standard":
            if self.optimizer.family is None:
                raise ValueError(
                    f"optimizer {self.optimizer.name!r} with parametrization="
                    f"{self.model.parametrization!r}: its family is unknown (family=None), and the "
                    "learning-rate multipliers depend on it; declare it, "
                    "from_optax(..., family='sgd' or 'adam')"
                )
        object.__setattr__(self, "observables", obs_lib.resolve(self.observables))
        for obs in self.observables:
            self.observable_stride(obs)
        self.hparams()  # name collisions
        check_outputs(self.model, self.task, self.hparams())
        object.__setattr__(self, "observables", obs_lib.bind(self.observables, self))

    def param_shapes(self):
        """The parameters' ``ShapeDtypeStruct``s (``jax.eval_shape`` of the initialiser,
        ``init`` when given: nothing is computed), in the spec's dtype."""
        x1 = jax.ShapeDtypeStruct((1, *self.task.input_shape), self.task.x_train.dtype)
        hp = {k: jax.ShapeDtypeStruct((), np.dtype(self.dtype)) for k in self.hparams()}

        def init(key, x, hp):
            if self.init is not None:
                return self.init(key, x, hp)
            return model_lib.init_variables(self.model, key, x, hp)[0]

        shapes = jax.eval_shape(init, jax.ShapeDtypeStruct((2,), np.uint32), x1, hp)
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, np.dtype(self.dtype))
                            if np.issubdtype(a.dtype, np.floating) else a, shapes)

    def observable_stride(self, obs) -> int:
        """The stride of ``obs`` in log points (its ``every`` is in optimizer steps)."""
        if obs.every is None:
            return 1
        if obs.every % self.log_every:
            raise ValueError(
                f"{type(obs).__name__}.every must be a multiple of log_every="
                f"{self.log_every} (it is a stride in optimizer steps), got {obs.every}"
            )
        return obs.every // self.log_every

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
                model_lib.check_hparams(self.model, {name: v})
            elif name in self.optimizer.hparams():
                self.optimizer.check_hparams({name: v}, steps=self.steps)
            else:
                if not (is_real(v) and np.isfinite(v) and v >= 0):
                    raise ValueError(f"{name} must be a finite real >= 0, got {v!r}")
                if name == "label_noise" and takes_labels(self.task.loss) and v > 1:
                    raise ValueError(f"label_noise must be in [0, 1] for classification, got {v!r}")

    # -- static axes -------------------------------------------------------------------

    def static_fields(self) -> dict[str, str]:
        """Names that may be swept as static axes, and where they live ("spec", "model",
        "task", "optimizer"). A name that two of them have is reached as ``"model.NAME"``,
        ``"task.NAME"`` or ``"optimizer.NAME"``."""
        names = {"batch_size": "spec"}
        parts = {"model": model_lib.static_fields(self.model),
                 "task": self.task.static_fields(),
                 "optimizer": self.optimizer.static_fields()}
        for where, fields in parts.items():
            for name in fields:
                names[f"{where}.{name}"] = where
                if sum(name in f for f in parts.values()) == 1:
                    names[name] = where
        return names

    def with_static(self, name: str, value) -> "Spec":
        where = self.static_fields()[name]
        field = name.split(".", 1)[-1]
        if isinstance(value, np.generic):
            value = value.item()
        if where == "model":
            return dataclasses.replace(self, model=model_lib.with_static(self.model, field, value))
        if where == "task":
            task = self.task.with_static(field, value)
            model = self.model
            fields = model_lib.static_fields(model)
            if hasattr(model, "out_dim") and getattr(model, "out_dim") != task.out_dim \
                    and "out_dim" not in fields:  # the task fixes the model's outputs
                model = model_lib.with_static(model, "out_dim", task.out_dim)
            return dataclasses.replace(self, task=task, model=model)
        if where == "optimizer":
            return dataclasses.replace(self, optimizer=self.optimizer.with_static(field, value))
        return dataclasses.replace(self, **{field: value})

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


def check_outputs(model, task, hparams) -> None:
    """The model takes the task's inputs and gives one output vector of ``task.out_dim``
    per target position (checked abstractly on one example, before anything compiles)."""
    x1 = jax.ShapeDtypeStruct((1, *task.input_shape), task.x_train.dtype)
    hp = {k: jax.ShapeDtypeStruct((), np.dtype(task.dtype)) for k in hparams}

    def forward(key, x, hp):
        params, state = model_lib.init_variables(model, key, x, hp)
        if state is None and not getattr(model, "stochastic", False):
            return model.apply(params, x, hp)
        return model.apply(params, x, hp, state=state)

    try:
        out = jax.eval_shape(forward, jax.ShapeDtypeStruct((2,), np.uint32), x1, hp)
    except ValueError:
        raise
    except Exception as err:  # shape errors of user models come in many types
        raise ValueError(f"model {model_lib.name(model)} cannot take the task's inputs of "
                         f"shape {task.input_shape} ({task.x_train.dtype}) per example: "
                         f"{type(err).__name__}: {err}") from err
    want = (1, *task.position_shape[1:], task.out_dim)
    if tuple(out.shape) != want:
        raise ValueError(
            f"model {model_lib.name(model)} gives outputs of shape {tuple(out.shape)[1:]} per "
            f"example but the task needs {want[1:]} (one output vector of out_dim="
            f"{task.out_dim} per target position of y_train {task.y_train.shape})"
        )
