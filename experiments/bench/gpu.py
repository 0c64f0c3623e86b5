"""``traindyn bench gpu``: the figures an accelerator gives, in one run of under 8 minutes.

Prepared for a single H100/H200-class GPU (it runs on any backend; ``--quick`` is a small
version for a CPU). Sections, in this order, each timed and reported with its wall time:

* ``dmft_solve``: the paper-scale deep DMFT solve (Bordelon & Pehlevan 2022: ``L = 3``,
  ``P = 10``, ``T = 100``, ``S = 1000``, tanh, float64), complete, after a compiling call
  (``experiments.bench.dmft.full_solve``); the goal is under a minute;
* ``sweep``: 256 small runs (depth-2 tanh MLP, width 64, 256 digits, 200 steps) as one
  sweep in each execution strategy against a loop of the same jitted run
  (``experiments.bench.sweep.bench_case``: ``speedup_over_serial``);
* ``empirical_ntk``: the MLP of ``traindyn bench ntk`` (erf, 32 -> 512 -> 512 -> 10,
  ``n = 128``) per method (``experiments.bench.ntk.ours_per_method``);
* ``sharpness``: ``Sharpness`` every 10 steps over the sweep without it, cold and warm
  started (``experiments.bench.curvature.sharpness_overhead``), on 16 runs;
* ``dmft_iteration``: one deep DMFT iteration at ``T = 20`` against a ``2048^3`` float64
  matmul in the same process (``experiments.bench.dmft``'s ``one_iteration`` section).

A section starts only while the elapsed time is below ``BUDGET_S`` (a later one is
reported as skipped, with the elapsed time), so a slower device still returns the
sections it reached. Every figure is of this process on this device (``machine``)."""

from __future__ import annotations

import json
import sys
import time

import jax

import dynamics as td
from experiments.bench import curvature, dmft, ntk, sweep

BUDGET_S = 420.0

FULL = {
    "dmft_solve": {"depth": 3, "n_train": 10, "steps": 100, "samples": 1000, "window": 4},
    "sweep": {"runs": 256, "width": 64, "n_train": 256, "steps": 200, "repeats": 2},
    "empirical_ntk": ntk.CONFIGS["full"],
    "sharpness": {"runs": 16, "repeats": 3},
    "dmft_iteration": {"depth": 3, "n_train": 10, "samples": 1000, "steps": [20],
                       "repeats": 3, "causal_only_steps": [40], "target_steps": 100},
}
QUICK = {
    "dmft_solve": {"depth": 2, "n_train": 3, "steps": 8, "samples": 64, "window": 4},
    "sweep": {"runs": 8, "width": 16, "n_train": 64, "steps": 10, "repeats": 1},
    "empirical_ntk": ntk.CONFIGS["quick"],
    "sharpness": {"runs": 2, "repeats": 1},
    "dmft_iteration": {"depth": 3, "n_train": 3, "samples": 40, "steps": [4], "repeats": 1,
                       "causal_only_steps": [6], "target_steps": 10},
}


def _sweep_case(cfg, seed):
    task = td.tasks.digits(n_train=cfg["n_train"], n_test=64, loss="mse", seed=seed)
    spec = sweep.mlp_spec(task, cfg["width"], cfg["steps"], seed)
    return sweep.bench_case("mlp", spec, cfg["runs"], cfg["repeats"], seed)


def _sharpness(cfg, quick, seed):
    spec = curvature.bench_problem(quick, seed)[0]
    return curvature.sharpness_overhead(spec, cfg["runs"], cfg["repeats"])


SECTIONS = tuple(FULL)


def main(quick: bool = False, seed: int = 0, *, budget_s: float = BUDGET_S,
         sections=SECTIONS) -> dict:
    """Run ``sections`` (a subset of ``SECTIONS``, in their order) while the elapsed time
    is below ``budget_s``; return the JSON-able results."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"sections must be among {list(SECTIONS)}, got {unknown}")
    cfg = QUICK if quick else FULL
    start = time.perf_counter()
    runners = {
        "dmft_solve": lambda: dmft.full_solve(cfg["dmft_solve"], seed),
        "sweep": lambda: _sweep_case(cfg["sweep"], seed),
        "empirical_ntk": lambda: ntk.ours_per_method(cfg["empirical_ntk"], seed),
        "sharpness": lambda: _sharpness(cfg["sharpness"], quick, seed),
        "dmft_iteration": lambda: dmft.one_iteration(cfg["dmft_iteration"], seed),
    }
    out: dict = {"benchmark": "gpu", "quick": bool(quick), "seed": seed,
                 "backend": jax.default_backend(), "budget_s": budget_s, "config": cfg,
                 "machine": dmft.machine(), "section_seconds": {}}
    for name, fn in runners.items():
        if name not in sections:
            continue
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            out[name] = {"skipped": f"the budget of {budget_s:.0f} s was spent "
                                    f"({elapsed:.0f} s elapsed)"}
            continue
        t = time.perf_counter()
        out[name] = fn()
        out["section_seconds"][name] = time.perf_counter() - t
        print(f"bench gpu: {name} done in {out['section_seconds'][name]:.1f} s",
              file=sys.stderr, flush=True)
    out["seconds_total"] = time.perf_counter() - start
    return out


if __name__ == "__main__":
    print(json.dumps(main(quick="--quick" in sys.argv), indent=2))
