"""Where a sweep becomes a vmap: ``run`` and ``sweep``.

``sweep(spec, seed=range(8), lr=[...], width=[...])`` classifies each keyword:

* ``seed``: integers; run key ``fold_in(PRNGKey(root_seed), seed)``;
* a *value axis*: a float hyperparameter of the model, optimizer or task (``lr``,
  ``momentum``, ``output_scale``, ``gamma0``, ``label_noise``, ...): every combination of
  the value axes is one run, and all runs go through one compiled program;
* a *static axis*: anything that changes shapes or the program (``width``, ``depth``,
  ``activation``, ``parametrization``, ``batch_size``, ...): one compile per value, the
  results concatenated.

The result is an ``xarray.Dataset`` with the swept axes as dimensions in the order given,
then ``step``; each observable is a variable, ``diverged_at`` says at which step a run was
frozen (-1: never), and ``attrs`` hold the configuration, the root seed and package
versions. Every variable carries ``long_name`` and ``definition`` attributes (with its
normalisation): the observables declare theirs (``Observable.descriptions``), the sweep
those of ``step``, ``seed`` and ``diverged_at`` (``DESCRIPTIONS``). A scalar keyword (``lr=0.1``) fixes a value without adding a dimension.

Batching strategy (``Spec.strategy``): ``"vmap"`` runs all runs as one batched program;
``"map"`` runs them one after another inside one program (``lax.map``); ``"chunked"``
vmaps chunks of ``chunk_size`` runs inside a ``lax.map``; ``"loop"`` calls the compiled
single run once per run from Python (one compile; each run's program is exactly the one
``run`` executes). ``"auto"`` takes ``"vmap"`` on accelerators and for small runs on the
CPU, and ``"loop"`` on the CPU once a run's matrix products are large enough to keep the
cores busy by themselves: there XLA's batched matmul (about half the rate of a plain one
on the CPU) makes a vmap lose to the serial loop. ``traindyn bench sweep`` measures the
strategies against the serial loop; ``CPU_LOOP_THRESHOLD`` comes from it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import itertools
import json
import numbers
import pathlib
import platform
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm.auto as tqdm
import xarray as xr

from dynamics import devices, memory
from dynamics.checkpoint import SweepCheckpoint, digest
from dynamics.loop import carry_shapes, make_run
from dynamics.loop import float_dtype as _dtype
from dynamics.spec import Spec

# Per-run work (multiply-adds of one optimizer step's forward pass) above which "auto"
# runs a CPU sweep as a loop of single runs (see ``choose_strategy``). Measured with
# ``traindyn bench sweep`` on 2 CPU cores (digits, depth-2 tanh MLP, full batch 512):
# at width 64 (4.5e6) vmap beats the serial loop 1.2-1.5x; at width 256 (4.3e7) and 512
# every batched strategy loses 2-8% to it, while the loop matches it.
CPU_LOOP_THRESHOLD = 2**24
STRATEGIES = ("vmap", "map", "chunked", "loop")


def run_key(root_seed: int, seed: int) -> jax.Array:
    """The key of run ``seed``: ``fold_in(PRNGKey(root_seed), seed)``."""
    return jax.random.fold_in(jax.random.PRNGKey(root_seed), seed)


# -- compiled programs, one per (spec, strategy) -------------------------------------------


@functools.lru_cache(maxsize=64)
def _program(spec: Spec, strategy: str, logs_per_chunk: int):
    """The compiled chunk program of ``strategy``: ``(keys, hparams, state, log_start) ->
    (state, first, trajectory)`` for a batch of runs (``"loop"``: for one run), advancing
    ``logs_per_chunk`` log points (``Runner.chunk``)."""
    runner = make_run(spec)

    def one(key, hp, state, log_start):
        return runner.chunk(key, hp, state, log_start, logs_per_chunk)

    if strategy == "loop":
        return jax.jit(one)
    if strategy == "vmap":
        return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))
    batch = None if strategy == "map" else spec.chunk_size
    return jax.jit(lambda k, h, s, log_start: jax.lax.map(
        lambda a: one(*a, log_start), (k, h, s), batch_size=batch))


@functools.lru_cache(maxsize=64)
def _init_program(spec: Spec):
    return jax.jit(make_run(spec).init_params)


def step_work(spec: Spec) -> int:
    """Multiply-adds of the dense layers in the forward pass of one optimizer step."""
    model = spec.model
    if not hasattr(model, "fan_ins"):
        return 0
    fan_ins = model.fan_ins(spec.task.in_dim)
    fan_outs = fan_ins[1:] + (model.out_dim,)
    return (spec.batch_size or spec.task.n_train) * sum(a * b for a, b in zip(fan_ins, fan_outs))


def choose_strategy(spec: Spec, n_runs: int) -> str:
    """``spec.strategy``, or for ``"auto"``: ``vmap`` on accelerators, on several devices
    (its runs axis is the one that is sharded) and for small runs on the CPU; ``loop`` for
    one run and for CPU runs whose steps are large enough to keep the cores busy alone
    (``CPU_LOOP_THRESHOLD``, measured by ``traindyn bench sweep``)."""
    if jax.process_count() > 1:
        if spec.strategy not in ("auto", "vmap"):
            raise ValueError(f"strategy must be 'auto' or 'vmap' for a sweep over several "
                             f"processes (its runs are sharded over all devices), got "
                             f"{spec.strategy!r}")
        return "vmap"
    if spec.strategy != "auto":
        return spec.strategy
    if n_runs == 1:
        return "loop"
    if jax.device_count() > 1:
        return "vmap"
    if jax.default_backend() == "cpu" and step_work(spec) >= CPU_LOOP_THRESHOLD:
        return "loop"
    return "vmap"


def default_logs_per_chunk(n_logs: int, chunks: int = 20) -> int:
    """Log points per chunk of the outer loop: the largest divisor of ``n_logs`` that is at
    most ``ceil(n_logs / chunks)`` (every chunk the same length: one compile)."""
    target = -(-n_logs // chunks)
    return max(d for d in range(1, target + 1) if n_logs % d == 0)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one part of a sweep (one combination of static values) is executed."""

    strategy: str
    runs_per_chunk: int
    logs_per_chunk: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_plan(spec: Spec, n_runs: int, *, max_runs_per_chunk=None, memory_budget=None,
              logs_per_chunk=None) -> Plan:
    """The strategy, run-chunk size (from the memory estimate of ``dynamics.memory``, a
    multiple of the device count) and log points per chunk of a sweep of ``n_runs``."""
    strategy = choose_strategy(spec, n_runs)
    logs = logs_per_chunk
    if logs is None:
        logs = default_logs_per_chunk(spec.n_logs)
    elif not isinstance(logs, int) or isinstance(logs, bool) or logs < 1 or spec.n_logs % logs:
        raise ValueError(f"logs_per_chunk must be an int >= 1 dividing the {spec.n_logs} "
                         f"log points, got {logs!r}")
    n_dev = jax.device_count() if strategy == "vmap" else 1
    per = memory.runs_per_chunk(n_runs, memory.run_footprint(spec, logs), n_dev,
                                budget=memory_budget, max_runs=max_runs_per_chunk)
    return Plan(strategy, per, logs)


class _Chunk:
    """One run-chunk of a sweep part on the devices: its inputs placed (sharded over the
    runs mesh for the batched strategies, round-robin over local devices for ``loop``),
    and conversion of its carry to and from host arrays (for checkpoints)."""

    def __init__(self, spec: Spec, plan: Plan, keys, hp):
        self.spec, self.plan, self.n = spec, plan, len(keys)
        self.program = _program(spec, plan.strategy, plan.logs_per_chunk)
        self.treedef, self.leaf_shapes = _state_structure(spec)
        if plan.strategy == "loop":
            local = jax.local_devices()
            self.devices = [local[i % len(local)] for i in range(self.n)]
            self.inputs = [
                jax.device_put((keys[i], {k: v[i] for k, v in hp.items()}), d)
                for i, d in enumerate(self.devices)
            ]
        else:
            self.size = plan.runs_per_chunk
            self.mesh = devices.runs_mesh() if plan.strategy == "vmap" else None
            padded = (devices.pad_rows(keys, self.size),
                      {k: devices.pad_rows(v, self.size) for k, v in hp.items()})
            self.inputs = self._place(padded)

    def _place(self, tree):
        if self.mesh is not None:
            return devices.shard_runs(tree, self.mesh)
        return jax.device_put(tree)

    def placeholder(self):
        if self.plan.strategy == "loop":
            zeros = [np.zeros(s, d) for s, d in self.leaf_shapes]
            return [jax.device_put(jax.tree.unflatten(self.treedef, zeros), d)
                    for d in self.devices]
        zeros = [np.zeros((self.size, *s), d) for s, d in self.leaf_shapes]
        return self._place(jax.tree.unflatten(self.treedef, zeros))

    def advance(self, state, log_start: int):
        """One chunk of log points: ``(state, first, trajectory)``, the last two on the
        host with leading dimension the chunk's runs."""
        if self.plan.strategy == "loop":
            outs = [self.program(k, h, s, np.int32(log_start))
                    for (k, h), s in zip(self.inputs, state)]
            state = [o[0] for o in outs]
            first, traj = _stack_host([(o[1], o[2]) for o in outs])
            return state, first, traj
        start = np.int32(log_start)
        if self.mesh is not None:
            start = devices.replicate(start, self.mesh)
        state, first, traj = self.program(*self.inputs, state, start)
        first, traj = jax.tree.map(lambda a: a[: self.n], devices.to_host((first, traj)))
        return state, first, traj

    def state_to_host(self, state) -> list[np.ndarray]:
        if self.plan.strategy == "loop":
            return [np.stack(leaves) for leaves in
                    zip(*(jax.tree.leaves(jax.device_get(s)) for s in state))]
        return [a[: self.n] for a in jax.tree.leaves(devices.to_host(state))]

    def state_from_host(self, leaves: list[np.ndarray]):
        if self.plan.strategy == "loop":
            return [jax.device_put(jax.tree.unflatten(self.treedef, [a[i] for a in leaves]), d)
                    for i, d in enumerate(self.devices)]
        padded = [devices.pad_rows(a, self.size) for a in leaves]
        return self._place(jax.tree.unflatten(self.treedef, padded))


@functools.partial(jax.jit, static_argnums=0)
def _run_keys(root_seed: int, seeds):
    return jax.vmap(lambda seed: run_key(root_seed, seed))(seeds)


def _state_structure(spec: Spec):
    """The pytree structure of a run's carry and its leaves' (shape, dtype)."""
    shapes = carry_shapes(spec)[0]
    return jax.tree.structure(shapes), [(a.shape, a.dtype) for a in jax.tree.leaves(shapes)]


def _stack_host(trees):
    return jax.tree.map(lambda *a: np.stack(a), *jax.device_get(trees))


def _pack(state_leaves, first, traj) -> dict:
    out = {f"state.{i}": a for i, a in enumerate(state_leaves)}
    out.update({f"first.{k}": v for k, v in first.items()})
    out.update({f"traj.{k}": v for k, v in traj.items()})
    return out


def _unpack(arrays: dict):
    n = sum(1 for k in arrays if k.startswith("state."))
    leaves = [arrays[f"state.{i}"] for i in range(n)]
    first = {k[6:]: v for k, v in arrays.items() if k.startswith("first.")}
    traj = {k[5:]: v for k, v in arrays.items() if k.startswith("traj.")}
    return leaves, first, traj


def batched_runs(spec: Spec, seeds, hparams: dict | None = None, *, plan: Plan | None = None,
                 checkpoint: SweepCheckpoint | None = None, part: int = 0, bar=None):
    """Final states and trajectories of runs ``i = 0..R-1`` with seeds ``seeds[i]`` and
    hyperparameters ``hparams[name][i]`` (defaults from ``spec`` for the others): leaves
    of leading dimension ``R``, on the host.

    The runs are cut into run-chunks (``plan.runs_per_chunk``) and the outer loop into
    chunks of ``plan.logs_per_chunk`` log points; with ``checkpoint``, the carry and the
    trajectory so far are written after every chunk and a call with the same checkpoint
    continues from the last complete one.
    """
    seeds = np.asarray(seeds)
    n_runs = seeds.size
    dtype = _dtype(spec)
    hparams = hparams or {}
    hp = {
        k: np.asarray(hparams[k] if k in hparams else np.full(n_runs, v), dtype)
        for k, v in spec.hparams().items()
    }
    keys = np.asarray(_run_keys(spec.root_seed, np.asarray(seeds, np.uint32)))
    plan = plan or make_plan(spec, n_runs)
    per, logs, n_logs = plan.runs_per_chunk, plan.logs_per_chunk, spec.n_logs
    steps_per_log = spec.log_every
    parts = []
    for c, lo in enumerate(range(0, n_runs, per)):
        hi = min(lo + per, n_runs)
        done = checkpoint.load_done(part, c) if checkpoint else None
        if done is not None:
            parts.append(_unpack(done))
            if bar is not None:
                bar.update((hi - lo) * spec.steps)
            continue
        chunk = _Chunk(spec, plan, keys[lo:hi], {k: v[lo:hi] for k, v in hp.items()})
        state, first, trajs, start = chunk.placeholder(), None, [], 0
        current = checkpoint.load_current(part, c) if checkpoint else None
        if current is not None:
            start, arrays = current
            leaves, first, traj = _unpack(arrays)
            state, trajs = chunk.state_from_host(leaves), [traj]
            if bar is not None:
                bar.update((hi - lo) * start * steps_per_log)
        for log_start in range(start, n_logs, logs):
            state, f, t = chunk.advance(state, log_start)
            if log_start == 0:
                first = f
            trajs.append(t)
            if bar is not None:
                bar.update((hi - lo) * logs * steps_per_log)
            if checkpoint is not None and log_start + logs < n_logs:
                traj_so_far = {k: np.concatenate([t[k] for t in trajs], axis=1) for k in first}
                trajs = [traj_so_far]
                checkpoint.save_current(part, c, log_start + logs,
                                        _pack(chunk.state_to_host(state), first, traj_so_far))
        traj = {k: np.concatenate([t[k] for t in trajs], axis=1) for k in first}
        result = (chunk.state_to_host(state), first, traj)
        if checkpoint is not None:
            checkpoint.save_done(part, c, _pack(*result))
        parts.append(result)
    leaves = [np.concatenate(a) for a in zip(*(p[0] for p in parts))]
    state = jax.tree.unflatten(_state_structure(spec)[0], leaves)
    traj = {k: np.concatenate([np.concatenate([p[1][k][:, None], p[2][k]], axis=1)
                               for p in parts]) for k in parts[0][1]}
    return state, traj


# -- argument handling ------------------------------------------------------------------


def _as_values(name: str, value) -> tuple[np.ndarray, bool]:
    """(values, is_axis): scalars fix a value, sequences make an axis."""
    if isinstance(value, (str, bytes)) or np.ndim(value) == 0:
        return np.asarray([value]), False
    values = np.asarray(list(value))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a scalar or a non-empty 1-D sequence, got {value!r}")
    if len(set(values.tolist())) != len(values):
        raise ValueError(f"{name} has repeated values: {values.tolist()}")
    return values, True


def _classify(spec: Spec, axes: dict[str, Any]):
    hparams = spec.hparams()
    statics = spec.static_fields()
    seeds = None
    value_axes: dict[str, np.ndarray] = {}
    static_axes: dict[str, np.ndarray] = {}
    dims: list[str] = []
    for name, value in axes.items():
        values, is_axis = _as_values(name, value)
        if name == "seed":
            if not all(isinstance(v, numbers.Integral) and v >= 0 for v in values.tolist()):
                raise ValueError(f"seed must be integers >= 0, got {values.tolist()}")
            seeds = values.astype(np.int64)
        elif name in hparams:
            try:
                values = values.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be real numbers, got {values.tolist()}") from None
            spec.check_hparam_values(name, values)
            value_axes[name] = values
        elif name in statics:
            static_axes[name] = values
        else:
            raise ValueError(
                f"{name!r} is not a hyperparameter of this spec: swept values are "
                f"{sorted(hparams)} and 'seed', static axes are {sorted(statics)}"
            )
        if is_axis:
            dims.append(name)
    if seeds is None:
        seeds = np.asarray([0])
    return seeds, value_axes, static_axes, dims


# -- datasets -----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "backend": jax.default_backend()}
    for pkg in ("traindyn", "jax", "jaxlib", "flax", "optax", "numpy", "xarray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _extra_dims(spec: Spec, name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    for obs in spec.observables:
        if name in obs.dims:
            return tuple(obs.dims[name])
    return tuple(f"{name}_dim{i}" for i in range(len(shape)))


# What a sweep adds to its observables' outputs; each observable describes its own
# (``Observable.descriptions``).
DESCRIPTIONS = {
    "step": ("optimizer step", "number of optimizer updates done (0: the initial state); "
             "a log point every log_every steps"),
    "diverged_at": ("step of divergence", "the optimizer step whose loss or new parameters "
                    "were not finite: the run kept its last finite state and its later log "
                    "points are NaN (-1: never diverged)"),
    "seed": ("run seed", "the run's key is fold_in(PRNGKey(root_seed), seed)"),
}


def _describe(ds: xr.Dataset, spec: Spec) -> None:
    """``long_name`` and ``definition`` attrs on every variable of ``ds`` that the sweep or
    an observable describes, and a plain name on an output of a user's observable that
    declares none. Applied to the assembled Dataset (combining parts drops attrs)."""
    known = dict(DESCRIPTIONS)
    for obs in spec.observables:
        known.update(obs.descriptions)
    for name, var in ds.variables.items():
        if name in known:
            long_name, definition = known[name]
        elif name in ds.data_vars:
            long_name, definition = str(name).replace("_", " "), "not declared by its observable"
        else:
            continue
        var.attrs.update(long_name=long_name, definition=definition)


def _dataset(spec: Spec, grid_names, grid_values, traj, diverged_at) -> xr.Dataset:
    grid_shape = tuple(len(v) for v in grid_values)
    steps = np.arange(spec.n_logs + 1) * spec.log_every
    data_vars = {}
    for name, arr in traj.items():
        arr = np.asarray(arr).reshape(grid_shape + arr.shape[1:])
        extra = _extra_dims(spec, name, arr.shape[len(grid_shape) + 1 :])
        data_vars[name] = (tuple(grid_names) + ("step",) + extra, arr)
    data_vars["diverged_at"] = (
        tuple(grid_names),
        np.asarray(diverged_at).astype(np.int64).reshape(grid_shape),
    )
    coords = {n: v for n, v in zip(grid_names, grid_values)}
    coords["step"] = steps
    for obs in spec.observables:
        coords.update(obs.coords())
    return xr.Dataset(data_vars, coords=coords)


# -- public entry points ----------------------------------------------------------------------


def _fingerprint(spec: Spec, axes: dict) -> dict:
    """What must be equal for a checkpoint to be resumed (``dynamics.checkpoint``)."""
    task = spec.task
    return {
        "config": json.loads(spec.config_json()),
        "task_data": digest(task.x_train, task.y_train, task.x_test, task.y_test,
                            *getattr(task, "noise", ())),
        "axes": {k: np.asarray(v).tolist() for k, v in axes.items()},
        "strategy": spec.strategy,
        "chunk_size": spec.chunk_size,
    }


def _precision(spec: Spec):
    """float64 runs under ``jax.enable_x64`` for the duration of the call only."""
    return jax.enable_x64(spec.dtype == "float64")


_PROGRESS = contextvars.ContextVar("traindyn_progress", default=False)


@contextlib.contextmanager
def show_progress(on: bool = True):
    """Within this context, sweeps called with ``progress=None`` show a progress bar
    (``traindyn run`` uses it for the sweeps inside an experiment)."""
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
      that fit the device memory, estimated by ``dynamics.memory``; the first overrides the
      estimate, the second its budget.
    * ``logs_per_chunk``: log points per chunk of the outer loop (default: about 20 chunks
      with a checkpoint or a progress bar, otherwise the whole run in one).
    * ``progress``: a tqdm bar of run-steps per second (default: with ``checkpoint_dir``,
      or inside ``show_progress()``).

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
    seeds, value_axes, static_axes, dims = _classify(spec, axes)

    # Validate every static combination and plan its execution before anything compiles.
    static_names = list(static_axes)
    combos = list(itertools.product(*static_axes.values()))
    specs = []
    for combo in combos:
        s = spec
        for name, value in zip(static_names, combo):
            s = s.with_static(name, value)
        specs.append(s)

    grid_names = ["seed"] + list(value_axes)
    grid_values = [seeds] + list(value_axes.values())
    mesh = np.meshgrid(*grid_values, indexing="ij")
    flat = {n: m.reshape(-1) for n, m in zip(grid_names, mesh)}
    n_runs = flat["seed"].size
    if progress is None:
        progress = checkpoint_dir is not None or _PROGRESS.get()
    if logs_per_chunk is None and not (progress or checkpoint_dir is not None):
        logs_per_chunk = spec.n_logs  # nothing to show or save between chunks: one chunk
    plans = [make_plan(s, n_runs, max_runs_per_chunk=max_runs_per_chunk,
                       memory_budget=memory_budget, logs_per_chunk=logs_per_chunk)
             for s in specs]

    checkpoint = None
    if checkpoint_dir is not None:
        directory = pathlib.Path(checkpoint_dir)
        if jax.process_count() > 1:
            directory = directory / f"host-{jax.process_index()}"
        checkpoint = SweepCheckpoint(directory, _fingerprint(spec, axes))
        layout = checkpoint.open({"plans": [p.as_dict() for p in plans]})
        plans = [Plan(**p) for p in layout["plans"]]
    bar = tqdm.tqdm(total=n_runs * spec.steps * len(specs), unit="run-step", unit_scale=True,
                    disable=not progress, desc="sweep")

    parts, states = [], {}
    try:
        for i, (combo, s, p) in enumerate(zip(combos, specs, plans)):
            state, traj = batched_runs(s, flat["seed"], {k: flat[k] for k in value_axes},
                                       plan=p, checkpoint=checkpoint, part=i, bar=bar)
            ds = _dataset(s, grid_names, grid_values, traj, state.diverged_at)
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

    if static_names:
        nested = np.empty([len(v) for v in static_axes.values()], dtype=object)
        for index, part in zip(np.ndindex(nested.shape), parts):
            nested[index] = part
        ds = xr.combine_nested(nested.tolist(), concat_dim=static_names, combine_attrs="drop")
        for name in static_names:  # string axes as numpy strings, not objects
            if ds[name].dtype == object:
                ds = ds.assign_coords({name: ds[name].values.astype(str)})
    else:
        ds = parts[0]
    order = [d for d in dims if d in ds.dims]
    rest = [d for d in ds.dims if d not in order and d in grid_names + static_names]
    ds = ds.transpose(*order, *rest, "step", ...)
    for name in list(ds.dims):
        if name not in dims and name != "step" and name in grid_names + static_names:
            ds = ds.squeeze(name)
    ds.attrs = {
        "config": spec.config_json(),
        "root_seed": spec.root_seed,
        "hparams": json.dumps(spec.hparams()),
        "versions": json.dumps(versions()),
        "swept": json.dumps(dims),
        "execution": json.dumps({
            "devices": jax.device_count(),
            "processes": jax.process_count(),
            "plans": [p.as_dict() for p in plans],
        }),
    }
    _describe(ds, spec)
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
    """The initial parameters of run ``seed``, as the training loop draws them."""
    with _precision(spec):
        values = {**spec.hparams(), **hparams}
        hp = {k: jnp.asarray(v, _dtype(spec)) for k, v in values.items()}
        return _init_program(spec)(run_key(spec.root_seed, seed), hp)
