"""Where a sweep becomes a vmap: ``sweep``, ``run`` and ``init_params``.

``sweep(spec, seed=range(8), lr=[...], width=[...])`` goes one way through three stages:

1. **plan** (``dynamics.planning``): the keywords are sorted into seeds, value axes (float
   hyperparameters, traced: one compile) and static axes (shapes: one part, and one
   compile, per value); every part is validated and its strategy, run-chunks and chunks of
   log points are fixed before anything runs;
2. **execute** (``dynamics.execution``): each part's runs are initialised once on the
   devices, then advanced chunk by chunk, with a progress bar and checkpoints;
3. **assemble** (``dynamics.assembly``): one ``xarray.Dataset`` with the swept axes as
   dimensions in the order given, then ``step``. A scalar keyword (``lr=0.1``) fixes a
   value without adding a dimension.

A one-line warning says how many runs diverged (``diverged_at`` tells which and when).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import json
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import tqdm.auto as tqdm

from dynamics import assembly, execution, planning
from dynamics.assembly import versions  # noqa: F401  (public)
from dynamics.checkpoint import SweepCheckpoint, digest
from dynamics.planning import Plan, choose_strategy, make_plan  # noqa: F401  (public)
from dynamics.programs import STRATEGIES  # noqa: F401  (public)
from dynamics.spec import Spec

# A sweep expected to run for less than this many seconds shows no progress bar.
PROGRESS_DELAY = 3.0


class DivergenceWarning(UserWarning):
    """Some runs of a sweep diverged (their ``diverged_at`` is the step)."""


def run_key(root_seed: int, seed: int) -> jax.Array:
    """The key of run ``seed``: ``fold_in(PRNGKey(root_seed), seed)``."""
    return jax.random.fold_in(jax.random.PRNGKey(root_seed), seed)


@functools.partial(jax.jit, static_argnums=0)
def _run_keys(root_seed: int, seeds):
    return jax.vmap(lambda seed: run_key(root_seed, seed))(seeds)


def run_keys(root_seed: int, seeds) -> np.ndarray:
    return np.asarray(_run_keys(root_seed, np.asarray(seeds, np.uint32)))


def _fingerprint(spec: Spec, axes: dict) -> dict:
    """What must be equal for a checkpoint to be resumed (``dynamics.checkpoint``)."""
    return {
        "config": json.loads(spec.config_json()),
        "task_data": digest(*spec.task.arrays().values()),
        "axes": {k: np.asarray(v).tolist() for k, v in axes.items()},
        "strategy": spec.strategy,
        "chunk_size": spec.chunk_size,
    }


def _precision(spec: Spec):
    """float64 runs under ``jax.enable_x64`` for the duration of the call only."""
    return jax.enable_x64(spec.dtype == "float64")


def _hparam_columns(spec: Spec, flat: dict, value_names, n_runs: int) -> dict:
    dtype = np.dtype(spec.dtype)
    return {k: np.asarray(flat[k] if k in value_names else np.full(n_runs, v), dtype)
            for k, v in spec.hparams().items()}


_PROGRESS = contextvars.ContextVar("traindyn_progress", default=False)


@contextlib.contextmanager
def show_progress(on: bool = True):
    """Within this context, sweeps called with ``progress=None`` show their progress bar
    from the start (``traindyn run`` uses it for the sweeps inside an experiment)."""
    token = _PROGRESS.set(on)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def sweep(spec: Spec, *, return_state: bool = False, checkpoint_dir=None,
          max_runs_per_chunk: int | None = None, memory_budget: float | None = None,
          logs_per_chunk: int | None = None, progress: bool | None = None, **axes):
    """Run every combination of the given axes; see the module doc.

    * ``checkpoint_dir``: write the carry and the trajectory so far after every chunk of
      log points (``dynamics.checkpoint``); called again with the same spec, axes and
      directory, the sweep resumes from the last complete chunk and ends bitwise identical
      to an uninterrupted one. A directory holding another sweep's checkpoint is refused.
    * ``max_runs_per_chunk`` / ``memory_budget`` (bytes): runs are executed in run-chunks
      that fit the device memory, as the compiled program reports it
      (``dynamics.memory``); the first caps the runs per chunk, the second sets the budget.
    * ``logs_per_chunk``: log points per chunk of the outer loop (default: about 20 chunks).
    * ``progress``: a tqdm bar of run-steps per second; by default it appears once the
      sweep has run for a few seconds, at once inside ``show_progress()`` (``False``:
      never).

    With ``return_state=True`` returns ``(dataset, states)``: ``states`` maps each
    combination of static-axis values (a tuple, ``()`` without static axes) to the final
    ``TrainState`` of its runs, leaves of leading shape the value axes (seed first, then
    the hyperparameters in the order given).
    """
    if not isinstance(spec, Spec):
        raise ValueError(f"spec must be a dynamics.Spec, got {type(spec).__name__}")
    with _precision(spec):
        return _sweep(spec, return_state, checkpoint_dir, max_runs_per_chunk, memory_budget,
                      logs_per_chunk, progress, axes)


def _sweep(spec, return_state, checkpoint_dir, max_runs_per_chunk, memory_budget,
           logs_per_chunk, progress, axes):
    # 1. plan: every part validated and planned before anything runs.
    ax = planning.classify(spec, axes)
    static_names = list(ax.statics)
    combos = list(itertools.product(*ax.statics.values()))
    specs = []
    for combo in combos:
        s = spec
        for name, value in zip(static_names, combo):
            s = s.with_static(name, value)
        specs.append(s)
    grid_names = ["seed"] + list(ax.values)
    grid_values = [ax.seeds] + list(ax.values.values())
    mesh = np.meshgrid(*grid_values, indexing="ij")
    flat = {n: m.reshape(-1) for n, m in zip(grid_names, mesh)}
    n_runs = flat["seed"].size
    checkpoint = stored = None
    if checkpoint_dir is not None:
        directory = pathlib.Path(checkpoint_dir)
        if jax.process_count() > 1:
            directory = directory / f"host-{jax.process_index()}"
        checkpoint = SweepCheckpoint(directory, _fingerprint(spec, axes))
        stored = checkpoint.stored_layout()
    if stored is not None:  # resuming: the chunks are cut as before
        plans = [Plan(**p) for p in stored["plans"]]
    else:
        plans = [make_plan(s, n_runs, max_runs_per_chunk=max_runs_per_chunk,
                           memory_budget=memory_budget, logs_per_chunk=logs_per_chunk)
                 for s in specs]
    if checkpoint is not None:
        layout = checkpoint.open({"plans": [p.as_dict() for p in plans]})
        plans = [Plan(**p) for p in layout["plans"]]
    keys = run_keys(spec.root_seed, flat["seed"])

    # 2. execute.
    if progress is None and _PROGRESS.get():
        progress = True
    bar = tqdm.tqdm(total=n_runs * spec.steps * len(specs), unit="run-step", unit_scale=True,
                    disable=progress is False, delay=0 if progress else PROGRESS_DELAY,
                    desc="sweep")
    parts, states = [], {}
    try:
        for i, (combo, s, p) in enumerate(zip(combos, specs, plans)):
            hp = _hparam_columns(s, flat, ax.values, n_runs)
            state, traj = execution.execute(s, p, keys, hp, checkpoint=checkpoint, part=i,
                                            bar=bar)
            ds = assembly.part_dataset(s, grid_names, grid_values, traj, state.diverged_at)
            for name, value in zip(static_names, combo):
                ds = ds.expand_dims({name: [value]})
            parts.append(ds)
            if return_state:
                grid_shape = tuple(len(v) for v in grid_values)
                states[tuple(combo)] = jax.tree.map(
                    lambda a: jnp.asarray(a.reshape(grid_shape + a.shape[1:])), state
                )
    finally:
        bar.close()

    # 3. assemble.
    ds = assembly.combine(parts, ax.statics, ax.dims, grid_names)
    ds.attrs = assembly.attrs(spec, ax.dims, plans)
    assembly.describe(ds, spec)
    diverged = int((ds.diverged_at.values >= 0).sum())
    if diverged:
        warnings.warn(f"{diverged} of {ds.diverged_at.size} runs diverged; see diverged_at",
                      DivergenceWarning, stacklevel=3)
    return (ds, states) if return_state else ds


def run(spec: Spec, *, seed: int = 0, return_state: bool = False, **hparams):
    """One run: ``sweep`` with scalar values (no swept dimension)."""
    for name, value in hparams.items():
        if np.ndim(value) != 0:
            raise ValueError(f"run takes one value per hyperparameter; {name}={value!r} "
                             "is a sequence: use dynamics.sweep")
    if np.ndim(seed) != 0:
        raise ValueError(f"run takes one seed, got {seed!r}: use dynamics.sweep")
    return sweep(spec, seed=seed, return_state=return_state, **hparams)


def init_params(spec: Spec, seed: int = 0, **hparams):
    """The initial parameters of run ``seed``, as the training loop draws them: the very
    program a run starts with (``Runner.init_variables``), so they are bitwise the
    sweep's."""
    from dynamics import programs

    with _precision(spec):
        values = {**spec.hparams(), **hparams}
        hp = {k: jnp.asarray(v, spec.dtype) for k, v in values.items()}
        variables = programs.functions(spec, "loop", spec.n_logs)[0]
        return variables(run_key(spec.root_seed, seed), hp, spec.task.arrays())[0]
