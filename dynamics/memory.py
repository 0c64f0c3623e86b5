"""How many runs fit on a device at once: an estimate of one run's footprint.

One run holds on the device, per run of a vmapped chunk (``run_footprint``):

* its carry: parameters, initial parameters, optimizer state, centred outputs (the exact
  sizes, from ``jax.eval_shape`` of the initial state);
* its logged trajectory for one chunk of log points (exact sizes, from the observables'
  output shapes; trajectories are kept at the log stride only and moved to the host after
  every chunk);
* working memory: the activations of a forward and backward pass over the training set
  (or a minibatch) and of the log-point forward passes over the training and test sets,
  ``4 x examples x (sum of layer widths) x bytes``, plus what each observable declares
  through an optional ``working_bytes(spec)`` method (e.g. Lanczos vectors).

``runs_per_chunk`` divides a memory budget by it. The default budget is 80% of a GPU's
memory limit, or half of the host memory that is free, on the CPU.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from dynamics.loop import carry_shapes, float_dtype, make_run


def _bytes(tree) -> int:
    return int(sum(np.prod(a.shape) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree)))


def run_footprint(spec, logs_per_chunk: int) -> int:
    """Estimated device bytes of one run in a batched chunk (see the module doc)."""
    state, hp = carry_shapes(spec)
    per_log = jax.eval_shape(lambda s, h: make_run(spec).observe(s, h, 0), state, hp)
    itemsize = np.dtype(float_dtype(spec)).itemsize
    model = spec.model
    widths = 0
    if hasattr(model, "fan_ins"):
        widths = sum(model.fan_ins(spec.task.in_dim)[1:]) + model.out_dim
    examples = (spec.batch_size or spec.task.n_train) + spec.task.n_train + spec.task.n_test
    working = 4 * examples * widths * itemsize
    for obs in spec.observables:
        extra = getattr(obs, "working_bytes", None)
        if extra is not None:
            working += int(extra(spec))
    return _bytes(state) + logs_per_chunk * _bytes(per_log) + working


def default_budget() -> int:
    """Bytes that a chunk of runs may use on the default device."""
    device = jax.devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # some backends do not report memory
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(0.8 * stats["bytes_limit"])
    try:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        free = 8 * 2**30
    return int(0.5 * free)


def runs_per_chunk(n_runs: int, footprint: int, n_devices: int, *, budget: int | None = None,
                   max_runs: int | None = None, shared_memory: bool | None = None) -> int:
    """Runs in one chunk: as many as fit in ``budget`` bytes of each device (of all
    devices together when they share the host's memory, as CPU devices do; ``max_runs``
    overrides the estimate), at most ``n_runs`` rounded up to the device count, and a
    multiple of the device count (at least one run per device)."""
    if shared_memory is None:
        shared_memory = jax.default_backend() == "cpu"
    if max_runs is not None:
        if not isinstance(max_runs, int) or isinstance(max_runs, bool) or max_runs < 1:
            raise ValueError(f"max_runs_per_chunk must be an int >= 1, got {max_runs!r}")
        fit = max_runs
    else:
        if budget is None:
            budget = default_budget()
        elif not isinstance(budget, (int, float)) or budget <= 0:
            raise ValueError(f"memory_budget must be a number of bytes > 0, got {budget!r}")
        fit = max(1, int(budget // max(footprint, 1))) * (1 if shared_memory else n_devices)
    all_runs = math.ceil(n_runs / n_devices) * n_devices
    per = min(fit, all_runs)
    return max(n_devices, per - per % n_devices)
