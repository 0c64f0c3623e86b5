"""How many runs fit on a device at once, from the compiled program's own memory analysis.

A run-chunk's program (``dynamics.execution``) is compiled for a number of runs; XLA
reports what it needs (``Compiled.memory_analysis``): its arguments (the runs' carry, the
data, the hyperparameters), its outputs (the new carry and one chunk of the trajectory) and
its temporaries (activations, Lanczos vectors, kernels: whatever the model and observables
compute), for any model. ``program_bytes`` adds them up. The planner compiles the program
for all the runs of a sweep part; if it needs more than the budget it divides the runs by
the measured bytes per run and compiles again for fewer (``dynamics.planning``).

The default budget is 80% of a GPU's memory limit, or half of the host memory that is
free, on the CPU.
"""

from __future__ import annotations

import math
import os

import jax


def program_bytes(compiled) -> int:
    """Device bytes a compiled program needs: arguments + outputs + temporaries, less what
    outputs share with arguments (donated buffers)."""
    m = compiled.memory_analysis()
    if m is None:  # a backend that does not report memory
        return 0
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


def default_budget() -> int:
    """Bytes that a chunk of runs may use on the default device."""
    device = jax.devices()[0]
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


def check_budget(budget) -> int | None:
    if budget is None:
        return None
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not budget > 0:
        raise ValueError(f"memory_budget must be a number of bytes > 0, got {budget!r}")
    return int(budget)


def check_max_runs(max_runs) -> int | None:
    if max_runs is not None and (not isinstance(max_runs, int) or isinstance(max_runs, bool)
                                 or max_runs < 1):
        raise ValueError(f"max_runs_per_chunk must be an int >= 1, got {max_runs!r}")
    return max_runs


def round_to_devices(runs: int, n_devices: int) -> int:
    """``runs`` rounded down to a multiple of the device count, at least one per device."""
    return max(n_devices, runs - runs % n_devices)


def all_runs(n_runs: int, n_devices: int) -> int:
    """``n_runs`` rounded up to a multiple of the device count (the padded size)."""
    return math.ceil(n_runs / n_devices) * n_devices


def fitting_runs(size: int, needed: int, budget: int, n_devices: int,
                 shared_memory: bool) -> int:
    """Runs per chunk that fit ``budget`` bytes, from a program of ``size`` runs sharded
    over ``n_devices`` that needs ``needed`` bytes on each device (as XLA reports a
    partitioned program). The budget is per device, or of all devices together when they
    share the host's memory (CPU devices)."""
    per_run = needed / (size / n_devices)  # bytes of one run on its device
    per_device = budget / n_devices if shared_memory else budget
    return round_to_devices(int(per_device // max(per_run, 1)) * n_devices, n_devices)
