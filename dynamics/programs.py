"""The compiled programs of a sweep, one per static signature.

A sweep part runs three programs, built from the pieces of ``dynamics.loop.Runner``:

* ``variables(keys, hparams, data) -> (params, model state)``: the initial draws, a
  program of their own so that they are the same alone and in any batch;
* ``start(keys, hparams, data, params, model state) -> (state, values at log point 0)``;
* ``advance(hparams, state, log_start, data) -> (state, trajectory)`` over one chunk of log
  points (``log_start`` is traced and never batched, so every chunk runs the same program).

Strategies (``Spec.strategy``): ``"vmap"`` batches the runs (``jax.vmap``; the runs axis is
the one sharded over devices); ``"map"`` runs them one after another inside one program
(``lax.map``); ``"chunked"`` vmaps chunks of ``chunk_size`` runs inside a ``lax.map``;
``"loop"`` compiles the single run and calls it once per run from Python.

Programs depend on the task only through its signature (loss, classes, dtype, the shapes
and dtypes of its arrays): the data are an argument, so two tasks of the same shapes share
every compiled program (and the persistent compilation cache).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.loop import carry_shapes, data_shapes, make_run

STRATEGIES = ("vmap", "map", "chunked", "loop")


def task_signature(task) -> tuple:
    arrays = task.arrays()
    return (task.loss, task.n_classes, task.dtype, task.n_train,
            tuple((k, np.shape(v), str(np.asarray(v).dtype)) for k, v in sorted(arrays.items())))


class SpecKey:
    """A spec compared by everything but its task's data: equal keys share programs."""

    def __init__(self, spec):
        self.spec = spec
        fields = tuple((f.name, getattr(spec, f.name)) for f in dataclasses.fields(spec)
                       if f.name != "task")
        self._key = (fields, task_signature(spec.task))

    def __eq__(self, other):
        return isinstance(other, SpecKey) and self._key == other._key

    def __hash__(self):
        return hash(self._key)


def _batched(spec, strategy: str, logs_per_chunk: int):
    """``(variables, start, advance)`` of ``strategy`` as plain (not yet jitted) functions:
    the initial draws, the rest of the initial state, one chunk of log points."""
    runner = make_run(spec)

    def variables_one(run_key, hp, data):
        return runner.init_variables(run_key, hp, data)

    def start_one(run_key, hp, data, params, model_state):
        return runner.start(run_key, hp, data, params, model_state)

    def advance_one(hp, state, log_start, data):
        return runner.advance(state, hp, log_start, logs_per_chunk, data)

    if strategy == "loop":
        return variables_one, start_one, advance_one
    if strategy == "vmap":
        return (jax.vmap(variables_one, in_axes=(0, 0, None)),
                jax.vmap(start_one, in_axes=(0, 0, None, 0, 0)),
                jax.vmap(advance_one, in_axes=(0, 0, None, None)))
    batch = None if strategy == "map" else spec.chunk_size

    def mapped(fn, shared):
        """``fn`` over the leading (runs) axis of its per-run arguments; ``shared`` gives,
        per argument, whether it is the same for every run."""
        def apply(*args):
            per_run = tuple(a for a, s in zip(args, shared) if not s)

            def one(xs):
                it = iter(xs)
                return fn(*(a if s else next(it) for a, s in zip(args, shared)))

            return jax.lax.map(one, per_run, batch_size=batch)

        return apply

    return (mapped(variables_one, (False, False, True)),
            mapped(start_one, (False, False, True, False, False)),
            mapped(advance_one, (False, False, True, True)))


@functools.lru_cache(maxsize=64)
def _functions(key: SpecKey, strategy: str, logs_per_chunk: int):
    return tuple(jax.jit(f) for f in _batched(key.spec, strategy, logs_per_chunk))


def functions(spec, strategy: str, logs_per_chunk: int):
    """``(variables, start, advance)``: the jitted programs of ``strategy`` (module doc)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    return _functions(SpecKey(spec), strategy, logs_per_chunk)


def _abstract(shapes, size, sharding):
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((size, *a.shape), a.dtype, sharding=sharding), shapes)


@functools.lru_cache(maxsize=64)
def _compiled(key: SpecKey, strategy: str, logs_per_chunk: int, size: int, mesh):
    from dynamics import devices

    spec = key.spec
    runs = devices.runs_sharding(mesh) if mesh is not None else None
    replicated = devices.replicated_sharding(mesh) if mesh is not None else None
    # every output has the runs axis first: keep it sharded like the inputs
    variables, start, advance = (jax.jit(f, out_shardings=runs)
                                 for f in _batched(spec, strategy, logs_per_chunk))
    state, hp = carry_shapes(spec)
    data = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated),
                        data_shapes(spec))
    keys = jax.ShapeDtypeStruct((size, 2), jnp.uint32, sharding=runs)
    log_start = jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)
    hp_abstract = _abstract(hp, size, runs)
    state_abstract = _abstract(state, size, runs)
    return (variables.lower(keys, hp_abstract, data).compile(),
            start.lower(keys, hp_abstract, data, state_abstract.params0,
                        state_abstract.model_state).compile(),
            advance.lower(hp_abstract, state_abstract, log_start, data).compile())


def compiled(spec, strategy: str, logs_per_chunk: int, size: int, mesh=None):
    """``(variables, start, advance)`` compiled for a batch of ``size`` runs (sharded over
    ``mesh`` when given): the executables a batched sweep part runs, whose memory analysis
    the planner reads (``dynamics.memory``)."""
    if strategy == "loop":
        raise ValueError("the loop strategy compiles single runs: use functions()")
    return _compiled(SpecKey(spec), strategy, logs_per_chunk, size, mesh)


def _flops(fn, *args) -> float:
    cost = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX returns one dict per device
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


@functools.lru_cache(maxsize=64)
def _run_flops(key: SpecKey) -> tuple[float, float]:
    spec = key.spec
    runner = make_run(spec)
    state, hp = carry_shapes(spec)

    def step(s, h, data):
        tx = runner._tx(h, s.params0)
        return runner.train_step(s, h, tx, data, runner._targets(h, data))

    def observe(s, h, data):
        return runner.observe(s, h, 0, data)

    data = data_shapes(spec)
    return _flops(step, state, hp, data), _flops(observe, state, hp, data)


def step_flops(spec) -> float:
    """Floating-point operations of one optimizer step of one run, from XLA's cost
    analysis of the lowered step (any model; no compile)."""
    return _run_flops(SpecKey(spec))[0]


def run_flops(spec) -> float:
    """Floating-point operations of one whole run: its steps and its log points (XLA's
    count of one step and of one log point's observables, each observable at its every
    log point; a strided one is counted at every log point, an upper bound). XLA counts a
    loop's body once, so the whole run's program cannot be asked directly."""
    step, observe = _run_flops(SpecKey(spec))
    return spec.steps * step + (spec.n_logs + 1) * observe


def clear_caches() -> None:
    """Drop every compiled program this package and JAX hold in memory (the planner's
    and the loop's caches, and JAX's own), releasing their code: for long processes
    that build many different specs (a test suite, a notebook sweeping architectures)."""
    from dynamics import loop

    for cached in (_functions, _compiled, _run_flops, loop.carry_shapes):
        cached.cache_clear()
    jax.clear_caches()
