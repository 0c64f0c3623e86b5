r"""``traindyn bench dmft``: what the DMFT solvers cost, and what they save.

The network is the ``mup`` MLP of ``kernels.dmft`` (Bordelon & Pehlevan 2022, eq. 1-3:
no biases, one output, ``gamma0 = 1``, centred) on a tanh teacher (``teacher_student_mlp``,
``D = 8``), trained by full-batch GD with ``lr = 0.5`` (two layers) or ``0.1`` (deeper;
at ``0.5`` the deep linear network diverges at small ``P``, the solver with it). Every
time is the best of ``repeats`` calls after a warm-up call that compiles (``solve``
returns host arrays, so a call has finished when it returns); times per iteration are the
gaps between the iterations' progress lines (``solve(..., progress=True)``, which prints
once an iteration's change has been computed); every ratio is taken in one process.

(a) ``solve_time``:

* ``two_layer``: ``P = 20`` examples, ``T = 200`` steps, tanh, for several sample counts
  ``S`` (the default ``mc_error=True`` re-solves with ``S/2``; that is included);
* ``deep_monte_carlo``: ``L = 3``, ``P = 10``, ``T = 100``, ``S = 1000``. One iteration
  costs about ``(1/2) S N_g^3 (2L - 2)`` multiply-adds, ``N_g = (T+1) n`` (the causal
  Jacobians of the fields, ``kernels.dmft.deep``): about ``2e12`` here. On an
  accelerator one iteration is measured at full size; on a CPU it is not (hours), and the
  time per iteration is measured at ``T`` in ``monte_carlo_steps`` (same ``L``, ``P``,
  ``S``) and extrapolated to ``T = 100`` with the fitted exponent (reported as an estimate,
  with how it was made). The iteration counts are measured on complete solves at small
  ``T`` with fewer samples, per window of the causal continuation (``ceil((T+1)/window)``
  windows): the equations are causal in time, so within a window the iteration (a
  deterministic map: the noise is fixed) reaches the window's tolerance after a nearly
  fixed number of iterations, whatever ``S``; the last window, which iterates to the
  final ``tol``, takes more. The solve's estimate adds, per window, its iterations times
  the time of one on the window's own grid (``kernels.dmft.deep.window_sizes``).

(b) ``versus_network``: the two-layer case of (a) at ``S = dmft_samples`` against a
``dynamics.sweep`` of finite networks (same spec, float64 like the solver). The reference
is the DMFT with ``reference_samples`` (independent samples). For a loss curve ``L`` the
error is ``max_t |L(t) - L_ref(t)| / max_t L_ref(t)``, the normalisation of the solver's
``mc_error_loss``. For each width ``N`` and ensemble size ``k`` the network's error is
that of the mean over ``k`` seeds, RMS over the disjoint groups of ``k`` seeds out of
``seeds``. Two targets: the solver's own estimate ``mc_error_loss`` and the DMFT's
measured error against the reference. For each, the cheapest ``(N, k)`` (least ``N k``)
within it is timed (one sweep of ``k`` seeds) against the DMFT solve (with its default
``mc_error=True``; the time without it is reported too): ``network_over_dmft_time``.

(c) ``scaling``: solve times over ``P`` and ``T`` with fitted log-log exponents:
``two_layer`` (cost ``S T n^2``), ``deep_linear`` (``O(L N_g^3)`` per iteration, iterations
growing with the windows) and ``monte_carlo`` per iteration (``O(S N_g^2 n)``, i.e.
exponent 3 in ``T + 1`` and in ``P``; the ``T`` series is (a)'s).

(d) ``one_iteration``: one ``monte_carlo`` iteration at ``L = 3``, ``P = 10``,
``S = 1000``, ``T = 20`` with the causal (recursive) responses against the dense
``jax.jacfwd`` formulation they replaced (their largest relative gap, and the time ratio), both against
a ``2048^3`` float64 matmul timed in the same process, interleaved; the causal form alone
at ``T = 40``, extrapolated to ``T = 100`` (labelled as such).

Times are of one process on the machine it runs on; the JSON records the backend, the
cores, the load average and the BLAS thread settings (on a loaded CPU, multi-threaded
LAPACK calls can cost far more than their flops).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import platform
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

import dynamics as td
from dynamics import sweeps
from experiments.bench.timing import time_calls
from experiments.common import loglog_slope
from kernels import dmft
from kernels.dmft import deep
from kernels.dmft.solve import default_tol

LR = 0.5  # two-layer runs
LR_DEEP = 0.1  # depth >= 2 (lr = 0.5 makes the deep linear network diverge at small P)
GAMMA0 = 1.0
DIM = 8

FULL = {
    "repeats": 3,
    "two_layer": {"n_train": 20, "steps": 200, "samples": [1024, 4096, 16384]},
    "deep": {"depth": 3, "n_train": 10, "steps": 100, "samples": 1000, "window": 4,
             "monte_carlo_steps": [5, 10, 20], "count_steps": [4, 8, 16],
             "count_samples": 100},
    "iteration": {"depth": 3, "n_train": 10, "samples": 1000, "steps": [20], "repeats": 3,
                  "causal_only_steps": [40], "target_steps": 100},
    "versus": {"n_train": 20, "steps": 200, "dmft_samples": 4096,
               "reference_samples": 2**18, "widths": [256, 1024, 4096], "seeds": 32},
    "scaling": {"two_layer_n_train": [10, 20, 40, 80], "two_layer_steps": [50, 100, 200, 400],
                "two_layer_samples": 4096, "deep_linear_depth": 2,
                "deep_linear_n_train": [5, 10, 20], "deep_linear_steps": [10, 20, 40],
                "monte_carlo_n_train": [4, 7, 10], "monte_carlo_at_steps": 10},
}
QUICK = {
    "repeats": 1,
    "two_layer": {"n_train": 6, "steps": 20, "samples": [256, 1024]},
    "deep": {"depth": 2, "n_train": 3, "steps": 10, "samples": 64, "window": 4,
             "monte_carlo_steps": [2, 4], "count_steps": [2, 4], "count_samples": 64},
    "iteration": {"depth": 3, "n_train": 3, "samples": 40, "steps": [4], "repeats": 1,
                  "causal_only_steps": [6], "target_steps": 10},
    "versus": {"n_train": 6, "steps": 20, "dmft_samples": 1024,
               "reference_samples": 2**13, "widths": [64, 256], "seeds": 8},
    "scaling": {"two_layer_n_train": [4, 8], "two_layer_steps": [10, 20],
                "two_layer_samples": 512, "deep_linear_depth": 2,
                "deep_linear_n_train": [2, 4], "deep_linear_steps": [4, 8],
                "monte_carlo_n_train": [2, 3], "monte_carlo_at_steps": 4},
}


def _data(n_train, seed):
    task = td.tasks.teacher_student_mlp(dim=DIM, n_train=n_train, n_test=1, seed=seed)
    return (np.asarray(task.x_train, np.float64), np.asarray(task.y_train, np.float64)[:, 0],
            task)


def _model(depth, activation, width=128):
    return td.MLP(width=width, depth=depth, activation=activation, parametrization="mup",
                  bias=False, gamma0=GAMMA0, center=True)


def _loss_error(curve, reference):
    """``max_t |L - L_ref| / max_t L_ref``: the normalisation of ``mc_error_loss``."""
    curve, reference = np.asarray(curve), np.asarray(reference)
    return float(np.max(np.abs(curve - reference)) / np.max(np.abs(reference)))


def _windows(steps, window):
    return int(math.ceil((steps + 1) / window))


# -- (a) solve times ------------------------------------------------------------------


def _two_layer_times(cfg, repeats, seed):
    x, y, _ = _data(cfg["n_train"], seed)
    model = _model(1, "tanh")
    rows = []
    for s in cfg["samples"]:
        best, first, ds = _timed(lambda s=s: dmft.solve(model, x, y, lr=LR, steps=cfg["steps"],
                                                        samples=s, seed=seed), repeats)
        rows.append({"samples": s, "seconds": best, "first_call_seconds": first,
                     "mc_error_loss": float(ds.attrs["mc_error_loss"])})
    samples = [r["samples"] for r in rows]
    return {"n_train": cfg["n_train"], "steps": cfg["steps"], "activation": "tanh",
            "by_samples": rows,
            "exponent_in_samples": loglog_slope(samples, [r["seconds"] for r in rows])}


class _IterationClock(io.StringIO):
    """Stands in for stdout under ``solve(..., progress=True)``, which prints a line after
    each iteration (after its change has been computed, so the iteration has finished):
    the times of those lines."""

    def __init__(self):
        super().__init__()
        self.stamps = []

    def write(self, text):
        if text.startswith("dmft iteration"):
            self.stamps.append(time.perf_counter())
        return len(text)


def _solve_clocked(*args, **kwargs):
    """``solve`` with the wall time of every iteration: ``(ds, seconds, per_iteration)``;
    an iteration's time is the gap between consecutive progress lines."""
    clock = _IterationClock()
    start = time.perf_counter()
    with contextlib.redirect_stdout(clock):
        ds = dmft.solve(*args, progress=True, **kwargs)
    seconds = time.perf_counter() - start
    return ds, seconds, np.diff(clock.stamps).tolist()


def _mc_iteration_seconds(model, x, y, steps, samples, window, seed):
    """One monte_carlo iteration: the fastest of the iterations 2 and 3 of a call with
    ``max_iter=3``, after a warm-up call with ``max_iter=1`` (which compiles)."""
    kw = dict(lr=LR_DEEP, steps=steps, solver="monte_carlo", samples=samples, seed=seed,
              window=window, mc_error=False)
    with warnings.catch_warnings():  # stopping after 1 or 3 iterations: not converged
        warnings.simplefilter("ignore", RuntimeWarning)
        start = time.perf_counter()
        dmft.solve(model, x, y, max_iter=1, **kw)
        first = time.perf_counter() - start
        _, _, per = _solve_clocked(model, x, y, max_iter=3, **kw)
    return {"seconds_per_iteration": min(per), "first_call_seconds": first}


def _deep_times(cfg, seed):
    depth, n_train, steps, s = cfg["depth"], cfg["n_train"], cfg["steps"], cfg["samples"]
    x, y, _ = _data(n_train, seed)
    model = _model(depth, "tanh")
    ng = (steps + 1) * (n_train)
    tol = default_tol("monte_carlo", s)  # the full size's; the counts below use it too
    out = {"depth": depth, "n_train": n_train, "steps": steps, "samples": s,
           "window": cfg["window"], "activation": "tanh", "tol": tol, "dtype": "float64",
           "multiply_adds_per_iteration": float(s * ng**3 * (2 * depth - 2) / 2)}
    rows = []
    for t in cfg["monte_carlo_steps"]:
        r = _mc_iteration_seconds(model, x, y, t, s, cfg["window"], seed)
        rows.append({"steps": t, **r})
        print(f"monte_carlo T={t}: {r['seconds_per_iteration']:.3g} s per iteration",
              file=sys.stderr, flush=True)
    exponent = loglog_slope([r["steps"] + 1 for r in rows],
                            [r["seconds_per_iteration"] for r in rows])
    last = rows[-1]
    per_iter = {"measured_at_smaller_steps": rows, "exponent_in_steps_plus_1": exponent}
    if jax.default_backend() != "cpu":
        r = _mc_iteration_seconds(model, x, y, steps, s, cfg["window"], seed)
        per_iter["full_size"] = {"seconds": r["seconds_per_iteration"], "how": "measured",
                                 **r}
    else:
        per_iter["full_size"] = {
            "seconds": last["seconds_per_iteration"]
            * ((steps + 1) / (last["steps"] + 1)) ** exponent,
            "seconds_cubic": last["seconds_per_iteration"]
            * ((steps + 1) / (last["steps"] + 1)) ** 3,
            "how": (f"not measured on CPU (estimated hours); extrapolated from T="
                    f"{last['steps']} with the fitted exponent (seconds) and with the "
                    "theoretical exponent 3 (seconds_cubic)")}
    out["per_iteration"] = per_iter

    counts = []
    for t in cfg["count_steps"]:
        ds, seconds, per = _solve_clocked(model, x, y, lr=LR_DEEP, steps=t,
                                          solver="monte_carlo", samples=cfg["count_samples"],
                                          seed=seed, window=cfg["window"], mc_error=False,
                                          tol=tol)
        counts.append({"steps": t, "samples": cfg["count_samples"],
                       "windows": _windows(t, cfg["window"]),
                       "iterations": int(ds.attrs["iterations"]),
                       "window_iterations": json.loads(ds.attrs["window_iterations"]),
                       "converged": bool(ds.attrs["converged"]),
                       "seconds_with_compile": seconds,
                       "median_seconds_per_iteration": float(np.median(per))})
    last_window = float(np.mean([c["window_iterations"][-1] for c in counts]))
    earlier = [i for c in counts for i in c["window_iterations"][:-1]]
    earlier = float(np.mean(earlier)) if earlier else last_window  # one window each
    full_windows = _windows(steps, cfg["window"])
    sizes = deep.window_sizes(steps + 1, n_train, deep.window_bounds(steps + 1, full_windows))
    out["iterations"] = {
        "measured_at_smaller_steps": counts,
        "per_earlier_window": earlier, "last_window": last_window,
        "full_size": {"iterations": earlier * (full_windows - 1) + last_window,
                      "windows": full_windows, "window_sizes": sizes,
                      "how": "estimated: the mean iterations of the earlier windows and of "
                             "the last at the smaller T"},
    }
    full = per_iter["full_size"]["seconds"]
    # an iteration on a window's grid of ``size`` steps, at the fitted exponent
    on_grid = [full * (size / (steps + 1)) ** exponent for size in sizes]
    out["full_size_solve_seconds"] = {
        "seconds": earlier * sum(on_grid[:-1]) + last_window * on_grid[-1],
        "how": "estimate: the iterations of each window times the seconds of an iteration "
               "on its grid (the full size's, scaled by the fitted exponent), compiles "
               "excluded"}
    return out


def full_solve(cfg, seed):
    """A complete ``monte_carlo`` solve of ``cfg`` (``depth``, ``n_train``, ``steps``,
    ``samples``, ``window``; tanh, ``mc_error=False``), timed after a warm-up call with
    ``max_iter=1`` that compiles the first window's grid (the larger grids of later
    windows, ``kernels.dmft.deep.window_sizes``, compile within the timed solve, as they
    do for a user): wall seconds, iterations, convergence and the median time per
    iteration (the paper-scale solve, measured where the machine allows it)."""
    x, y, _ = _data(cfg["n_train"], seed)
    model = _model(cfg["depth"], "tanh")
    kw = dict(lr=LR_DEEP, steps=cfg["steps"], solver="monte_carlo", samples=cfg["samples"],
              seed=seed, window=cfg["window"], mc_error=False)
    start = time.perf_counter()
    with warnings.catch_warnings():  # one iteration: not converged
        warnings.simplefilter("ignore", RuntimeWarning)
        dmft.solve(model, x, y, max_iter=1, **kw)
    first = time.perf_counter() - start
    ds, seconds, per = _solve_clocked(model, x, y, **kw)
    return {"depth": cfg["depth"], "n_train": cfg["n_train"], "steps": cfg["steps"],
            "samples": cfg["samples"], "window": cfg["window"], "activation": "tanh",
            "dtype": "float64", "seconds": seconds, "first_call_seconds": first,
            "iterations": int(ds.attrs["iterations"]), "converged": bool(ds.attrs["converged"]),
            "median_seconds_per_iteration": float(np.median(per)) if per else None,
            "final_train_loss": float(ds.train_loss.values[-1])}


# -- (d) one iteration: causal responses against dense jacfwd, and a matmul ----------------


def _matmul(size=2048):
    """A jitted ``size^3`` float64 matrix product of seeded operands, as a zero-argument
    function (the yardstick the DMFT's cost is measured in)."""
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.standard_normal((size, size))) for _ in range(2))
    product = jax.jit(jnp.matmul)
    return lambda: product(a, b)


def _timed(fn, repeats):
    """``(best seconds, first-call seconds, last result)`` (``experiments.bench.timing``)."""
    t = time_calls({"fn": fn}, repeats)["fn"]
    return t.best, t.first, t.result


def one_iteration(cfg, seed):
    """One ``monte_carlo`` iteration (``kernels.dmft.deep.iterate``, float64, tanh, from
    the state after one iteration, so that the responses are non-zero) with the causal
    recursive responses and with the dense ``jax.jacfwd`` reference, timed interleaved
    (best of ``repeats``, each after a compiling call) together with a 2048^3 float64
    matmul in the same process; their largest relative gap over the state's leaves. At
    ``causal_only_steps`` the causal form alone, and the fitted exponent in ``T + 1``
    extrapolates it to ``target_steps`` (labelled as an extrapolation)."""
    x, y, _ = _data(cfg["n_train"], seed)
    model = _model(cfg["depth"], "tanh")
    dt = jnp.float64

    def setup(steps):
        problem = dmft.make_problem(model, x, y, lr=LR_DEEP, steps=steps, log_every=1,
                               x_test=None, y_test=None, method="gd", substeps=1,
                               hparams=None)
        noise = deep.make_noise(jax.random.PRNGKey(seed), problem, cfg["samples"], dt)
        args, kw = deep.iteration_arguments(problem, dt, solver="monte_carlo",
                                            damping=1.0, batch=16)
        args = (*args, steps + 1)
        state, _ = deep.iterate(deep.initial_state(problem, dt), noise, *args, **kw)
        return lambda responses: jax.block_until_ready(
            deep.iterate(state, noise, *args, responses=responses, **kw))

    rows = []
    with jax.enable_x64(True), threadpoolctl.threadpool_limits(1, user_api="blas"):
        for steps in cfg["steps"] + cfg["causal_only_steps"]:
            one = setup(steps)
            kinds = ["causal"] + (["jacfwd"] if steps in cfg["steps"] else [])
            fns = {k: (lambda k=k: one(k)) for k in kinds}
            timings = time_calls({**fns, "matmul": _matmul()}, cfg["repeats"])
            best = {k: t.best for k, t in timings.items()}
            first = {k: (timings[k].first, timings[k].result) for k in kinds}
            row = {"steps": steps, "grid_points": (steps + 1) * cfg["n_train"],
                   "causal_seconds": best["causal"], "matmul_2048_seconds": best["matmul"],
                   "causal_over_matmul": best["causal"] / best["matmul"],
                   "causal_first_call_seconds": first["causal"][0]}
            if "jacfwd" in kinds:
                new, old = first["causal"][1][0], first["jacfwd"][1][0]
                gap = max(float(jnp.max(jnp.abs(new[k] - old[k])) / jnp.max(jnp.abs(old[k])))
                          for k in old if old[k].size)
                row.update({"jacfwd_seconds": best["jacfwd"],
                            "jacfwd_over_matmul": best["jacfwd"] / best["matmul"],
                            "jacfwd_over_causal": best["jacfwd"] / best["causal"],
                            "jacfwd_first_call_seconds": first["jacfwd"][0],
                            "largest_relative_gap": gap})
            rows.append(row)
            print(f"iteration T={steps}: " + ", ".join(
                f"{k} {v:.3g} s" for k, v in best.items()), file=sys.stderr, flush=True)
    exponent = loglog_slope([r["steps"] + 1 for r in rows],
                            [r["causal_seconds"] for r in rows])
    last = rows[-1]
    target = cfg["target_steps"]
    seconds = last["causal_seconds"] * ((target + 1) / (last["steps"] + 1)) ** exponent
    return {"depth": cfg["depth"], "n_train": cfg["n_train"], "samples": cfg["samples"],
            "activation": "tanh", "dtype": "float64", "batch": 16, "measured": rows,
            "causal_exponent_in_steps_plus_1": exponent,
            "causal_at_target_steps": {
                "steps": target, "seconds": seconds,
                "over_matmul": seconds / last["matmul_2048_seconds"],
                "how": f"extrapolated from T={last['steps']} with the fitted exponent in "
                       "T + 1 of the measured rows, not measured"}}


# -- (b) against a sweep of finite networks ------------------------------------------


def _versus_network(cfg, repeats, seed):
    _, _, task = _data(cfg["n_train"], seed)
    task = task.astype("float64")
    model = _model(1, "tanh")
    spec = td.Spec(model=model, task=task, steps=cfg["steps"], log_every=1,
                   optimizer=td.optimizers.sgd(LR), observables=("loss",))
    reference = dmft.solve_spec(spec, samples=cfg["reference_samples"], seed=seed + 1000)
    l_ref = reference.train_loss.values
    dmft_seconds, _, ds = _timed(lambda: dmft.solve_spec(spec, samples=cfg["dmft_samples"],
                                                         seed=seed), repeats)
    target = float(ds.attrs["mc_error_loss"])
    seeds = cfg["seeds"]
    sizes = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= seeds and seeds % k == 0]
    table = []
    for width in cfg["widths"]:
        sim = td.sweep(spec, seed=range(seeds), width=[width])
        losses = sim.train_loss.sel(width=width).values  # (seed, step)
        for k in sizes:
            groups = losses.reshape(seeds // k, k, -1).mean(1)
            errs = [_loss_error(g, l_ref) for g in groups]
            table.append({"width": width, "seeds": k, "groups": len(errs),
                          "error_rms": float(np.sqrt(np.mean(np.square(errs))))})
    actual = _loss_error(ds.train_loss.values, l_ref)
    no_error_seconds, _, _ = _timed(lambda: dmft.solve_spec(
        spec, samples=cfg["dmft_samples"], seed=seed, mc_error=False), repeats)
    out = {"n_train": cfg["n_train"], "steps": cfg["steps"], "dtype": "float64",
           "dmft_samples": cfg["dmft_samples"], "reference_samples": cfg["reference_samples"],
           "dmft_mc_error_loss": target, "dmft_error_vs_reference": actual,
           "reference_mc_error_loss": float(reference.attrs["mc_error_loss"]),
           "dmft_seconds": dmft_seconds, "dmft_seconds_without_mc_error": no_error_seconds,
           "network_errors": table, "by_target": {}}
    timed = {}
    for name, level in (("mc_error_loss", target), ("error_vs_reference", actual)):
        within = [r for r in table if r["error_rms"] <= level]
        if not within:
            out["by_target"][name] = {"target": level, "reached": False,
                                      "best_network": min(table,
                                                          key=lambda r: r["error_rms"])}
            continue
        pick = min(within, key=lambda r: (r["width"] * r["seeds"], r["error_rms"]))
        key = (pick["width"], pick["seeds"])
        if key not in timed:
            net_spec = td.Spec(model=_model(1, "tanh", width=pick["width"]), task=task,
                               steps=cfg["steps"], log_every=1,
                               optimizer=td.optimizers.sgd(LR), observables=("loss",))
            timed[key], _, _ = _timed(lambda: td.sweep(net_spec, seed=range(pick["seeds"]))
                                      .train_loss.values, repeats)
        out["by_target"][name] = {"target": level, "reached": True,
                                  "cheapest_network": pick, "network_seconds": timed[key],
                                  "network_over_dmft_time": timed[key] / dmft_seconds}
    return out


# -- (c) scaling in P and T --------------------------------------------------------------


def _scaling(cfg, deep_cfg, deep, repeats, seed):
    tanh1 = _model(1, "tanh")
    s = cfg["two_layer_samples"]

    def two_layer(n_train, steps):
        x, y, _ = _data(n_train, seed)
        best, _, _ = _timed(lambda: dmft.solve(tanh1, x, y, lr=LR, steps=steps, samples=s,
                                               seed=seed), repeats)
        return best

    mid_t = cfg["two_layer_steps"][len(cfg["two_layer_steps"]) // 2]
    mid_p = cfg["two_layer_n_train"][len(cfg["two_layer_n_train"]) // 2]
    by_p = [{"n_train": p, "steps": mid_t, "seconds": two_layer(p, mid_t)}
            for p in cfg["two_layer_n_train"]]
    by_t = [{"n_train": mid_p, "steps": t, "seconds": two_layer(mid_p, t)}
            for t in cfg["two_layer_steps"]]
    out = {"two_layer": {
        "samples": s, "by_n_train": by_p, "by_steps": by_t,
        "exponent_in_n_train": loglog_slope([r["n_train"] for r in by_p],
                                            [r["seconds"] for r in by_p]),
        "exponent_in_steps": loglog_slope([r["steps"] for r in by_t],
                                          [r["seconds"] for r in by_t])}}

    lin = _model(cfg["deep_linear_depth"], "linear")

    def deep_linear(n_train, steps):
        x, y, _ = _data(n_train, seed)
        dmft.solve(lin, x, y, lr=LR_DEEP, steps=steps)  # compiles
        ds, seconds, per = _solve_clocked(lin, x, y, lr=LR_DEEP, steps=steps)
        return {"n_train": n_train, "steps": steps, "seconds": seconds,
                "iterations": int(ds.attrs["iterations"]),
                "seconds_per_iteration": float(np.median(per)),
                "converged": bool(ds.attrs["converged"])}

    mid_t = cfg["deep_linear_steps"][len(cfg["deep_linear_steps"]) // 2]
    mid_p = cfg["deep_linear_n_train"][len(cfg["deep_linear_n_train"]) // 2]
    by_p = [deep_linear(p, mid_t) for p in cfg["deep_linear_n_train"]]
    by_t = [deep_linear(mid_p, t) for t in cfg["deep_linear_steps"]]

    def slopes(rows, key):
        xs = [r[key] + (1 if key == "steps" else 0) for r in rows]
        return {"seconds": loglog_slope(xs, [r["seconds"] for r in rows]),
                "seconds_per_iteration": loglog_slope(xs, [r["seconds_per_iteration"]
                                                           for r in rows])}

    out["deep_linear"] = {"depth": cfg["deep_linear_depth"], "by_n_train": by_p,
                          "by_steps": by_t, "exponents_in_n_train": slopes(by_p, "n_train"),
                          "exponents_in_steps_plus_1": slopes(by_t, "steps")}

    model = _model(deep_cfg["depth"], "tanh")
    t = cfg["monte_carlo_at_steps"]
    rows = []
    for p in cfg["monte_carlo_n_train"]:
        x, y, _ = _data(p, seed)
        r = _mc_iteration_seconds(model, x, y, t, deep_cfg["samples"], deep_cfg["window"],
                                  seed)
        rows.append({"n_train": p, "steps": t, **r})
    out["monte_carlo"] = {
        "depth": deep_cfg["depth"], "samples": deep_cfg["samples"],
        "per_iteration_by_n_train": rows,
        "exponent_in_n_train": loglog_slope([r["n_train"] for r in rows],
                                            [r["seconds_per_iteration"] for r in rows]),
        "per_iteration_by_steps": deep["per_iteration"]["measured_at_smaller_steps"],
        "exponent_in_steps_plus_1": deep["per_iteration"]["exponent_in_steps_plus_1"]}
    return out


def machine():
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "load_average_1_5_15_min": load,
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                   "MKL_NUM_THREADS", "XLA_FLAGS")},
            "versions": sweeps.versions()}


def main(quick: bool = False, seed: int = 0) -> dict:
    cfg = QUICK if quick else FULL
    repeats = cfg["repeats"]
    start = time.perf_counter()
    host = machine()
    stages = {}

    def stage(name, fn):
        t = time.perf_counter()
        out = fn()
        stages[name] = time.perf_counter() - t
        print(f"bench dmft: {name} done in {stages[name]:.1f} s", file=sys.stderr, flush=True)
        return out

    two = stage("two_layer", lambda: _two_layer_times(cfg["two_layer"], repeats, seed))
    deep = stage("deep_monte_carlo", lambda: _deep_times(cfg["deep"], seed))
    iteration = stage("one_iteration", lambda: one_iteration(cfg["iteration"], seed))
    versus = stage("versus_network", lambda: _versus_network(cfg["versus"], repeats, seed))
    scaling = stage("scaling", lambda: _scaling(cfg["scaling"], cfg["deep"], deep, repeats,
                                                seed))
    summary = {
        "two_layer_seconds": {str(r["samples"]): r["seconds"] for r in two["by_samples"]},
        "deep_monte_carlo_seconds_per_iteration_full_size":
            deep["per_iteration"]["full_size"]["seconds"],
        "deep_monte_carlo_full_size_how": deep["per_iteration"]["full_size"]["how"],
        "deep_monte_carlo_iterations_full_size_estimate":
            deep["iterations"]["full_size"]["iterations"],
        "deep_monte_carlo_solve_seconds_full_size_estimate":
            deep["full_size_solve_seconds"]["seconds"],
        "one_iteration": {k: iteration["measured"][0].get(k) for k in (
            "steps", "causal_seconds", "jacfwd_seconds", "matmul_2048_seconds",
            "causal_over_matmul", "jacfwd_over_causal", "largest_relative_gap")},
        "one_iteration_at_target_steps": iteration["causal_at_target_steps"],
        "dmft_mc_error_loss": versus["dmft_mc_error_loss"],
        "network_over_dmft_time": {k: v.get("network_over_dmft_time")
                                   for k, v in versus["by_target"].items()},
        "exponents": {
            "two_layer_in_n_train": scaling["two_layer"]["exponent_in_n_train"],
            "two_layer_in_steps": scaling["two_layer"]["exponent_in_steps"],
            "deep_linear_in_n_train": scaling["deep_linear"]["exponents_in_n_train"],
            "deep_linear_in_steps_plus_1": scaling["deep_linear"]["exponents_in_steps_plus_1"],
            "monte_carlo_per_iteration_in_n": scaling["monte_carlo"]["exponent_in_n_train"],
            "monte_carlo_per_iteration_in_steps_plus_1":
                scaling["monte_carlo"]["exponent_in_steps_plus_1"],
        },
    }
    return {"benchmark": "dmft", "quick": bool(quick), "seed": seed, "summary": summary,
            "solve_time": {"two_layer": two, "deep_monte_carlo": deep},
            "one_iteration": iteration, "versus_network": versus, "scaling": scaling,
            "machine": host,
            "lr": LR, "gamma0": GAMMA0, "dim": DIM,
            "stage_seconds": stages, "seconds_total": time.perf_counter() - start}


if __name__ == "__main__":
    print(json.dumps(main(quick="--quick" in sys.argv), indent=2))
