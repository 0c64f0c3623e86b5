"""The first stage of a sweep: which runs, in which parts, executed how.

``classify(spec, axes)`` sorts the keywords of ``dynamics.sweep``:

* ``seed``: integers; run key ``fold_in(PRNGKey(root_seed), seed)``;
* a *value axis*: a float hyperparameter of the model, optimizer or task (``lr``,
  ``momentum``, ``output_scale``, ``gamma0``, ``label_noise``, ...): every combination of
  the value axes is one run, and all runs of a part go through one compiled program;
* a *static axis*: anything that changes shapes or the program (``width``, ``depth``,
  ``activation``, ``batch_size``, a flax factory's int fields, a task's ``n_train``, ``p``,
  ``dim``, ...): one part, and one compile, per value.

``make_plan`` then fixes, for each part, the batching strategy, the runs per run-chunk
and the log points per chunk of the outer loop (``Plan``).

Strategy (``"auto"``): ``vmap`` on accelerators (its runs axis sharded over their
devices) and for small runs on the CPU (sharded over the CPU devices: one per core,
``dynamics.runtime``); ``loop`` for one run and, on the CPU, once a run's steps are large
enough to keep a core busy by themselves: there XLA's batched matmul (about half the rate
of a plain one on the CPU) makes a vmap lose to single runs, which the loop places on the
CPU devices in turn so that every core runs its own. The size of a step is XLA's own count
of its floating-point operations (``programs.step_flops``), so the rule holds for any
model. ``CPU_LOOP_THRESHOLD`` is measured by ``traindyn bench sweep``.

Run-chunks: the part's program is compiled for all its runs and its memory read from XLA
(``dynamics.memory``); when that exceeds the budget the runs are cut into chunks that fit.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import jax
import numpy as np

from dynamics import devices, memory, programs

# FLOPs of one optimizer step of one run above which "auto" runs a CPU sweep as a loop of
# single runs. Measured with ``traindyn bench sweep`` on 2 CPU cores (digits, depth-2 tanh
# MLP, full batch 512): at width 64 (2.7e7 FLOPs per step) vmap beats the serial loop
# 1.2-1.5x; at width 256 (2.6e8) and 512 every batched strategy loses 2-8% to it, while
# the loop matches it.
CPU_LOOP_THRESHOLD = 1e8


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one part of a sweep (one combination of static values) is executed."""

    strategy: str
    runs_per_chunk: int
    logs_per_chunk: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def choose_strategy(spec, n_runs: int) -> str:
    """``spec.strategy``, or the choice of ``"auto"`` (module doc)."""
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
    if jax.default_backend() == "cpu" and programs.step_flops(spec) >= CPU_LOOP_THRESHOLD:
        return "loop"
    return "vmap"


def default_logs_per_chunk(n_logs: int, chunks: int = 20) -> int:
    """Log points per chunk of the outer loop: the largest divisor of ``n_logs`` that is at
    most ``ceil(n_logs / chunks)`` (every chunk the same length: one compile)."""
    target = -(-n_logs // chunks)
    return max(d for d in range(1, target + 1) if n_logs % d == 0)


def check_logs_per_chunk(spec, logs) -> int:
    if logs is None:
        return default_logs_per_chunk(spec.n_logs)
    if not isinstance(logs, int) or isinstance(logs, bool) or logs < 1 or spec.n_logs % logs:
        raise ValueError(f"logs_per_chunk must be an int >= 1 dividing the {spec.n_logs} "
                         f"log points, got {logs!r}")
    return logs


def make_plan(spec, n_runs: int, *, max_runs_per_chunk=None, memory_budget=None,
              logs_per_chunk=None) -> Plan:
    """The strategy, run-chunk size (a multiple of the device count, from the compiled
    program's memory; ``max_runs_per_chunk`` caps it) and log points per chunk of a part of
    ``n_runs`` runs."""
    memory.check_max_runs(max_runs_per_chunk)
    budget = memory.check_budget(memory_budget)
    logs = check_logs_per_chunk(spec, logs_per_chunk)
    strategy = choose_strategy(spec, n_runs)
    if strategy == "loop":  # one run at a time: nothing to fit
        return Plan(strategy, n_runs, logs)
    n_dev = jax.device_count() if strategy == "vmap" else 1
    size = memory.all_runs(n_runs, n_dev)
    if max_runs_per_chunk is not None:
        size = min(size, memory.round_to_devices(max_runs_per_chunk, n_dev))
    return Plan(strategy, fit(spec, strategy, logs, size, n_dev, budget), logs)


def fit(spec, strategy: str, logs: int, size: int, n_dev: int, budget: int | None) -> int:
    """The largest run-chunk of at most ``size`` runs whose compiled program fits the
    budget (compiling again only when the first compile does not fit)."""
    budget = memory.default_budget() if budget is None else budget
    shared = jax.default_backend() == "cpu"
    mesh = part_mesh(strategy)
    while True:
        needed = memory.program_bytes(programs.compiled(spec, strategy, logs, size, mesh)[-1])
        per_device = budget / n_dev if shared else budget
        if needed <= per_device or size == n_dev:
            return size
        size = min(size - n_dev, memory.fitting_runs(size, needed, budget, n_dev, shared))


def part_mesh(strategy: str):
    """The runs mesh of a batched strategy (vmap shards its runs; map and chunked run on
    one device)."""
    return devices.runs_mesh() if strategy == "vmap" else None


# -- sweep axes ----------------------------------------------------------------------------


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


@dataclasses.dataclass
class Axes:
    """The sweep's keywords, sorted: ``seeds``, value axes (floats), static axes, and the
    names that make dimensions, in the order given."""

    seeds: np.ndarray
    values: dict[str, np.ndarray]
    statics: dict[str, np.ndarray]
    dims: list[str]


def classify(spec, axes: dict[str, Any]) -> Axes:
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
    return Axes(seeds, value_axes, static_axes, dims)
