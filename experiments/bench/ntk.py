"""``traindyn bench ntk``: the empirical NTK per method, against neural-tangents.

For the issue's dense MLP (erf, NTK parametrization, biases) on ``n`` random inputs, the full
``(n, n, O, O)`` block in float32, it reports, after the compile (best of ``repeats``, fewer
once a method has spent ``budget_s`` seconds in timed runs):

* the time of ``kernels.empirical_ntk`` for each method (``jacobian``, ``ntvp``,
  ``structured``) and for ``auto`` (with the cost model's estimates and choice), the
  peak temporary memory of each compiled program (XLA's ``memory_analysis``) and each
  block's largest difference from the Jacobian contraction's, relative to its largest
  entry;
* neural-tangents' ``empirical_ntk_fn`` on the same network and inputs for each of its
  implementations (Jacobian contraction, NTK-vector products, structured derivatives and
  its own auto), with ``vmap_axes=0`` and jitted as its documentation recommends, run in a
  subprocess with the interpreter named by ``NEURAL_TANGENTS_PYTHON`` (a Python with
  neural-tangents 0.6.5, jax 0.4.23, numpy<2; neural-tangents does not import on current
  JAX); which of its implementations won, and ``ours_over_theirs``, the time of our
  fastest method over that of theirs (below 1: ours is faster), and the same for
  structured derivatives against structured derivatives; "not measured" with the reason
  when the variable is unset or the run fails;
* the overhead of ``KernelObservables`` in a sweep: the time of a sweep with them over
  the same sweep without them (ratio measured in one process).

Both JAX versions are recorded. Timings are of one process on the machine it runs on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import dynamics as td
import kernels
from experiments.bench.timing import best_time

NT_SCRIPT = r"""
import importlib, json, sys, time
import jax, jax.numpy as jnp, numpy as np
# runs in the side environment only (this package never imports neural-tangents)
nt = importlib.import_module("neural_tangents")
stax = importlib.import_module("neural_tangents.stax")
cfg = json.loads(sys.argv[1])
layers = []
for _ in range(cfg["depth"]):
    layers += [stax.Dense(cfg["width"], W_std=1.0, b_std=0.1, parameterization="ntk"),
               stax.Erf()]
layers.append(stax.Dense(cfg["out_dim"], W_std=1.0, b_std=0.1, parameterization="ntk"))
init_fn, apply_fn, _ = stax.serial(*layers)
x = jnp.asarray(np.random.default_rng(0).normal(size=(cfg["n"], cfg["dim"])), jnp.float32)
_, params = init_fn(jax.random.PRNGKey(0), x.shape)
out = {"jax": jax.__version__, "neural_tangents": "0.6.5", "seconds": {}}
for name, impl in (("jacobian_contraction", 1), ("ntk_vector_products", 2),
                   ("structured_derivatives", 3), ("auto", 0)):
    fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0,
                                     implementation=impl))
    try:
        fn(x, None, params).block_until_ready()
        best, spent, k = float("inf"), 0.0, 0
        while k < cfg["repeats"] and (k < 2 or spent < cfg["budget_s"]):
            t = time.perf_counter(); fn(x, None, params).block_until_ready()
            dt = time.perf_counter() - t
            best, spent, k = min(best, dt), spent + dt, k + 1
        out["seconds"][name] = best
    except Exception as e:
        out["seconds"][name] = f"failed: {type(e).__name__}"
print(json.dumps(out))
"""


def _temp_bytes(compiled):
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # a backend without memory analysis
        return None


def _neural_tangents(cfg):
    python = os.environ.get("NEURAL_TANGENTS_PYTHON")
    if not python:
        return {"status": "not measured: NEURAL_TANGENTS_PYTHON is unset (a Python with "
                          "neural-tangents 0.6.5, jax 0.4.23, numpy<2)"}
    try:
        res = subprocess.run([python, "-c", NT_SCRIPT, json.dumps(cfg)], capture_output=True,
                             text=True, timeout=1800, env={**os.environ, "JAX_PLATFORMS": "cpu"}
                             if jax.default_backend() == "cpu" else None)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"status": f"not measured: {type(err).__name__}: {err}"}
    if res.returncode != 0:
        return {"status": "not measured: the subprocess failed: " + res.stderr[-500:]}
    return {"status": "measured", **json.loads(res.stdout.strip().splitlines()[-1])}


# The MLP (erf, 32 -> 512 -> 512 -> 10, n = 128) and a small stand-in for --quick
CONFIGS = {
    "quick": {"n": 16, "dim": 8, "width": 64, "depth": 2, "out_dim": 4, "repeats": 2,
              "budget_s": 1.0},
    "full": {"n": 128, "dim": 32, "width": 512, "depth": 2, "out_dim": 10, "repeats": 7,
             "budget_s": 10.0},
}


def main(quick: bool = False, seed: int = 0) -> dict:
    cfg = CONFIGS["quick" if quick else "full"]
    result = ours_per_method(cfg, seed)
    nt_res = _neural_tangents(cfg)
    if nt_res.get("status") == "measured":
        times = {k: v for k, v in nt_res["seconds"].items() if isinstance(v, float)}
        if times:
            best_nt = min(times, key=times.get)
            nt_res["best"] = best_nt
            ours = result["ours"]
            fastest = min(ours[m]["seconds"] for m in ours)  # auto included
            nt_res["ours_over_theirs"] = fastest / times[best_nt]
            nt_res["ours_auto_over_theirs"] = ours["auto"]["seconds"] / times[best_nt]
            if "structured_derivatives" in times:
                nt_res["structured_over_theirs_structured"] = (
                    ours["structured"]["seconds"] / times["structured_derivatives"])
    result["neural_tangents"] = nt_res
    result["observables_overhead"] = _observable_overhead(quick, seed)
    return result


def ours_per_method(cfg: dict, seed: int) -> dict:
    """``kernels.empirical_ntk`` of the erf MLP of ``cfg`` (``n``, ``dim``, ``width``,
    ``depth``, ``out_dim``, ``repeats``, ``budget_s``) on seeded normal inputs, float32, for
    each method and ``auto``: best time after the compile, peak temporary memory, largest
    difference from the Jacobian contraction relative to its largest entry; and the cost
    model's choice against the fastest measured."""
    model = td.MLP(width=cfg["width"], depth=cfg["depth"], out_dim=cfg["out_dim"],
                   activation="erf", sigma_b=0.1)
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(cfg["n"], cfg["dim"])),
                    jnp.float32)
    params = model.init(jax.random.PRNGKey(seed), x)

    def f(p, xx):
        return model.apply(p, xx)

    ours, blocks = {}, {}
    for method in ("jacobian", "ntvp", "structured", "auto"):
        fn = jax.jit(lambda p, xx, m=method: kernels.empirical_ntk(f, p, xx, method=m))
        compiled = fn.lower(params, x).compile()
        ours[method] = {"seconds": best_time(lambda: compiled(params, x), cfg["repeats"],
                                             cfg["budget_s"]),
                        "temp_bytes": _temp_bytes(compiled)}
        blocks[method] = np.asarray(compiled(params, x))
    scale = np.max(np.abs(blocks["jacobian"]))
    for method in ours:  # float32 agreement with the Jacobian contraction
        ours[method]["max_abs_diff_over_max_vs_jacobian"] = float(
            np.max(np.abs(blocks[method] - blocks["jacobian"])) / scale)
    cost = kernels.ntk_cost(f, params, x)
    methods = ("jacobian", "ntvp", "structured")
    best_ours = min(methods, key=lambda m: ours[m]["seconds"])
    return {
        "config": cfg,
        "versions": {"jax": jax.__version__, "backend": jax.default_backend()},
        "ours": ours,
        "auto": {"choice": cost["choice"], "estimated_flops": cost["flops"],
                 "best_measured": best_ours,
                 "auto_over_best_time": ours["auto"]["seconds"]
                 / ours[best_ours]["seconds"]},
    }


def _observable_overhead(quick, seed):
    task = td.tasks.make("teacher_student_mlp", n_train=64 if quick else 256, n_test=64,
                         dim=8, seed=seed)
    model = td.MLP(width=64 if quick else 256, depth=2, activation="tanh")
    steps = 40 if quick else 400
    base = dict(model=model, task=task, steps=steps, log_every=10)
    obs = kernels.KernelObservables(probe_size=16 if quick else 32)
    times = {}
    for name, observables in (("without", ("default",)), ("with", ("default", obs))):
        spec = td.Spec(**base, observables=observables)
        times[name] = best_time(lambda s=spec: td.sweep(s, seed=[0, 1, 2, 3]).train_loss.values,
                            1 if quick else 2)
    return {"runs": 4, "steps": steps, "log_every": 10, "probe_size": obs.probe_size,
            "seconds": times, "ratio_with_over_without": times["with"] / times["without"]}


if __name__ == "__main__":
    print(json.dumps(main(quick="--quick" in sys.argv), indent=2))
