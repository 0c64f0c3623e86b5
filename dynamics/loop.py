"""The training loop of one run, as pure functions of ``(key, hparams)``.

``make_run(spec)`` returns a ``Runner`` whose ``run(key, hparams) -> (state, trajectory)``
is pure and jit/vmap-able. Its structure (DESIGN.md, "Logging"):

* ``init_state``: parameters from the run's key, the optimizer state (holding the swept
  hyperparameters, ``optax.inject_hyperparams``), and with ``center`` the outputs
  ``g(theta0, x)`` on the train and test sets;
* an outer ``lax.scan`` over log points around an inner ``lax.scan`` of ``log_every``
  optimizer steps; the observables run at the outer level only (``advance``);
* ``observe`` evaluates every observable on one state.

Keys: the run key is ``fold_in(root_key, seed)`` (``run_key``); parameters come from
``fold_in(run_key, 0)``, the minibatch order from ``data_key = fold_in(run_key, 1)`` (epoch
``e`` is the permutation drawn from ``fold_in(data_key, e)``) and the random probes of
observables at log point ``i`` from ``fold_in(fold_in(run_key, 2), i)``. Nothing depends on the other
runs of a sweep.

Divergence: a step whose loss or new parameters are not finite is rejected; the run keeps
its last finite state from then on (``diverged_at`` = that step) and its logged values
after that step are NaN, so that a frozen run never looks like a converged one.

Centering and output scale: with ``alpha = output_scale`` the trained outputs are
``alpha (g(theta, x) - g(theta0, x))`` with ``center`` and ``alpha g(theta, x)``
without; ``g`` is evaluated at ``alpha = 1`` and scaled after the subtraction, so large
``alpha`` loses no precision to cancellation.
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
from dynamics.observables import Context, evaluate


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    params0: Any
    step: jax.Array
    diverged_at: jax.Array
    g0: Any  # {"train": g(theta0, x_train), "test": ...} or None without centering
    key: jax.Array  # the run key


def _rows(a, rows):
    return a if a is None or rows is None else a[rows]


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@dataclasses.dataclass(frozen=True, eq=False)
class Runner:
    spec: Any

    # -- pieces ------------------------------------------------------------------------

    @property
    def _data(self):
        task = self.spec.task
        return {
            "train": jnp.asarray(task.x_train),
            "test": jnp.asarray(task.x_test),
            "y_test": jnp.asarray(task.y_test),
        }

    def _unit(self, hp):
        return {**hp, "output_scale": 1.0}

    def _g(self, params, x, hp):
        return self.spec.model.apply(params, x, self._unit(hp))

    def _outputs(self, params, x, g0, hp):
        g = self._g(params, x, hp)
        if g0 is not None:
            g = g - g0
        return hp["output_scale"] * g

    def _targets(self, hp):
        return self.spec.task.train_targets(hp["label_noise"]) if "label_noise" in hp else (
            jnp.asarray(self.spec.task.y_train)
        )

    def _tx(self, hp, params0):
        spec = self.spec
        mult = spec.model.lr_multipliers(params0, hp)
        if spec.scale_lr_by_output_scale:
            inv_a2 = 1.0 / hp["output_scale"] ** 2
            mult = jax.tree.map(lambda m: m * inv_a2, mult)
        roles = spec.model.roles(params0) if hasattr(spec.model, "roles") else None
        return spec.optimizer.build(hp, spec.steps, mult, roles=roles)

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
        return jax.tree.map(lambda a: None if a is None else a[idx], arrays)

    # -- the run -----------------------------------------------------------------------

    def init_params(self, key, hp):
        init = self.spec.init or self.spec.model.init
        x = jnp.asarray(self.spec.task.x_train)
        return init(jax.random.fold_in(key, 0), x, hp)

    def init_state(self, key, hp) -> TrainState:
        params = self.init_params(key, hp)
        data = self._data
        g0 = None
        if self.spec.model.center:
            g0 = {s: self._g(params, data[s], hp) for s in ("train", "test")}
        opt_state = self._tx(hp, params).init(params)
        return TrainState(
            params=params,
            opt_state=opt_state,
            params0=params,
            step=jnp.zeros((), jnp.int32),
            diverged_at=jnp.full((), -1, jnp.int32),
            g0=g0,
            key=key,
        )

    def train_step(self, state: TrainState, hp, tx, targets) -> TrainState:
        loss_fn = losses.get(self.spec.task.loss)
        g0_train = None if state.g0 is None else state.g0["train"]
        x, y, g0 = self._batch(
            state.key, state.step, (self._data["train"], targets, g0_train)
        )

        def loss_of(params):
            return loss_fn(self._outputs(params, x, g0, hp), y)

        loss, grads = jax.value_and_grad(loss_of)(state.params)
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
            step=state.step + 1,
            diverged_at=jnp.where(live & ~finite, state.step, state.diverged_at),
        )

    def observe(self, state: TrainState, hp, log_index) -> dict:
        spec = self.spec
        data = self._data
        g0 = state.g0 or {"train": None, "test": None}
        ctx = Context(
            params=state.params,
            params0=state.params0,
            hparams=hp,
            step=state.step,
            log_index=log_index,
            data={"x_train": data["train"], "y_train": self._targets(hp),
                  "x_test": data["test"], "y_test": data["y_test"]},
            outputs=lambda p, split, rows=None: self._outputs(
                p, _rows(data[split], rows), _rows(g0[split], rows), hp),
            loss=losses.get(spec.task.loss),
            classification=spec.classification,
            key=jax.random.fold_in(jax.random.fold_in(state.key, 2), log_index),
        )
        values = evaluate(spec.observables, ctx)
        live = state.diverged_at < 0
        return {
            k: jnp.where(live, v, jnp.nan) if jnp.issubdtype(v.dtype, jnp.inexact) else v
            for k, v in values.items()
        }

    def advance(self, state: TrainState, hp, log_start, n_logs: int):
        """``n_logs`` log intervals from log point ``log_start``: an outer scan over log
        points around an inner scan of ``log_every`` steps."""
        tx = self._tx(hp, state.params0)
        targets = self._targets(hp)

        def inner(s, _):
            return self.train_step(s, hp, tx, targets), None

        def outer(s, log_index):
            s, _ = jax.lax.scan(inner, s, None, length=self.spec.log_every)
            return s, self.observe(s, hp, log_index)

        indices = log_start + 1 + jnp.arange(n_logs)
        return jax.lax.scan(outer, state, indices)

    def chunk(self, key, hp, state: TrainState, log_start, n_logs: int):
        """Log intervals ``log_start + 1 .. log_start + n_logs`` of one run: the unit of work
        of a sweep's outer loop in Python (``dynamics.sweeps``), between which the carry can
        be checkpointed and progress shown.

        With ``log_start == 0`` the run starts from its initial state (``state`` is then a
        placeholder of the right shapes, e.g. zeros) and ``first`` holds its values at log
        point 0; otherwise it continues from ``state`` and ``first`` is a placeholder.
        ``log_start`` is traced but never batched, so under ``vmap`` the choice stays a
        ``lax.cond`` (one program for every chunk). Returns ``(state, first, trajectory)``.
        """

        def fresh(_):
            s = self.init_state(key, hp)
            return s, self.observe(s, hp, 0)

        def given(s):
            shapes = jax.eval_shape(lambda: self.observe(s, hp, 0))
            return s, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

        state, first = jax.lax.cond(log_start == 0, fresh, given, state)
        state, traj = self.advance(state, hp, log_start, n_logs)
        return state, first, traj

    def run(self, key, hp):
        """The whole run: ``(final state, trajectory)``, the trajectory's leaves of
        leading size ``steps // log_every + 1`` (log point 0 is the initial state)."""
        state = self.init_state(key, hp)
        first = self.observe(state, hp, 0)
        state, traj = self.advance(state, hp, 0, self.spec.n_logs)
        traj = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, traj)
        return state, traj


def make_run(spec) -> Runner:
    return Runner(spec)


def float_dtype(spec):
    """The float dtype of a run (its task's arrays, as JAX holds them)."""
    return jnp.asarray(np.asarray(spec.task.x_train)[:0]).dtype


@functools.lru_cache(maxsize=64)
def carry_shapes(spec):
    """``(shapes of a run's TrainState, shapes of its hyperparameters)``, without
    computing anything (``jax.eval_shape``)."""
    dtype = float_dtype(spec)
    hp = {k: jax.ShapeDtypeStruct((), dtype) for k in spec.hparams()}
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    return jax.eval_shape(make_run(spec).init_state, key, hp), hp
