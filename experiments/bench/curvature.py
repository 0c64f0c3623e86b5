"""``traindyn bench curvature``: what curvature costs.

* ``hvp_in_gradients``: the time of one Hessian-vector product (forward-over-reverse)
  over that of one gradient, full batch, jitted (theory: 2-3; Pearlmutter 1994);
* ``hvps_to_1e-3``: operator products that Lanczos (``curvature.lanczos``) and power
  iteration need to reach relative error 1e-3 on ``lambda_max`` (the reference: Lanczos
  with a converged residual);
* ``sharpness_overhead``: a vmapped sweep with ``Sharpness`` at every log point, logging
  every 10 steps, over the same sweep without it (compiled; wall time), for 20 cold
  Lanczos steps and for warm starts of 4 and 6 steps (``Sharpness(warm_iterations=...)``),
  with each one's largest relative error against a cold 60-step Lanczos;
* ``matfree``: our ``tridiagonalize`` against ``matfree.decomp.tridiag_sym`` (full
  reorthogonalisation), same operator, same number of steps (when matfree is installed);
* ``pyhessian``: our top eigenvalue against PyHessian's (power iteration, its defaults
  ``tol=1e-3``, ``maxIter=100``) on the same MLP, weights and data in PyTorch (CPU), at
  equal accuracy: our Lanczos with the fewest steps whose error is at most PyHessian's.
  PyTorch and pyhessian are not traindyn dependencies: set ``PYHESSIAN_PYTHON`` to an
  interpreter that has them (``scripts/pyhessian_top_eigenvalue.py`` of the source repository is the script
  it runs); without it the figure is reported as not measured.

Times are medians of interleaved repeats, taken in one process; ratios are what to
compare across machines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import tempfile
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

import dynamics as td
from dynamics import curvature, losses
from dynamics.curvature import lanczos, operators
from experiments.bench.timing import median_times, time_calls

TARGET = 1e-3
# PyHessian's side, run by an interpreter that has torch and pyhessian (not shipped)
SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "pyhessian_top_eigenvalue.py"


def bench_problem(quick: bool, seed: int):
    n, dim, width = (64, 8, 16) if quick else (512, 16, 128)
    task = td.tasks.teacher_student_linear(dim=dim, n_train=n, n_test=16, out_dim=1, seed=seed)
    model = td.MLP(width=width, depth=2, out_dim=1, activation="tanh")
    spec = td.Spec(model, task, optimizer=td.optimizers.sgd(0.5), steps=40 if quick else 200,
                   log_every=10)
    params = td.init_params(spec, seed=seed)
    x, y = jnp.asarray(task.x_train), jnp.asarray(task.y_train)
    return spec, params, x, y


def _first_below(errors) -> int | None:
    hits = np.nonzero(np.asarray(errors) <= TARGET)[0]
    return int(hits[0]) + 1 if hits.size else None


def _lanczos_errors(flat_matvec, n, order, reference, key):
    v0 = jax.random.normal(key, (n,), jnp.float32)
    tri = jax.jit(lambda v: lanczos.tridiagonalize(flat_matvec, v, order))(v0)
    a, b = np.asarray(tri.alphas, np.float64), np.asarray(tri.betas, np.float64)
    tops = [np.linalg.eigvalsh(np.diag(a[:m]) + np.diag(b[: m - 1], 1) + np.diag(b[: m - 1], -1))[-1]
            for m in range(1, order + 1)]
    return np.abs(np.asarray(tops) - reference) / abs(reference)


def main(quick: bool = False, seed: int = 0) -> dict:
    repeats = 3 if quick else 7
    spec, params, x, y = bench_problem(quick, seed)
    model = spec.model

    def loss(p):
        return losses.mse(model.apply(p, x), y)

    n_params = sum(a.size for a in jax.tree.leaves(params))
    v = jax.tree.map(jnp.ones_like, params)
    grad = jax.jit(jax.grad(loss))
    hvp = jax.jit(lambda p, t: operators.hvp(loss, p, t))
    t = median_times({"grad": lambda: grad(params), "hvp": lambda: hvp(params, v)}, repeats * 3)
    out: dict = {
        "problem": {"n_train": int(x.shape[0]), "in_dim": int(x.shape[1]),
                    "width": model.width, "depth": model.depth, "parameters": int(n_params),
                    "activation": model.activation, "dtype": str(x.dtype)},
        "hvp_in_gradients": t["hvp"] / t["grad"],
        "seconds": {"grad": t["grad"], "hvp": t["hvp"]},
    }

    # -- products to reach 1e-3 on lambda_max -----------------------------------------
    matvec = operators.training_matvec("hessian", lambda p, r: model.apply(p, x), losses.mse,
                                       y, params)
    flat_matvec, flat, _ = lanczos.flat_operator(matvec, params)
    ref_order = min(120, n_params)
    ref = jax.jit(lambda k: lanczos.eigenpairs(matvec, params, k, order=ref_order))(
        jax.random.PRNGKey(seed + 1))
    reference = float(ref.values[0])
    order = min(60, n_params)
    key = jax.random.PRNGKey(seed)
    lanczos_err = _lanczos_errors(flat_matvec, flat.shape[0], order, reference, key)
    iters = 300
    _, _, history = jax.jit(lambda k: lanczos.power_iteration(matvec, params, k,
                                                              iterations=iters))(key)
    power_err = np.abs(np.asarray(history, np.float64) - reference) / abs(reference)
    out["lambda_max"] = {"reference": reference,
                         "reference_relative_residual": float(ref.relative_residuals[0]),
                         "reference_order": ref_order}
    out["hvps_to_1e-3"] = {"lanczos": _first_below(lanczos_err),
                           "power_iteration": _first_below(power_err),
                           "max_tried": {"lanczos": order, "power_iteration": iters}}

    # -- our Lanczos vs matfree's --------------------------------------------------------
    out["matfree"] = _versus_matfree(flat_matvec, flat.shape[0], min(20, n_params), reference,
                                     key, repeats)

    # -- sharpness every 10 steps in a sweep, cold and warm-started ---------------------------
    out["sharpness_overhead"] = sharpness_overhead(spec, 2 if quick else 4, 1 if quick else 3)

    # -- against PyHessian -------------------------------------------------------------------
    out["pyhessian"] = _versus_pyhessian(spec, params, x, y, matvec, lanczos_err, reference,
                                         key, repeats)
    return out


def sharpness_overhead(spec: td.Spec, runs: int, repeats: int) -> dict:
    """A vmapped sweep of ``runs`` seeds of ``spec`` with ``Sharpness`` at every log point
    over the same sweep without it (median wall time of ``repeats`` after the compile), for
    20 cold Lanczos steps and warm starts of 4 and 6 steps, with each one's largest relative
    error against a cold 60-step Lanczos (``TopEigenvalues``)."""
    seeds = range(runs)
    base = dataclasses.replace(spec, strategy="vmap")

    def tracked(observable):
        return dataclasses.replace(base, observables=("default", observable))

    trackers = {"cold_20": curvature.Sharpness(iterations=20),
                "warm_4": curvature.Sharpness(iterations=20, warm_iterations=4),
                "warm_6": curvature.Sharpness(iterations=20, warm_iterations=6)}
    fns = {"without": lambda: td.sweep(base, seed=seeds).train_loss.values}
    fns.update({name: (lambda s=tracked(obs): td.sweep(s, seed=seeds).sharpness.values)
                for name, obs in trackers.items()})
    t = time_calls(fns, repeats)
    reference = td.sweep(tracked(curvature.TopEigenvalues(k=1, iterations=60)),
                         seed=seeds).top_eigenvalues.values[..., 0]
    return {
        "runs": runs, "steps": spec.steps, "log_every": spec.log_every,
        "seconds": {name: timing.median for name, timing in t.items()},
        "ratio": {name: t[name].median / t["without"].median for name in trackers},
        "max_relative_error_vs_cold_60": {
            name: float(np.max(np.abs(t[name].result / reference - 1))) for name in trackers}}


def _versus_matfree(flat_matvec, n, order, reference, key, repeats):
    try:
        from matfree import decomp
    except ImportError:
        return {"measured": False, "reason": "matfree is not installed (pip install matfree)"}
    v0 = jax.random.normal(key, (n,), jnp.float32)
    tridiag = decomp.tridiag_sym(order, reortho="full")
    theirs = jax.jit(lambda v: jnp.linalg.eigvalsh(tridiag(lambda w: flat_matvec(w), v).J_small)[-1])
    ours = jax.jit(lambda v: lanczos.ritz(lanczos.tridiagonalize(flat_matvec, v, order))[0][-1])
    t = median_times({"ours": lambda: ours(v0), "matfree": lambda: theirs(v0)}, repeats)
    return {
        "measured": True, "version": metadata.version("matfree"), "order": order,
        "seconds": t, "ratio_matfree_over_ours": t["matfree"] / t["ours"],
        "relative_error": {"ours": abs(float(ours(v0)) - reference) / abs(reference),
                           "matfree": abs(float(theirs(v0)) - reference) / abs(reference)},
    }


def _versus_pyhessian(spec, params, x, y, matvec, lanczos_err, reference, key, repeats):
    python = os.environ.get("PYHESSIAN_PYTHON")
    if not python:
        return {"measured": False,
                "reason": "PYHESSIAN_PYTHON is not set (an interpreter with torch and pyhessian)"}
    model = spec.model
    scales = [layer.scale for layer in model.layers(x.shape[1])]
    arrays = {"x": np.asarray(x), "y": np.asarray(y), "n_layers": np.asarray(len(params)),
              "multipliers": np.asarray([s.multiplier for s in scales], np.float32),
              "bias_multiplier": np.asarray(scales[0].bias_multiplier, np.float32)}
    if len({s.bias_multiplier for s in scales}) != 1:
        return {"measured": False, "reason": "per-layer bias multipliers differ"}
    for i, layer in enumerate(params):
        arrays[f"w{i}"] = np.asarray(layer["w"])
        arrays[f"b{i}"] = np.asarray(layer["b"])
    script = SCRIPT
    if not script.exists():
        return {"measured": False, "reason": f"{script} is not here (it ships with the "
                "source repository, not with the installed package)"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "problem.npz")
        np.savez(path, **arrays)
        proc = subprocess.run([python, str(script), path], capture_output=True, text=True,
                              timeout=600)
    if proc.returncode != 0:
        return {"measured": False, "reason": f"the PyHessian script failed: {proc.stderr[-500:]}"}
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    error = abs(theirs["eigenvalue"] - reference) / abs(reference)
    hits = np.nonzero(lanczos_err <= error)[0]
    order = int(hits[0]) + 1 if hits.size else len(lanczos_err)
    ours = jax.jit(lambda k: lanczos.eigenpairs(matvec, params, k, order=order).values[0])
    t = median_times({"ours": lambda: ours(key)}, repeats)
    return {
        "measured": True,
        "pyhessian": theirs,
        "pyhessian_relative_error": error,
        "ours": {"lanczos_order": order, "seconds": t["ours"],
                 "relative_error": float(lanczos_err[order - 1]),
                 "eigenvalue": float(ours(key))},
        "ratio_pyhessian_over_ours": theirs["seconds"] / t["ours"],
    }
