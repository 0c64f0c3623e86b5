"""``traindyn bench sweep``: a sweep of S runs against S separate calls of one jitted run.

For each width and number of runs S, on the digits task (full batch), it times

* ``serial``: S calls of the same jitted single run (compiled once), one after another;
* every batching strategy of ``dynamics.sweeps`` (``vmap``, ``map``, ``chunked``,
  ``loop``) and what ``auto`` picks,

each after its compile (best of ``repeats``, interleaved), and reports the time ratio
``serial / strategy`` (> 1: faster than the serial loop) and the achieved FLOP rate as a
fraction of a large square matmul (``2 n^3`` FLOPs) timed in the same process. FLOPs are
counted analytically from the dense layers: forward ``2 B n_in n_out`` per layer, the
backward pass the weight gradient ``2 B n_in n_out`` for every layer and the input
gradient for every layer but the first; the observables' full-batch loss, gradient and
test forward pass at each log point are counted the same way. Elementwise work is not
counted, so the fraction is a lower bound on how busy the cores are.

It also measures what a long sweep pays for its safety and its devices:

* ``checkpoint``: ``dynamics.sweep`` with ``checkpoint_dir`` (the carry and trajectory
  written atomically after each of the ~20 chunks of log points) against the same sweep
  without it: the time ratio;
* ``sharding``: in a child process with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``,
  the runs sharded over the 4 CPU devices against the same batched program on one device;
* ``throughput``: on an accelerator, a 1024-run sweep (lr x seed): runs x steps per
  second, and its speed-up over 8 runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import dynamics as td
from dynamics import sweeps


def _best_times(fns: dict, repeats: int) -> dict:
    """Best wall time of each function after one warm-up (compile) call; the repeats are
    interleaved across the functions so that a slow spell of the machine hits all alike."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _best_time(fn, repeats: int) -> float:
    return _best_times({"fn": fn}, repeats)["fn"]


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n`` float32 matmul."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    return 2 * n**3 / _best_time(lambda: mm(a, b), repeats)


def run_flops(spec: td.Spec) -> float:
    """Dense-layer FLOPs of one run (module doc)."""
    model, task = spec.model, spec.task
    dims = list(zip(model.fan_ins(task.in_dim), model.fan_ins(task.in_dim)[1:] + (model.out_dim,)))
    macs = sum(a * b for a, b in dims)
    first = dims[0][0] * dims[0][1]
    train_step = 2 * macs + 2 * macs + 2 * (macs - first)  # forward, weight grads, input grads
    batch = spec.batch_size or task.n_train
    per_log = (train_step * task.n_train) + 2 * macs * task.x_test.shape[0]
    return spec.steps * train_step * batch + (spec.n_logs + 1) * per_log


def bench_case(task, width: int, n_runs: int, steps: int, repeats: int, seed: int) -> dict:
    spec = _spec(task, width, steps, seed)
    seeds = list(range(n_runs))
    lrs = np.linspace(0.02, 0.1, n_runs)

    # The serial loop: S calls of one jitted single run.
    runner = td.loop.make_run(spec)
    single = jax.jit(runner.run)
    defaults = spec.hparams()
    keys = [sweeps.run_key(seed, s) for s in seeds]
    hps = [{**{k: jnp.float32(v) for k, v in defaults.items()}, "lr": jnp.float32(lr)}
           for lr in lrs]

    def serial():
        return [single(k, h) for k, h in zip(keys, hps)]

    fns = {"serial": serial}
    for strategy in sweeps.STRATEGIES:
        fns[strategy] = functools.partial(
            sweeps.batched_runs, dataclasses.replace(spec, strategy=strategy),
            seeds=np.asarray(seeds), hparams={"lr": lrs})
    times = _best_times(fns, repeats)
    t_serial = times["serial"]
    flops = run_flops(spec) * n_runs
    case = {"width": width, "runs": n_runs, "steps": steps,
            "serial_seconds": round(t_serial, 4),
            "serial_gflops": round(flops / t_serial / 1e9, 2),
            "strategies": {}}
    auto = sweeps.choose_strategy(spec, n_runs)
    for strategy in sweeps.STRATEGIES:
        t = times[strategy]
        case["strategies"][strategy] = {
            "seconds": round(t, 4),
            "speedup_over_serial": round(t_serial / t, 3),
            "gflops": round(flops / t / 1e9, 2),
        }
    case["auto"] = auto
    case["auto_speedup_over_serial"] = case["strategies"][auto]["speedup_over_serial"]
    return case


def _spec(task, width: int, steps: int, seed: int, **kw) -> td.Spec:
    model = td.MLP(width=width, depth=2, out_dim=task.out_dim, activation="tanh")
    return td.Spec(model, task, td.optimizers.sgd(0.05), steps=steps,
                   log_every=min(10, steps // 2), root_seed=seed, **kw)


def bench_checkpoint(task, width: int, n_runs: int, steps: int, repeats: int, seed: int) -> dict:
    """A sweep with and without ``checkpoint_dir`` (a fresh directory each time)."""
    spec = _spec(task, width, steps, seed)
    axes = {"seed": range(n_runs)}
    root = tempfile.mkdtemp(prefix="bench-checkpoint-")
    count = iter(range(10**6))

    def with_checkpoint():
        return td.sweep(spec, checkpoint_dir=os.path.join(root, str(next(count))),
                        progress=False, **axes)

    times = _best_times({"plain": lambda: td.sweep(spec, **axes),
                         "checkpointed": with_checkpoint}, repeats)
    plan = sweeps.make_plan(spec, n_runs)
    return {"width": width, "runs": n_runs, "steps": steps,
            "chunks_of_log_points": spec.n_logs // plan.logs_per_chunk,
            "plain_seconds": round(times["plain"], 4),
            "checkpointed_seconds": round(times["checkpointed"], 4),
            "checkpoint_overhead_ratio": round(times["checkpointed"] / times["plain"], 3)}


_SHARDING_CHILD = """
import json, sys, jax, numpy as np
from experiments import bench_sweep as b
import dynamics as td
from dynamics import sweeps
width, n_runs, steps, repeats, seed = map(int, sys.argv[1:6])
task = td.tasks.digits(n_train=512, n_test=256, loss="mse", seed=seed)
spec = b._spec(task, width, steps, seed, strategy="vmap")
plan = sweeps.make_plan(spec, n_runs)
program = sweeps._program(spec, "vmap", spec.n_logs)  # the whole run in one chunk
keys = np.asarray(sweeps._run_keys(seed, np.arange(n_runs, dtype=np.uint32)))
hp = {k: np.full(n_runs, v, np.float32) for k, v in spec.hparams().items()}
structure, leaves = sweeps._state_structure(spec)
zeros = jax.tree.unflatten(structure, [np.zeros((n_runs, *s), d) for s, d in leaves])
mesh = td.devices.runs_mesh()
sharded = td.devices.shard_runs((keys, hp, zeros), mesh)
one = jax.device_put((keys, hp, zeros), jax.devices()[0])
start_sharded = td.devices.replicate(np.int32(0), mesh)
times = b._best_times({
    "one_device": lambda: program(*one, np.int32(0)),
    "sharded": lambda: program(*sharded, start_sharded),
}, repeats)
print(json.dumps({"devices": jax.device_count(), **times}))
"""


def bench_sharding(width: int, n_runs: int, steps: int, repeats: int, seed: int,
                   devices: int = 4) -> dict:
    """The runs of a vmapped program sharded over ``devices`` forced CPU devices against
    the same program on one of them (in a child process: the device count is fixed when
    JAX starts)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                         f"--xla_force_host_platform_device_count={devices}".strip())
    out = subprocess.run([sys.executable, "-c", _SHARDING_CHILD, str(width), str(n_runs),
                          str(steps), str(repeats), str(seed)], env=env, check=True,
                         capture_output=True, text=True)
    times = json.loads(out.stdout.strip().splitlines()[-1])
    return {"width": width, "runs": n_runs, "steps": steps, "cpu_devices": times["devices"],
            "host_cores": os.cpu_count(),
            "one_device_seconds": round(times["one_device"], 4),
            "sharded_seconds": round(times["sharded"], 4),
            "sharded_speedup": round(times["one_device"] / times["sharded"], 3)}


def bench_throughput(task, width: int, steps: int, repeats: int, seed: int,
                     sizes=(8, 1024)) -> dict:
    """Run-steps per second of ``dynamics.sweep`` over ``lr x seed`` for each size."""
    spec = _spec(task, width, steps, seed)
    out = {"width": width, "steps": steps, "sizes": {}}
    for n in sizes:
        axes = {"seed": range(n // 8), "lr": list(np.linspace(0.01, 0.08, 8))}
        t = _best_times({"sweep": lambda: td.sweep(spec, **axes)}, repeats)["sweep"]
        out["sizes"][str(n)] = {"seconds": round(t, 4),
                                "run_steps_per_second": round(n * steps / t, 1)}
    first, last = (out["sizes"][str(n)]["run_steps_per_second"] for n in (sizes[0], sizes[-1]))
    out["speedup_per_run"] = round(last / first, 2)
    return out


def main(quick: bool = False, seed: int = 0) -> dict:
    cases_wanted = ([(32, 4)] if quick else
                    [(64, 8), (64, 64), (256, 8), (256, 32), (512, 8)])
    steps = 10 if quick else 50
    repeats = 1 if quick else 2
    task = td.tasks.digits(n_train=512, n_test=256, loss="mse", seed=seed)
    peak = matmul_rate(1024 if quick else 2048)
    cases = []
    for width, n in cases_wanted:
        case = bench_case(task, width, n, steps, repeats, seed)
        print(f"width {width}, {n} runs: serial {case['serial_seconds']} s, "
              + ", ".join(f"{k} x{v['speedup_over_serial']}" for k, v in case["strategies"].items()),
              file=sys.stderr, flush=True)
        for entry in [case] + list(case["strategies"].values()):
            key = "serial_gflops" if entry is case else "gflops"
            entry["fraction_of_matmul"] = round(entry[key] * 1e9 / peak, 3)
        cases.append(case)
    wide = [c for c in cases if c["width"] >= 256]
    checkpoint = bench_checkpoint(task, 32 if quick else 64, 4 if quick else 16,
                                  20 if quick else 400, repeats, seed)
    print(f"checkpoint overhead x{checkpoint['checkpoint_overhead_ratio']}", file=sys.stderr)
    sharding = bench_sharding(32 if quick else 128, 8 if quick else 32, 10 if quick else 100,
                              repeats, seed)
    print(f"sharded over 4 CPU devices x{sharding['sharded_speedup']}", file=sys.stderr)
    if jax.default_backend() != "cpu":
        throughput = bench_throughput(task, 256, 10 if quick else 200, repeats, seed)
    else:
        throughput = "not measured: the 1024-run throughput is for accelerators"
    return {
        "benchmark": "sweep",
        "summary": {
            "checkpoint_overhead_ratio": checkpoint["checkpoint_overhead_ratio"],
            "sharded_speedup_4_cpu_devices": sharding["sharded_speedup"],
            "auto_min_speedup_over_serial": min(c["auto_speedup_over_serial"] for c in cases),
            "auto_min_fraction_of_matmul_width_ge_256": min(
                (c["strategies"][c["auto"]]["fraction_of_matmul"] for c in wide), default=None),
        },
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "matmul_gflops": round(peak / 1e9, 2),
        "task": task.summary(),
        "model": "MLP depth 2 tanh, full-batch GD",
        "cases": cases,
        "checkpoint": checkpoint,
        "sharding": sharding,
        "throughput": throughput,
        "versions": sweeps.versions(),
    }
