"""``traindyn bench sweep``: a sweep of S runs against S separate calls of one jitted run.

For each model (the depth-2 tanh MLP on digits at several widths, a linen CNN on digit
images, a one-block causal transformer on modular addition with integer tokens) and
number of runs S it times

* ``serial``: S calls of the same jitted single run (``Runner.run``, compiled once), one
  after another;
* every batching strategy of the engine (``vmap``, ``map``, ``chunked``, ``loop``,
  executed as ``dynamics.sweep`` executes them) and what ``auto`` picks,

each after its compile (best of ``repeats``, interleaved), and reports the time ratio
``serial / strategy`` (> 1: faster than the serial loop) and the achieved FLOP rate as a
fraction of a large square matmul (``2 n^3`` FLOPs) timed in the same process. FLOPs are
XLA's own count (``programs.run_flops``: the lowered step and log point, elementwise work
included).

It also measures

* ``cores``: the issue's sweep of 32 runs (depth-2 tanh MLP, width 256, 256 digits, 200
  steps) against a loop of ``td.run`` calls, on this process's CPU devices (one per core
  unless ``TRAINDYN_CPU_DEVICES`` says otherwise, ``dynamics.runtime``), and its fraction
  of the matmul rate;
* ``compile_cache``: the README's main job in two processes sharing a fresh persistent
  compilation cache: the compile seconds of each;
* ``data_as_arguments``: on a 10,000-example task, the HLO text size and the compile time
  of a run with the data passed as arguments (the engine) against the same run with the
  data closed over as constants (the engine before: ``Runner`` read the task's arrays
  inside the traced function);
* ``checkpoint``: ``dynamics.sweep`` with ``checkpoint_dir`` against the same sweep
  without it;
* ``sharding``: in a child process with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``,
  the runs sharded over the 4 CPU devices against the same sweep on one device;
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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import dynamics as td
from dynamics import assembly, execution, planning, programs, runtime, sweeps
from dynamics.loop import make_run
from experiments.bench.timing import best_time, best_times


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n x n`` float32 matmul."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    return 2 * n**3 / best_time(lambda: mm(a, b), repeats)


def _hparams(spec, lr):
    return {**{k: jnp.float32(v) for k, v in spec.hparams().items()}, "lr": jnp.float32(lr)}


# -- the models ------------------------------------------------------------------------


class CNN(nn.Module):
    """Two 3x3 convolutions, global average pooling, a dense readout."""
    channels: int = 16

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(self.channels, (3, 3))(x))
        h = nn.relu(nn.Conv(self.channels, (3, 3))(h))
        return nn.Dense(10)(h.mean(axis=(1, 2)))


class Block(nn.Module):
    """One pre-LayerNorm causal transformer block with learned positions."""
    vocab: int = 60
    width: int = 64
    heads: int = 4

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(self.vocab, self.width)(tokens)
        h = h + self.param("positions", nn.initializers.normal(0.02),
                           (tokens.shape[-1], self.width))
        attention = nn.MultiHeadDotProductAttention(self.heads)
        h = h + attention(nn.LayerNorm()(h), mask=nn.make_causal_mask(tokens))
        h = h + nn.Dense(self.width)(nn.gelu(nn.Dense(4 * self.width)(nn.LayerNorm()(h))))
        return nn.Dense(self.vocab)(nn.LayerNorm()(h))


def model_specs(quick: bool, seed: int) -> list[tuple[str, td.Spec, list[int]]]:
    """``(label, spec, runs)`` of every case."""
    steps = 10 if quick else 50
    log_every = min(10, steps // 2)
    digits = td.tasks.digits(n_train=512, n_test=256, loss="mse", seed=seed)
    out = []
    for width, runs in ([(32, [4])] if quick else [(64, [8, 64]), (256, [8, 32]), (512, [8])]):
        model = td.MLP(width=width, depth=2, out_dim=10, activation="tanh")
        out.append((f"mlp-{width}", td.Spec(model, digits, td.optimizers.sgd(0.05),
                                            steps=steps, log_every=log_every,
                                            root_seed=seed), runs))
    images = td.tasks.digits(n_train=128 if quick else 512, n_test=128, shape="image",
                             seed=seed)
    channels = 4 if quick else 16
    out.append((f"cnn-{channels}", td.Spec(td.from_linen(CNN, channels=channels), images,
                                           td.optimizers.sgd(0.05), steps=steps,
                                           log_every=log_every, root_seed=seed),
                [4] if quick else [8]))
    p = 7 if quick else 59
    tokens = td.tasks.modular_arithmetic(p=p, train_fraction=0.5, encoding="tokens",
                                         seed=seed)
    width = 16 if quick else 64
    block = td.from_linen(Block, vocab=p + 1, width=width, heads=2 if quick else 4)
    out.append((f"transformer-{width}", td.Spec(block, tokens, td.optimizers.adam(1e-3),
                                                 steps=steps, log_every=log_every,
                                                 root_seed=seed), [4] if quick else [8]))
    return out


# -- sweep vs serial -------------------------------------------------------------------


def bench_case(label: str, spec: td.Spec, n_runs: int, repeats: int, seed: int) -> dict:
    seeds = np.arange(n_runs)
    lrs = np.linspace(0.5, 1.5, n_runs) * float(spec.hparams()["lr"])
    keys = sweeps.run_keys(seed, seeds)
    data = jax.device_put(spec.task.arrays())

    single = jax.jit(make_run(spec).run)
    hps = [_hparams(spec, lr) for lr in lrs]

    def serial():
        return [single(k, h, data) for k, h in zip(keys, hps)]

    columns = {k: np.full(n_runs, v, np.float32) for k, v in spec.hparams().items()}
    columns["lr"] = lrs.astype(np.float32)
    fns = {"serial": serial}
    for strategy in programs.STRATEGIES:
        s = dataclasses.replace(spec, strategy=strategy)
        plan = planning.make_plan(s, n_runs, logs_per_chunk=s.n_logs)
        fns[strategy] = functools.partial(execution.execute, s, plan, keys, columns)
    times = best_times(fns, repeats)
    t_serial = times["serial"]
    flops = programs.run_flops(spec) * n_runs
    case = {"model": label, "runs": n_runs, "steps": spec.steps,
            "serial_seconds": round(t_serial, 4),
            "serial_gflops": round(flops / t_serial / 1e9, 2),
            "strategies": {}}
    for strategy in programs.STRATEGIES:
        t = times[strategy]
        case["strategies"][strategy] = {
            "seconds": round(t, 4),
            "speedup_over_serial": round(t_serial / t, 3),
            "gflops": round(flops / t / 1e9, 2),
        }
    case["step_flops"] = programs.step_flops(spec)
    case["auto"] = planning.choose_strategy(spec, n_runs)
    case["auto_speedup_over_serial"] = case["strategies"][case["auto"]]["speedup_over_serial"]
    return case


# -- every core busy ---------------------------------------------------------------------


def bench_cores(n_runs: int, steps: int, width: int, repeats: int, seed: int) -> dict:
    """A sweep of ``n_runs`` (depth-2 tanh MLP, 256 digits, full batch) against a loop of
    ``td.run`` calls, with this process's CPU devices (one per core unless
    ``TRAINDYN_CPU_DEVICES`` says otherwise, ``dynamics.runtime``): the time ratio, and
    the sweep's fraction of the matmul rate."""
    task = td.tasks.digits(n_train=256, n_test=128, loss="mse", seed=seed)
    spec = mlp_spec(task, width, steps, seed)
    times = best_times({
        "runs": lambda: [td.run(spec, seed=s, progress=False) for s in range(n_runs)],
        "sweep": lambda: td.sweep(spec, seed=range(n_runs), progress=False),
    }, repeats)
    flops = programs.run_flops(spec) * n_runs
    return {"runs": n_runs, "steps": steps, "width": width, "cpu_devices": jax.device_count(),
            "auto": planning.choose_strategy(spec, n_runs),
            "loop_of_runs_seconds": round(times["runs"], 3),
            "sweep_seconds": round(times["sweep"], 3),
            "sweep_speedup_over_runs": round(times["runs"] / times["sweep"], 3),
            "sweep_gflops": round(flops / times["sweep"] / 1e9, 2)}


_CACHE_CHILD = """
import json, sys, time
from jax import monitoring
seconds = [0.0]
def on_duration(name, s, **kw):
    if name == "/jax/core/compile/backend_compile_duration":
        seconds[0] += s
monitoring.register_event_duration_secs_listener(on_duration)
from experiments import get
from experiments.common import execute
start = time.perf_counter()
execute(get("lazy-rich"), "quick", sys.argv[1])
print(json.dumps({"compile_seconds": seconds[0], "seconds": time.perf_counter() - start}))
"""


def bench_compile_cache() -> dict:
    """The README's main job (``lazy-rich``, quick) in two processes sharing a fresh
    persistent compilation cache (``dynamics.runtime``): compile seconds of each."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TRAINDYN_COMPILATION_CACHE=os.path.join(tmp, "cache"))
        for name in ("first_process", "second_process"):
            proc = subprocess.run([sys.executable, "-c", _CACHE_CHILD, os.path.join(tmp, name)],
                                  env=env, check=True, capture_output=True, text=True)
            out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["compile_seconds_ratio"] = round(out["first_process"]["compile_seconds"]
                                         / max(out["second_process"]["compile_seconds"], 1e-9), 1)
    return out


# -- data as arguments -------------------------------------------------------------------


def bench_data_as_arguments(n_train: int, dim: int, steps: int, seed: int) -> dict:
    """HLO size and compile time with the data as arguments against the data as constants
    (module doc), for one run of an MLP on ``n_train`` examples of ``dim`` features."""
    task = td.tasks.teacher_student_linear(dim=dim, n_train=n_train, n_test=1000, seed=seed)
    spec = td.Spec(td.MLP(width=64, depth=2), task, td.optimizers.sgd(0.05), steps=steps,
                   log_every=steps // 2)
    runner = make_run(spec)
    data = spec.task.arrays()
    key, hp = sweeps.run_key(seed, 0), _hparams(spec, 0.05)
    out = {"examples": n_train, "features": dim}
    for name, fn, args in (
        ("arguments", jax.jit(runner.run), (key, hp, data)),
        ("constants", jax.jit(lambda k, h: runner.run(k, h, data)), (key, hp)),
    ):
        start = time.perf_counter()
        lowered = fn.lower(*args)
        lowered.compile()
        seconds = time.perf_counter() - start
        out[name] = {"hlo_bytes": len(lowered.as_text().encode()),
                     "lower_and_compile_seconds": round(seconds, 3)}
    out["hlo_size_ratio_constants_over_arguments"] = round(
        out["constants"]["hlo_bytes"] / out["arguments"]["hlo_bytes"], 1)
    out["compile_time_ratio_constants_over_arguments"] = round(
        out["constants"]["lower_and_compile_seconds"]
        / out["arguments"]["lower_and_compile_seconds"], 2)
    return out


# -- checkpoints, devices, throughput --------------------------------------------------


def mlp_spec(task, width: int, steps: int, seed: int, **kw) -> td.Spec:
    model = td.MLP(width=width, depth=2, out_dim=task.out_dim, activation="tanh")
    return td.Spec(model, task, td.optimizers.sgd(0.05), steps=steps,
                   log_every=min(10, steps // 2), root_seed=seed, **kw)


def bench_checkpoint(task, width: int, n_runs: int, steps: int, repeats: int, seed: int) -> dict:
    """A sweep with and without ``checkpoint_dir`` (a fresh directory each time)."""
    spec = mlp_spec(task, width, steps, seed)
    axes = {"seed": range(n_runs)}
    root = tempfile.mkdtemp(prefix="bench-checkpoint-")
    count = iter(range(10**6))

    def with_checkpoint():
        return td.sweep(spec, checkpoint_dir=os.path.join(root, str(next(count))),
                        progress=False, **axes)

    times = best_times({"plain": lambda: td.sweep(spec, progress=False, **axes),
                         "checkpointed": with_checkpoint}, repeats)
    plan = planning.make_plan(spec, n_runs)
    return {"width": width, "runs": n_runs, "steps": steps,
            "chunks_of_log_points": spec.n_logs // plan.logs_per_chunk,
            "plain_seconds": round(times["plain"], 4),
            "checkpointed_seconds": round(times["checkpointed"], 4),
            "checkpoint_overhead_ratio": round(times["checkpointed"] / times["plain"], 3)}


_SHARDING_CHILD = """
import json, sys, jax, numpy as np
from experiments.bench import sweep as b
from experiments.bench.timing import best_times
import dynamics as td
from dynamics import execution, planning, sweeps
width, n_runs, steps, repeats, seed = map(int, sys.argv[1:6])
task = td.tasks.digits(n_train=512, n_test=256, loss="mse", seed=seed)
spec = b.mlp_spec(task, width, steps, seed, strategy="vmap")
keys = sweeps.run_keys(seed, np.arange(n_runs))
hp = {k: np.full(n_runs, v, np.float32) for k, v in spec.hparams().items()}
sharded = planning.make_plan(spec, n_runs, logs_per_chunk=spec.n_logs)
one = planning.Plan("chunked", n_runs, spec.n_logs)  # the same runs on one device
spec_one = td.Spec(spec.model, spec.task, spec.optimizer, steps=spec.steps,
                   log_every=spec.log_every, root_seed=seed, strategy="chunked",
                   chunk_size=n_runs)
times = best_times({
    "one_device": lambda: execution.execute(spec_one, one, keys, hp),
    "sharded": lambda: execution.execute(spec, sharded, keys, hp),
}, repeats)
print(json.dumps({"devices": jax.device_count(), **times}))
"""


def bench_sharding(width: int, n_runs: int, steps: int, repeats: int, seed: int,
                   devices: int = 4) -> dict:
    """The runs of a vmapped sweep sharded over ``devices`` forced CPU devices against the
    same batch of runs on one of them (in a child process: the device count is fixed when
    JAX starts)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=runtime.with_cpu_devices(os.environ.get("XLA_FLAGS", ""), devices))
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
    spec = mlp_spec(task, width, steps, seed)
    out = {"width": width, "steps": steps, "sizes": {}}
    for n in sizes:
        axes = {"seed": range(n // 8), "lr": list(np.linspace(0.01, 0.08, 8))}
        t = best_times({"sweep": lambda: td.sweep(spec, progress=False, **axes)},
                        repeats)["sweep"]
        out["sizes"][str(n)] = {"seconds": round(t, 4),
                                "run_steps_per_second": round(n * steps / t, 1)}
    first, last = (out["sizes"][str(n)]["run_steps_per_second"] for n in (sizes[0], sizes[-1]))
    out["speedup_per_run"] = round(last / first, 2)
    return out


def main(quick: bool = False, seed: int = 0) -> dict:
    repeats = 1 if quick else 2
    peak = matmul_rate(1024 if quick else 2048)
    cases = []
    for label, spec, run_counts in model_specs(quick, seed):
        for n in run_counts:
            case = bench_case(label, spec, n, repeats, seed)
            print(f"{label}, {n} runs: serial {case['serial_seconds']} s, "
                  + ", ".join(f"{k} x{v['speedup_over_serial']}"
                              for k, v in case["strategies"].items()),
                  file=sys.stderr, flush=True)
            for entry in [case] + list(case["strategies"].values()):
                key = "serial_gflops" if entry is case else "gflops"
                entry["fraction_of_matmul"] = round(entry[key] * 1e9 / peak, 3)
            cases.append(case)
    data_args = bench_data_as_arguments(1000 if quick else 10_000, 64, 20 if quick else 100,
                                        seed)
    print(f"data as arguments: HLO x{data_args['hlo_size_ratio_constants_over_arguments']} "
          f"smaller, compile x{data_args['compile_time_ratio_constants_over_arguments']} "
          "faster", file=sys.stderr)
    cores = bench_cores(8 if quick else 32, 20 if quick else 200, 64 if quick else 256,
                        repeats, seed)
    print(f"every core busy: {cores['runs']} runs on {cores['cpu_devices']} devices, sweep "
          f"x{cores['sweep_speedup_over_runs']} over td.run calls", file=sys.stderr)
    cores["sweep_fraction_of_matmul"] = round(cores["sweep_gflops"] * 1e9 / peak, 3)
    cache = None if quick else bench_compile_cache()
    digits = td.tasks.digits(n_train=512, n_test=256, loss="mse", seed=seed)
    checkpoint = bench_checkpoint(digits, 32 if quick else 64, 4 if quick else 16,
                                  20 if quick else 400, repeats, seed)
    print(f"checkpoint overhead x{checkpoint['checkpoint_overhead_ratio']}", file=sys.stderr)
    sharding = bench_sharding(32 if quick else 128, 8 if quick else 32, 10 if quick else 100,
                              repeats, seed)
    print(f"sharded over 4 CPU devices x{sharding['sharded_speedup']}", file=sys.stderr)
    if jax.default_backend() != "cpu":
        throughput = bench_throughput(digits, 256, 10 if quick else 200, repeats, seed)
    else:
        throughput = "not measured: the 1024-run throughput is for accelerators"
    return {
        "benchmark": "sweep",
        "summary": {
            "auto_speedup_over_serial": {f"{c['model']} x{c['runs']}":
                                         c["auto_speedup_over_serial"] for c in cases},
            "auto_fraction_of_matmul": {f"{c['model']} x{c['runs']}":
                                        c["strategies"][c["auto"]]["fraction_of_matmul"]
                                        for c in cases},
            "data_as_arguments": {k: data_args[k] for k in data_args if "ratio" in k},
            "cores_sweep_speedup_over_runs": cores["sweep_speedup_over_runs"],
            "cores_sweep_fraction_of_matmul": cores["sweep_fraction_of_matmul"],
            "second_process_compile_seconds": (None if cache is None else round(
                cache["second_process"]["compile_seconds"], 2)),
            "checkpoint_overhead_ratio": checkpoint["checkpoint_overhead_ratio"],
            "sharded_speedup_4_cpu_devices": sharding["sharded_speedup"],
        },
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "matmul_gflops": round(peak / 1e9, 2),
        "cases": cases,
        "data_as_arguments": data_args,
        "cores": cores,
        "compile_cache": cache if cache is not None else "not measured in --quick",
        "checkpoint": checkpoint,
        "sharding": sharding,
        "throughput": throughput,
        "versions": assembly.versions(),
    }
