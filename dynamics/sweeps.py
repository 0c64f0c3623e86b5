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
versions. A scalar keyword (``lr=0.1``) fixes a value without adding a dimension.

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

import functools
import itertools
import json
import numbers
import platform
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from dynamics.loop import make_run
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
def _program(spec: Spec, strategy: str):
    """The compiled program of ``strategy`` (``"loop"``: the single run)."""
    runner = make_run(spec)

    def one(args):
        return runner.run(*args)

    if strategy == "loop":
        return jax.jit(runner.run)
    if strategy == "vmap":
        return jax.jit(jax.vmap(runner.run))
    if strategy == "map":
        return jax.jit(lambda k, h: jax.lax.map(one, (k, h)))
    return jax.jit(lambda k, h: jax.lax.map(one, (k, h), batch_size=spec.chunk_size))


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
    """``spec.strategy``, or for ``"auto"``: ``vmap`` on accelerators and for small runs
    on the CPU, ``loop`` for CPU runs whose steps are large enough to keep the cores busy
    alone (``CPU_LOOP_THRESHOLD``, measured by ``traindyn bench sweep``)."""
    if spec.strategy != "auto":
        return spec.strategy
    if n_runs == 1:
        return "loop"
    if jax.default_backend() == "cpu" and step_work(spec) >= CPU_LOOP_THRESHOLD:
        return "loop"
    return "vmap"


def _dtype(spec: Spec):
    return jnp.asarray(np.asarray(spec.task.x_train)[:0]).dtype


def batched_runs(spec: Spec, seeds, hparams: dict | None = None):
    """Final states and trajectories of runs ``i = 0..R-1`` with seeds ``seeds[i]`` and
    hyperparameters ``hparams[name][i]`` (defaults from ``spec`` for the others); leaves
    have leading dimension ``R``."""
    seeds = np.asarray(seeds)
    n_runs = seeds.size
    dtype = _dtype(spec)
    hparams = hparams or {}
    hp = {
        k: np.asarray(hparams[k] if k in hparams else np.full(n_runs, v), dtype)
        for k, v in spec.hparams().items()
    }
    keys = np.asarray(_run_keys(spec.root_seed, np.asarray(seeds, np.uint32)))
    strategy = choose_strategy(spec, n_runs)
    program = _program(spec, strategy)
    if strategy != "loop":
        return program(keys, hp)
    outs = [program(keys[i], {k: v[i] for k, v in hp.items()}) for i in range(n_runs)]
    return _stack_runs(outs)


@functools.partial(jax.jit, static_argnums=0)
def _run_keys(root_seed: int, seeds):
    return jax.vmap(lambda seed: run_key(root_seed, seed))(seeds)


@jax.jit
def _stack_runs(outs):
    """Stack a list of per-run pytrees along a new leading axis, in one dispatch."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outs)


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


def sweep(spec: Spec, *, return_state: bool = False, **axes):
    """Run every combination of the given axes; see the module doc.

    With ``return_state=True`` returns ``(dataset, states)``: ``states`` maps each
    combination of static-axis values (a tuple, ``()`` without static axes) to the final
    ``TrainState`` of its runs, leaves of leading shape the value axes (seed first, then
    the hyperparameters in the order given).
    """
    if not isinstance(spec, Spec):
        raise ValueError(f"spec must be a dynamics.Spec, got {type(spec).__name__}")
    seeds, value_axes, static_axes, dims = _classify(spec, axes)

    # Validate every static combination before anything compiles.
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

    parts, states = [], {}
    for combo, s in zip(combos, specs):
        state, traj = batched_runs(s, flat["seed"], {k: flat[k] for k in value_axes})
        ds = _dataset(s, grid_names, grid_values, traj, state.diverged_at)
        for name, value in zip(static_names, combo):
            ds = ds.expand_dims({name: [value]})
        parts.append(ds)
        if return_state:
            grid_shape = tuple(len(v) for v in grid_values)
            states[tuple(combo)] = jax.tree.map(
                lambda a: a.reshape(grid_shape + a.shape[1:]), state
            )

    if static_names:
        nested = np.empty([len(v) for v in static_axes.values()], dtype=object)
        for index, part in zip(np.ndindex(nested.shape), parts):
            nested[index] = part
        ds = xr.combine_nested(nested.tolist(), concat_dim=static_names, combine_attrs="drop")
    else:
        ds = parts[0]
    order = [d for d in dims if d in ds.dims]
    rest = [d for d in ds.dims if d not in order and d != "step"]
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
    }
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
    values = {**spec.hparams(), **hparams}
    hp = {k: jnp.asarray(v, _dtype(spec)) for k, v in values.items()}
    return _init_program(spec)(run_key(spec.root_seed, seed), hp)
