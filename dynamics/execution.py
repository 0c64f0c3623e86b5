"""The second stage of a sweep: its runs on the devices, chunk after chunk.

For each run-chunk of a part (``planning.Plan``): the inputs are placed (the runs sharded
over the runs mesh for ``vmap``, round-robin over the local devices for ``loop``; the data
replicated), the runs are initialised once (``init``: their state and their values at log
point 0), then the outer loop continues on the devices chunk of log points after chunk
(``advance``). After every chunk of log points the trajectory so far comes to the host,
the progress bar moves, and with a checkpoint the carry and the trajectory are written; a
call with the same checkpoint resumes from the last complete chunk and ends bitwise
identical to an uninterrupted one.
"""

from __future__ import annotations

import jax
import numpy as np

from dynamics import devices, programs
from dynamics.loop import carry_shapes
from dynamics.planning import Plan, part_mesh


def _state_structure(spec):
    """The pytree structure of a run's carry and its leaves' (shape, dtype)."""
    shapes = carry_shapes(spec)[0]
    return jax.tree.structure(shapes), [(a.shape, a.dtype) for a in jax.tree.leaves(shapes)]


def _stack_host(trees):
    return jax.tree.map(lambda *a: np.stack(a), *jax.device_get(trees))


class _Chunk:
    """One run-chunk of a sweep part on the devices: its inputs placed, its two programs,
    and conversion of its carry to and from host arrays (for checkpoints)."""

    def __init__(self, spec, plan: Plan, keys, hp, data):
        self.spec, self.plan, self.n = spec, plan, len(keys)
        self.treedef, _ = _state_structure(spec)
        if plan.strategy == "loop":
            self.variables_fn, self.start_fn, self.advance_fn = programs.functions(
                spec, "loop", plan.logs_per_chunk)
            local = jax.local_devices()
            self.devices = [local[i % len(local)] for i in range(self.n)]
            self.data = {d: jax.device_put(data, d) for d in set(self.devices)}
            self.inputs = [
                jax.device_put((keys[i], {k: v[i] for k, v in hp.items()}), d)
                for i, d in enumerate(self.devices)
            ]
            return
        self.size = plan.runs_per_chunk
        self.mesh = part_mesh(plan.strategy)
        self.variables_fn, self.start_fn, self.advance_fn = programs.compiled(
            spec, plan.strategy, plan.logs_per_chunk, self.size, self.mesh)
        padded = (devices.pad_rows(keys, self.size),
                  {k: devices.pad_rows(v, self.size) for k, v in hp.items()})
        self.keys, self.hp = self._place(padded)
        self.data = self._replicate(data)

    def _place(self, tree):
        if self.mesh is not None:
            return devices.shard_runs(tree, self.mesh)
        return jax.device_put(tree)

    def _replicate(self, tree):
        if self.mesh is not None:
            return devices.replicate(tree, self.mesh)
        return jax.device_put(tree)

    def _start(self, log_start: int):
        start = np.int32(log_start)
        return devices.replicate(start, self.mesh) if self.mesh is not None else start

    def init(self):
        """``(state, values at log point 0)``, the values on the host."""
        if self.plan.strategy == "loop":
            outs = [self.start_fn(k, h, self.data[d], *self.variables_fn(k, h, self.data[d]))
                    for (k, h), d in zip(self.inputs, self.devices)]
            return [o[0] for o in outs], _stack_host([o[1] for o in outs])
        variables = self.variables_fn(self.keys, self.hp, self.data)
        state, first = self.start_fn(self.keys, self.hp, self.data, *variables)
        return state, jax.tree.map(lambda a: a[: self.n], devices.to_host(first))

    def advance(self, state, log_start: int):
        """One chunk of log points: ``(state, trajectory)``, the trajectory on the host with
        leading dimension the chunk's runs."""
        if self.plan.strategy == "loop":
            outs = [self.advance_fn(h, s, np.int32(log_start), self.data[d])
                    for (_, h), s, d in zip(self.inputs, state, self.devices)]
            return [o[0] for o in outs], _stack_host([o[1] for o in outs])
        state, traj = self.advance_fn(self.hp, state, self._start(log_start), self.data)
        return state, jax.tree.map(lambda a: a[: self.n], devices.to_host(traj))

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


def _pack(state_leaves, traj) -> dict:
    out = {f"state.{i}": a for i, a in enumerate(state_leaves)}
    out.update({f"traj.{k}": v for k, v in traj.items()})
    return out


def _unpack(arrays: dict):
    n = sum(1 for k in arrays if k.startswith("state."))
    leaves = [arrays[f"state.{i}"] for i in range(n)]
    traj = {k[5:]: v for k, v in arrays.items() if k.startswith("traj.")}
    return leaves, traj


def _join(trajs):
    return {k: np.concatenate([t[k] for t in trajs], axis=1) for k in trajs[0]}


def execute(spec, plan: Plan, keys, hparams: dict, *, checkpoint=None, part: int = 0,
            bar=None):
    """Final states and trajectories of runs ``i = 0..R-1`` with keys ``keys[i]`` and
    hyperparameters ``hparams[name][i]`` (every swept name of the spec): leaves of leading
    dimension ``R``, on the host; the trajectories include log point 0."""
    n_runs = len(keys)
    per, logs, n_logs = plan.runs_per_chunk, plan.logs_per_chunk, spec.n_logs
    data = spec.task.arrays()
    parts = []
    for c, lo in enumerate(range(0, n_runs, per)):
        hi = min(lo + per, n_runs)
        done = checkpoint.load_done(part, c) if checkpoint else None
        if done is not None:
            parts.append(_unpack(done))
            if bar is not None:
                bar.update((hi - lo) * spec.steps)
            continue
        chunk = _Chunk(spec, plan, keys[lo:hi], {k: v[lo:hi] for k, v in hparams.items()},
                       data)
        current = checkpoint.load_current(part, c) if checkpoint else None
        if current is not None:
            start, arrays = current
            leaves, traj = _unpack(arrays)
            state, trajs = chunk.state_from_host(leaves), [traj]
            if bar is not None:
                bar.update((hi - lo) * start * spec.log_every)
        else:
            start = 0
            state, first = chunk.init()
            trajs = [jax.tree.map(lambda a: a[:, None], first)]
        for log_start in range(start, n_logs, logs):
            state, t = chunk.advance(state, log_start)
            trajs.append(t)
            if bar is not None:
                bar.update((hi - lo) * logs * spec.log_every)
            if checkpoint is not None and log_start + logs < n_logs:
                trajs = [_join(trajs)]
                checkpoint.save_current(part, c, log_start + logs,
                                        _pack(chunk.state_to_host(state), trajs[0]))
        result = (chunk.state_to_host(state), _join(trajs))
        if checkpoint is not None:
            checkpoint.save_done(part, c, _pack(*result))
        parts.append(result)
    leaves = [np.concatenate(a) for a in zip(*(p[0] for p in parts))]
    state = jax.tree.unflatten(_state_structure(spec)[0], leaves)
    traj = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
    return state, traj
