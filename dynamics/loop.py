"""The training loop of one run, as pure functions of ``(key, hparams, data)``.

``make_run(spec)`` returns a ``Runner``; its pieces are the only way through a run, for a
single run and for every run of a sweep alike (``dynamics.execution`` vmaps them):

* ``init(key, hp, data) -> (state, values at log point 0)``: parameters (and a stateful
  model's state, e.g. batch statistics) from the run's key (``init_variables``), then
  (``start``) the optimizer state (holding the swept hyperparameters,
  ``optax.inject_hyperparams``), with ``center`` the outputs ``g(theta0, x)`` on both
  splits, and every observable's state (its ``init``);
* ``advance(state, hp, log_start, n_logs, data) -> (state, trajectory)``: an outer
  ``lax.scan`` over log points around an inner ``lax.scan`` of ``log_every`` optimizer steps
  (DESIGN.md, "Logging"); the observables run at the outer level only, each at its own
  stride, and carry their state from one of their log points to the next;
* ``run(key, hp, data)``: ``init`` then ``advance`` over the whole run.

``data`` is the task's ``arrays()`` (inputs, targets, masks, label-noise draws): an
argument of every compiled program, never a constant baked into it, so a program compiled
for one dataset serves any other of the same shapes.

Keys: the run key is ``fold_in(root_key, seed)`` (``dynamics.sweeps.run_key``); parameters
come from ``fold_in(run_key, 0)``, the minibatch order from ``data_key = fold_in(run_key,
1)`` (epoch ``e`` is the permutation drawn from ``fold_in(data_key, e)``), the random probes
of observables at log point ``i`` from ``fold_in(fold_in(run_key, 2), i)`` and the dropout
of step ``t`` from ``fold_in(fold_in(run_key, 3), t)`` and its gradient noise (an optimizer
with ``gradient_noise``) from ``fold_in(fold_in(run_key, 4), t)``. Nothing depends on the
other runs of a sweep.

Divergence: a step whose loss or new parameters are not finite is rejected; the run keeps
its last finite state from then on (``diverged_at`` = that step) and its logged values
after that step are NaN, so that a frozen run never looks like a converged one.

Output scale and centering are applied in one place, ``dynamics.models.base.outputs``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dynamics import losses
from dynamics.models import base as model_lib
from dynamics.observables import Context, evaluate, init_states
from dynamics.optimizers import gradient_noise
from dynamics.tasks.task import clean_targets, train_targets

SPLITS = ("train", "test")


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    params0: Any
    model_state: Any  # non-parameter state of the model (batch statistics) or None
    obs_state: Any  # one entry per observable: the state it carries between log points
    step: jax.Array
    diverged_at: jax.Array
    g0: Any  # {"train": g(theta0, x_train), "test": ...} or None without centering
    key: jax.Array  # the run key


def _rows(a, rows):
    return a if a is None or rows is None else jax.tree.map(lambda v: v[rows], a)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _cast_floats(tree, dtype):
    """Floating leaves in ``dtype`` (a float64 spec gets float64 parameters whatever the
    model's own parameter dtype)."""
    def cast(a):
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return jax.tree.map(cast, tree)


def dropout_key(run_key, step):
    return jax.random.fold_in(jax.random.fold_in(run_key, 3), step)


@dataclasses.dataclass(frozen=True, eq=False)
class Runner:
    spec: Any

    # -- the model's outputs ------------------------------------------------------------

    @property
    def model(self):
        return self.spec.model

    @property
    def stochastic(self) -> bool:
        """Whether the model's training mode differs from evaluation (dropout, batch
        statistics, a mode argument): it then gets a key at every step."""
        return bool(getattr(self.model, "stochastic", False))

    def _g(self, params, x, hp, model_state, mode="eval", key=None):
        """The model's raw outputs ``g`` in ``mode`` ("eval": running statistics, no
        dropout; "train": batch statistics and dropout from ``key``)."""
        if not self.stochastic and model_state is None:
            return self.model.apply(params, x, hp)
        return self.model.apply(params, x, hp, state=model_state, train=mode == "train",
                                key=key)

    def outputs(self, params, x, g0, hp, model_state=None, mode="eval", key=None):
        """The trained outputs ``alpha (g - g0)`` (``dynamics.models.base.outputs``)."""
        return model_lib.outputs(self._g(params, x, hp, model_state, mode, key), g0, hp)

    def lr_multipliers(self, hp, params0):
        """The per-parameter learning-rate multipliers: the model's for the optimizer's
        family, over ``output_scale^2`` with ``scale_lr_by_output_scale``."""
        spec = self.spec
        mult = spec.model.lr_multipliers(params0, hp, family=spec.optimizer.family or "sgd")
        if spec.scale_lr_by_output_scale:
            inv_a2 = 1.0 / hp["output_scale"] ** 2
            mult = jax.tree.map(lambda m: m * inv_a2, mult)
        return mult

    def _tx(self, hp, params0):
        spec = self.spec
        return spec.optimizer.build(hp, spec.steps, self.lr_multipliers(hp, params0),
                                    roles=model_lib.roles(spec.model, params0))

    def _targets(self, hp, data):
        return train_targets(data, hp.get("label_noise", 0.0), self.spec.task.loss)

    def _batch(self, key, step, arrays):
        """Rows of ``arrays`` used by optimizer step ``step`` of the run with key ``key``."""
        b = self.spec.batch_size
        if b is None:
            return arrays
        data_key = jax.random.fold_in(key, 1)
        n = self.spec.task.n_train
        per_epoch = n // b
        perm = jax.random.permutation(jax.random.fold_in(data_key, step // per_epoch), n)
        idx = jax.lax.dynamic_slice(perm, ((step % per_epoch) * b,), (b,))
        return _rows(arrays, idx)

    # -- the run -----------------------------------------------------------------------

    def init_variables(self, key, hp, data):
        """``(params, model_state)`` of run ``key``, in the spec's dtype."""
        init = self.spec.init
        x = jnp.asarray(data["x_train"])
        if init is not None:
            params, model_state = init(jax.random.fold_in(key, 0), x, hp), None
        else:
            params, model_state = model_lib.init_variables(
                self.model, jax.random.fold_in(key, 0), x, hp)
        dtype = jnp.dtype(self.spec.dtype)
        return _cast_floats(params, dtype), _cast_floats(model_state, dtype)

    def init_params(self, key, hp, data):
        return self.init_variables(key, hp, data)[0]

    def init(self, key, hp, data):
        """``(state at step 0, observables' values at log point 0)``: ``start`` from
        ``init_variables``. (The sweeps compile the two separately, so that the initial
        draws are the same program alone and in any batch: fused with the rest, XLA may
        round an initializer's last bit differently.)"""
        return self.start(key, hp, data, *self.init_variables(key, hp, data))

    def start(self, key, hp, data, params, model_state):
        """The state at step 0 from the initial variables, and the values at log point 0."""
        g0 = None
        if model_lib.centred(self.model):
            g0 = {s: self._g(params, data[f"x_{s}"], hp, model_state) for s in SPLITS}
        state = TrainState(
            params=params,
            opt_state=self._tx(hp, params).init(params),
            params0=params,
            model_state=model_state,
            obs_state=(),
            step=jnp.zeros((), jnp.int32),
            diverged_at=jnp.full((), -1, jnp.int32),
            g0=g0,
            key=key,
        )
        obs_state = init_states(self.spec.observables, self._contexts(state, hp, 0, data))
        values, obs_state = self.observe(state._replace(obs_state=obs_state), hp, 0, data)
        return state._replace(obs_state=obs_state), values

    def train_step(self, state: TrainState, hp, tx, data, targets) -> TrainState:
        loss_fn = losses.get(self.spec.task.loss)
        g0_train = None if state.g0 is None else state.g0["train"]
        x, y, g0 = self._batch(state.key, state.step, (data["x_train"], targets, g0_train))
        key = dropout_key(state.key, state.step) if self.stochastic else None

        def loss_of(params):
            if self.stochastic or state.model_state is not None:
                g, model_state = self.model.apply_train(params, x, hp, state=state.model_state,
                                                        key=key)
            else:
                g, model_state = self.model.apply(params, x, hp), None
            return loss_fn(model_lib.outputs(g, g0, hp), y), model_state

        (loss, model_state), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        if self.spec.optimizer.gradient_noise is not None:
            grads = gradient_noise.add_gradient_noise(
                grads, hp["gradient_noise"], gradient_noise.noise_key(state.key, state.step))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & _all_finite(params)
        live = state.diverged_at < 0
        accept = finite & live

        def pick(new, old):
            return jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)

        return state._replace(
            params=pick(params, state.params),
            opt_state=pick(opt_state, state.opt_state),
            model_state=pick(model_state, state.model_state),
            step=state.step + 1,
            diverged_at=jnp.where(live & ~finite, state.step, state.diverged_at),
        )

    def _contexts(self, state: TrainState, hp, log_index, data) -> dict[str, Context]:
        """One ``Context`` per evaluation mode ("eval", "train"), built lazily."""
        spec = self.spec
        g0 = state.g0 or {"train": None, "test": None}
        targets = {"x_train": data["x_train"], "y_train": self._targets(hp, data),
                   "x_test": data["x_test"], "y_test": clean_targets(data, "test")}
        key = jax.random.fold_in(jax.random.fold_in(state.key, 2), log_index)

        def make(mode):
            def outputs(p, split, rows=None):
                return self.outputs(p, _rows(data[f"x_{split}"], rows), _rows(g0[split], rows),
                                    hp, state.model_state, mode,
                                    dropout_key(key, 1) if mode == "train" else None)

            return Context(
                params=state.params, params0=state.params0, hparams=hp, step=state.step,
                log_index=log_index, data=targets, outputs=outputs,
                loss=losses.get(spec.task.loss), classification=spec.classification,
                key=key, mode=mode, opt_state=state.opt_state, optimizer=spec.optimizer,
                lr_multipliers=self.lr_multipliers(hp, state.params0), model=spec.model,
            )

        return _LazyContexts(make)

    def observe(self, state: TrainState, hp, log_index, data):
        """``(values, observables' states)`` at log point ``log_index``."""
        values, obs_state = evaluate(self.spec.observables, state.obs_state,
                                     self._contexts(state, hp, log_index, data),
                                     self.strides)
        live = state.diverged_at < 0
        values = {
            k: jnp.where(live, v, jnp.nan) if jnp.issubdtype(v.dtype, jnp.inexact) else v
            for k, v in values.items()
        }
        return values, obs_state

    @property
    def strides(self) -> tuple[int, ...]:
        """Each observable's stride in log points."""
        return tuple(self.spec.observable_stride(o) for o in self.spec.observables)

    def advance(self, state: TrainState, hp, log_start, n_logs: int, data):
        """``n_logs`` log intervals from log point ``log_start``: an outer scan over log
        points around an inner scan of ``log_every`` steps."""
        tx = self._tx(hp, state.params0)
        targets = self._targets(hp, data)

        def inner(s, _):
            return self.train_step(s, hp, tx, data, targets), None

        def outer(s, log_index):
            s, _ = jax.lax.scan(inner, s, None, length=self.spec.log_every)
            values, obs_state = self.observe(s, hp, log_index, data)
            return s._replace(obs_state=obs_state), values

        indices = log_start + 1 + jnp.arange(n_logs)
        return jax.lax.scan(outer, state, indices)

    def run(self, key, hp, data):
        """The whole run: ``(final state, trajectory)``, the trajectory's leaves of
        leading size ``steps // log_every + 1`` (log point 0 is the initial state)."""
        state, first = self.init(key, hp, data)
        state, traj = self.advance(state, hp, 0, self.spec.n_logs, data)
        return state, jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, traj)


class _LazyContexts(dict):
    """``{mode: Context}`` built on first use (most sweeps only evaluate)."""

    def __init__(self, make):
        super().__init__()
        self._make = make

    def __missing__(self, mode):
        self[mode] = ctx = self._make(mode)
        return ctx


def make_run(spec) -> Runner:
    return Runner(spec)


def data_shapes(spec) -> dict:
    """``ShapeDtypeStruct``s of the task's arrays (a program's data argument)."""
    return {k: jax.ShapeDtypeStruct(np.shape(v), jnp.asarray(np.asarray(v)[:0]).dtype)
            for k, v in spec.task.arrays().items()}


@functools.lru_cache(maxsize=64)
def carry_shapes(spec):
    """``(shapes of a run's TrainState, shapes of its hyperparameters)``, without
    computing anything (``jax.eval_shape``)."""
    dtype = jnp.dtype(spec.dtype)
    hp = {k: jax.ShapeDtypeStruct((), dtype) for k in spec.hparams()}
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    state, _ = jax.eval_shape(make_run(spec).init, key, hp, data_shapes(spec))
    return state, hp
