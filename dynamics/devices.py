"""Where the runs of a sweep live: a 1-D mesh over devices, padding, and gathering.

The runs axis of a batched program is sharded over a 1-D ``jax.sharding.Mesh`` named
``"runs"`` that spans every device of every process (``jax.devices()``): on one machine
the local GPUs (or CPU devices forced with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``), on several hosts all of them. A
run-chunk is padded to a multiple of the device count by repeating its last run (the
copies are dropped from the results), so every chunk has the same shape and compiles once.

Several hosts: start every process with the one line

    jax.distributed.initialize()   # arguments from the cluster environment (SLURM, TPU, ...)

(on CPU hosts, first ``jax.config.update("jax_cpu_collectives_implementation", "gloo")``)
and call the same ``dynamics.sweep`` on each. Every process builds the same inputs from the
same spec and axes; each computes the runs on its own devices; the results are merged by
an all-gather (``process_allgather``) so that every process returns the whole Dataset.
With ``checkpoint_dir``, each process writes its own copy under ``host-<index>/``.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def runs_mesh() -> Mesh:
    """The 1-D mesh ``("runs",)`` over every device of every process."""
    return Mesh(np.asarray(jax.devices()), ("runs",))


def pad_rows(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` with its leading axis padded to ``size`` by repeating its last row."""
    a = np.asarray(a)
    if a.shape[0] == size:
        return a
    if a.shape[0] > size or a.shape[0] == 0:
        raise ValueError(f"cannot pad {a.shape[0]} rows to {size}")
    return np.concatenate([a, np.repeat(a[-1:], size - a.shape[0], axis=0)])


def runs_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays split along their leading (runs) axis over ``mesh``."""
    return NamedSharding(mesh, PartitionSpec("runs"))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays held whole on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def shard_runs(tree, mesh: Mesh):
    """Host arrays (leading axis = runs, a multiple of the device count) as global arrays
    sharded over ``mesh`` along that axis; works alike for one process and several."""

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, runs_sharding(mesh),
                                            lambda index: a[index])

    return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh):
    """Host arrays (a scalar, the data) replicated on every device of ``mesh``."""

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, replicated_sharding(mesh),
                                            lambda index: a[index])

    return jax.tree.map(put, tree)


def to_host(tree):
    """Global arrays as numpy on this process (an all-gather across processes)."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, jax.device_get(tree))
    from jax.experimental import multihost_utils

    return jax.tree.map(
        lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), tree
    )
