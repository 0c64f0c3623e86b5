"""Observables: what the training loop measures at its log points.

An observable is a small frozen object in the optax manner of ``init`` / ``update``
pairs, reduced to what a measurement needs:

* ``every``: its stride in optimizer steps (``None``: every log point), a multiple of the
  spec's ``log_every``. Log point 0 (the initial state) is always measured. The loop
  evaluates it under a ``lax.cond`` on the log-point counter, which is the same for every
  run of a sweep (not batched), so its cost is paid only at its own stride; other log
  points hold NaN.
* ``mode``: ``"eval"`` (default: running statistics, no dropout) or ``"train"`` (batch
  statistics and dropout drawn from the log point's key): how the model is evaluated for
  it. The two differ only for models with batch statistics or dropout.
* ``init(ctx) -> state``: computed once per run at step 0 (e.g. the initial kernel);
  default ``()``.
* ``bind(spec) -> observable``: the observable as it runs for a spec, called when the
  ``Spec`` is built (default: itself); it may read the spec (e.g. the model's parameter
  shapes, ``Spec.param_shapes``) to fill in defaults and to refuse what cannot run.
* ``update(ctx, state) -> (values, state)``: the values at one of its log points and the
  state it carries to its next one (e.g. the previous Ritz vectors, to warm-start a
  Lanczos); the state is part of the run's carry, checkpointed with it. The default is
  ``(self(ctx), state)``, so a stateless observable only writes ``__call__(ctx) -> dict``.

Values are arrays that may have trailing dimensions; ``dims`` names them (e.g.
``{"top_eigenvalues": ("eigen_index",)}``) and ``coords()`` may give coordinate values for
them (e.g. the grid of a spectral density). Observables of one spec that name the same
dimension must give it the same coordinates.

Each class declares ``descriptions``: for every name it outputs (and every coordinate of
its own), ``(long_name, definition)``, the definition with its normalisation; a sweep
copies them into the attributes of its Dataset's variables, so results describe
themselves on disk and in plots.

The loop knows nothing about any particular observable: the NTK and Hessian observables
plug in by subclassing ``Observable``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.losses import accuracy

MODES = ("eval", "train")


class Context:
    """What an observable may look at, for one run at one log point.

    ``outputs(params, split, rows=None)`` gives the trained network's outputs on
    ``"train"`` or ``"test"`` (or on the examples ``rows``, an integer index array, of
    that split), with the output scale and centering of the training loop
    (``alpha (g(theta) - g(theta0))`` when the model is centred), in this context's
    ``mode``. ``data`` holds ``x_train``, ``y_train`` (the training targets, label noise
    included), ``x_test`` and ``y_test``; targets of a masked task are
    ``losses.Masked(values, mask)``. ``loss(outputs, targets)`` is the training loss.
    ``opt_state`` and ``optimizer`` give access to the optimizer's state (e.g. Adam's
    preconditioner), ``lr_multipliers`` to the per-parameter learning-rate multipliers
    the optimizer's updates are scaled by (``dynamics.parametrization``), and ``model`` to
    the model (its ``activations``, or its own probes). Derived quantities are cached per trace, so observables that share
    them compute them once.
    """

    FIELDS = ("params", "params0", "hparams", "step", "log_index", "data", "outputs", "loss",
              "classification", "key", "mode", "opt_state", "optimizer", "lr_multipliers",
              "model")

    def __init__(self, *, params, params0, hparams: Mapping[str, Any], step, log_index,
                 data: Mapping[str, Any], outputs: Callable, loss: Callable,
                 classification: bool, key, mode: str = "eval", opt_state=None,
                 optimizer=None, lr_multipliers=None, model=None):
        self.params = params
        self.params0 = params0
        self.hparams = hparams
        self.step = step
        self.log_index = log_index
        self.data = data
        self.outputs = outputs
        self.loss = loss
        self.classification = classification
        self.key = key
        self.mode = mode
        self.opt_state = opt_state
        self.optimizer = optimizer
        self.lr_multipliers = lr_multipliers
        self.model = model

    def fork(self) -> "Context":
        """The same inputs with an empty cache, for use inside another trace (a
        ``lax.cond`` branch), so that no cached value leaks between traces."""
        return Context(**{f: getattr(self, f) for f in self.FIELDS})

    @functools.cached_property
    def _train_forward(self):
        return jax.vjp(lambda p: self.outputs(p, "train"), self.params)

    @functools.cached_property
    def train_outputs(self):
        return self._train_forward[0]

    @functools.cached_property
    def test_outputs(self):
        return self.outputs(self.params, "test")

    @functools.cached_property
    def train_loss_and_grad(self):
        """Full-batch training loss and its gradient in the parameters (one forward pass,
        shared with ``train_outputs``)."""
        outputs, pullback = self._train_forward
        loss, d_outputs = jax.value_and_grad(self.loss)(outputs, self.data["y_train"])
        return loss, pullback(d_outputs)[0]


def global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


# The loss as dynamics.losses normalises it, for the descriptions of the loss observables.
_LOSS_DEFINITION = (
    "L = (1/P) Σ_i ℓ_i over {}; mse: ℓ_i = Σ_k (f_ik - y_ik)² (summed over outputs, no "
    "factor 1/2); cross_entropy: ℓ_i = -log softmax(f_i)_(y_i); cross_entropy_z_loss: "
    "that plus 1e-4 (log Σ_k exp f_ik)²; f the network's outputs with output scale and "
    "centering (dynamics.losses)")


@dataclasses.dataclass(frozen=True)
class Observable:
    every: int | None = None
    mode: str = dataclasses.field(default="eval", kw_only=True)
    dims: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    descriptions: ClassVar[Mapping[str, tuple[str, str]]] = {}

    def __call__(self, ctx: Context) -> dict[str, jax.Array]:
        raise NotImplementedError

    def init(self, ctx: Context) -> Any:
        """The state carried between this observable's log points, at step 0."""
        del ctx
        return ()

    def update(self, ctx: Context, state) -> tuple[dict[str, jax.Array], Any]:
        """``(values, state)`` at one of this observable's log points."""
        return self(ctx), state

    def applies_to(self, classification: bool) -> bool:
        del classification
        return True

    def bind(self, spec) -> "Observable":
        """This observable as it runs for ``spec`` (called when the ``Spec`` is built,
        before anything compiles; e.g. the default blocks of a per-block curvature are the
        model's layers). Checks against the spec raise ``ValueError`` here."""
        del spec
        return self

    def coords(self) -> dict[str, Any]:
        """Coordinate values of the trailing dimensions named in ``dims`` (optional)."""
        return {}


@dataclasses.dataclass(frozen=True)
class Loss(Observable):
    """``train_loss`` (full training set, training targets with their label noise) and
    ``test_loss``, in the normalisation of ``dynamics.losses``."""

    descriptions: ClassVar = {
        "train_loss": ("training loss", _LOSS_DEFINITION.format(
            "the P examples of the full training set, with their label noise")),
        "test_loss": ("test loss", _LOSS_DEFINITION.format("the P examples of the test set")),
    }

    def __call__(self, ctx):
        return {
            "train_loss": ctx.train_loss_and_grad[0],
            "test_loss": ctx.loss(ctx.test_outputs, ctx.data["y_test"]),
        }


@dataclasses.dataclass(frozen=True)
class TestLoss(Observable):
    """``test_loss`` alone: for a large or streamed training set, whose full-set loss (and
    gradient, ``Loss``) at every log point would cost more than the training itself."""

    descriptions: ClassVar = {"test_loss": Loss.descriptions["test_loss"]}

    def __call__(self, ctx):
        return {"test_loss": ctx.loss(ctx.test_outputs, ctx.data["y_test"])}


@dataclasses.dataclass(frozen=True)
class Accuracy(Observable):
    """``train_accuracy`` and ``test_accuracy`` (classification tasks only)."""

    descriptions: ClassVar = {
        f"{split}_accuracy": (f"{split} accuracy", f"fraction of the {split} examples whose "
                              "arg-max output is their label (the arg-max of the target for "
                              "one-hot targets)")
        for split in ("train", "test")
    }

    def applies_to(self, classification):
        return classification

    def __call__(self, ctx):
        return {
            "train_accuracy": accuracy(ctx.train_outputs, ctx.data["y_train"]),
            "test_accuracy": accuracy(ctx.test_outputs, ctx.data["y_test"]),
        }


@dataclasses.dataclass(frozen=True)
class ParamNorm(Observable):
    """``param_norm = ||theta||_2`` over all parameters."""

    descriptions: ClassVar = {
        "param_norm": ("parameter norm", "||θ|| = sqrt(Σ θ_j²) over all parameters "
                       "(Frobenius norm of every weight and bias together)"),
    }

    def __call__(self, ctx):
        return {"param_norm": global_norm(ctx.params)}


@dataclasses.dataclass(frozen=True)
class WeightChange(Observable):
    """``relative_weight_change = ||theta - theta0|| / ||theta0||`` (Frobenius, over all
    parameters); in the lazy regime it is ``O(1/alpha)`` (Chizat, Oyallon & Bach 2019,
    Thm 2.3), and in the NTK parametrization it falls with width (``O(1/sqrt N)`` for the
    first layer, ``O(1/N)`` for ``N x N`` hidden matrices; see
    ``dynamics.parametrization``)."""

    descriptions: ClassVar = {
        "relative_weight_change": ("relative weight change", "||θ - θ0|| / ||θ0|| (Frobenius "
                                   "norm over all parameters; θ0 the initial parameters)"),
    }

    def __call__(self, ctx):
        delta = jax.tree.map(jnp.subtract, ctx.params, ctx.params0)
        return {"relative_weight_change": global_norm(delta) / global_norm(ctx.params0)}


@dataclasses.dataclass(frozen=True)
class GradNorm(Observable):
    """``grad_norm = ||grad_theta L_train||_2`` of the full-batch training loss."""

    descriptions: ClassVar = {
        "grad_norm": ("gradient norm", "||∇_θ L_train|| (Frobenius norm over all parameters) "
                      "of the full-batch training loss train_loss"),
    }

    def __call__(self, ctx):
        return {"grad_norm": global_norm(ctx.train_loss_and_grad[1])}


DEFAULT = (Loss(), Accuracy(), ParamNorm(), WeightChange(), GradNorm())

REGISTRY: dict[str, Observable] = {
    "loss": Loss(),
    "test_loss": TestLoss(),
    "accuracy": Accuracy(),
    "param_norm": ParamNorm(),
    "relative_weight_change": WeightChange(),
    "grad_norm": GradNorm(),
}


def resolve(observables) -> tuple[Observable, ...]:
    """Observable objects from a mix of objects, registry names and ``"default"``."""
    out: list[Observable] = []
    for o in observables:
        if isinstance(o, Observable):
            items = [o]
        elif o == "default":
            items = list(DEFAULT)
        elif isinstance(o, str) and o in REGISTRY:
            items = [REGISTRY[o]]
        else:
            raise ValueError(
                f"observables must be Observable objects or names in "
                f"{['default', *REGISTRY]}, got {o!r}"
            )
        for item in items:
            every = item.every
            if every is not None and (not isinstance(every, int) or isinstance(every, bool)
                                      or every < 1):
                raise ValueError(f"{type(item).__name__}.every must be None or an int >= 1 "
                                 f"(a stride in optimizer steps), got {every!r}")
            if item.mode not in MODES:
                raise ValueError(f"{type(item).__name__}.mode must be one of {list(MODES)}, "
                                 f"got {item.mode!r}")
            if item not in out:
                out.append(item)
    return tuple(out)


def bind(observables, spec) -> tuple[Observable, ...]:
    """Every observable bound to ``spec`` (``Observable.bind``), and a ``ValueError`` when
    two of them give the same dimension different coordinates (one Dataset holds one
    coordinate per dimension)."""
    bound = tuple(obs.bind(spec) for obs in observables)
    seen: dict[str, tuple[Observable, Any]] = {}
    for obs in bound:
        for dim, values in obs.coords().items():
            if dim not in seen:
                seen[dim] = (obs, values)
                continue
            other, before = seen[dim]
            if not (np.shape(before) == np.shape(values)
                    and np.array_equal(np.asarray(before), np.asarray(values))):
                raise ValueError(
                    f"observables {other!r} and {obs!r} both declare the dimension {dim!r} "
                    f"with different coordinates ({np.asarray(before).tolist()} and "
                    f"{np.asarray(values).tolist()}); give them the same ones or use separate "
                    "specs")
    return bound


def _applies(obs, contexts) -> bool:
    return obs.applies_to(contexts["eval"].classification)


def init_states(observables, contexts) -> tuple:
    """Every observable's ``init`` state at step 0 (``()`` for those that do not apply)."""
    return tuple(obs.init(contexts[obs.mode]) if _applies(obs, contexts) else ()
                 for obs in observables)


def evaluate(observables, states, contexts, strides) -> tuple[dict[str, jax.Array], tuple]:
    """All observables at one log point: ``(values, states)``. An observable whose stride
    (in log points) does not divide the (unbatched) log-point counter is skipped under a
    ``lax.cond``: NaN values, its state unchanged."""
    values: dict[str, jax.Array] = {}
    new_states = []
    for obs, state, stride in zip(observables, states, strides):
        if not _applies(obs, contexts):
            new_states.append(state)
            continue
        ctx = contexts[obs.mode]
        if stride == 1:
            out, state = obs.update(ctx, state)
        else:
            shapes = jax.eval_shape(lambda s: obs.update(ctx.fork(), s)[0], state)
            skipped = jax.tree.map(lambda a: jnp.full(a.shape, jnp.nan, a.dtype), shapes)
            out, state = jax.lax.cond(
                contexts["eval"].log_index % stride == 0,
                lambda s: obs.update(ctx.fork(), s),
                lambda s: (skipped, s),
                state,
            )
        new_states.append(state)
        for name, value in out.items():
            if name in values:
                raise ValueError(f"two observables both produce {name!r}")
            values[name] = value
    return values, tuple(new_states)
