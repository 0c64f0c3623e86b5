r"""Stability of SGD minima: SGD's minima obey a bound on the Hessian's trace, GD's only on
its largest eigenvalue.

Wu & Su (2023), "The Implicit Regularization of Dynamical Stability in Stochastic
Gradient Descent" (ICML 2023), building on the linear stability of Wu, Ma & E (2018).
Near a global minimum ``theta*`` of an interpolating model with square loss, write
``delta = theta - theta*`` and ``H_i`` the Hessian of the loss of example ``i`` (rank one
for a scalar output: ``H_i = 2 g_i g_i^T``, ``g_i = grad f(x_i)``, in the normalisation
``L = (1/P) sum_i (f_i - y_i)^2`` of ``dynamics.losses``), ``H = (1/P) sum_i H_i``. The
linearised dynamics are

* GD: ``delta' = (I - eta H) delta``, stable iff ``lambda_max(H) <= 2/eta``;
* SGD with one example per step: ``delta' = (I - eta H_i) delta``, ``i`` uniform. Then
  ``E ||delta'||^2 = ||delta||^2 - 2 eta delta^T H delta + eta^2 (1/P) sum_i delta^T H_i^2
  delta`` and ``H_i^2 = tr(H_i) H_i`` for rank one, so when the per-example traces are
  equal (``tr H_i = tr H``) ``E ||delta'||^2 = ||delta||^2 - eta (2 - eta tr H)
  delta^T H delta``: the minimum repels SGD as soon as ``tr H > 2/eta``.

Wu & Su's result (stated in their abstract; proved in their stability analysis for the
square loss): if a global minimum is linearly stable for SGD,
then ``tr H(theta*) <= 2/eta``; for GD stability constrains only ``lambda_max(H) <=
2/eta``. Since ``tr H >= lambda_max``, SGD's constraint is the stronger one, by up to the
rank of ``H``. The bound is stated for the Hessian of the loss the optimizer follows, so
it holds in any normalisation of the loss as long as ``eta`` and ``H`` use the same one
(here the Hessian is that of the very loss the loop trains).

Here: a scalar-output teacher-student regression (``dynamics.tasks.teacher_student_mlp``,
few examples so a ReLU MLP interpolates), trained to a global minimum by GD and by SGD
with one example per step over the same learning rates; at every log point of every run
``dynamics.curvature.Sharpness`` (Lanczos) and ``HessianTrace`` (Hutch++) are measured in
the loop. A small initial weight scale lets the minima found depend on the learning rate.

Claims: every converged SGD run ends at a minimum with ``eta tr H / 2 <= 1`` (5% allowed
for the trace estimate), and the largest such value is at least 0.7 (the sweep reaches the
bound, so the claim is not vacuous); every GD run ends with ``eta lambda_max / 2 <= 1``
while some GD minimum has ``eta tr H / 2 >= 1.5`` (GD is not constrained by the trace);
at the largest learning rate where SGD converges, SGD's minimum is flatter in trace than
GD's; the runs do reach minima (final training loss below ``1e-4``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

import dynamics as td
from dynamics import curvature
from experiments.common import Claim

NAME = "sgd-stability"
TITLE = "Stability of SGD minima (Wu & Su 2023): tr H <= 2/eta for SGD, lambda_max for GD"

PRESETS = {
    "quick": dict(n_train=32, dim=10, width=64, sigma_w=0.4, steps=3000, n_logs=15,
                  lrs=(0.04, 0.06, 0.08, 0.12, 0.2), seeds=1),
    "full": dict(n_train=64, dim=10, width=256, sigma_w=0.4, steps=8000, n_logs=40,
                 lrs=(0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2), seeds=3),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 43 s, measured on 2 shared
# cores; full: 52 s on 2 otherwise idle cores (487 s while other jobs used them). The full grid stops at lr 0.2 and
# starts at 0.02: GD at 0.3 oscillates at the edge of stability (one seed of three
# diverged, another ended at loss 9e-3) and at 0.01 it is still converging (1.2e-4) after
# 8000 steps, so neither ends at a minimum.
SECONDS = {"quick": 45, "full": 52}

# Near an interpolating minimum H is the Gauss-Newton matrix (2/P) J^T J of rank <= P, so
# Hutch++ with a sketch of more than P columns (``trace_probes``) captures its range and
# is almost exact there (its standard error on the complement is ~0 at the minima of the
# quick preset); 5% is left for the residual term ``(2/P) sum_i r_i grad^2 f_i``.
TRACE_TOLERANCE = 1.05
SHARPNESS_TOLERANCE = 1.05  # Lanczos top eigenvalue (20 steps) on a minimum, 5% margin
MINIMUM_LOSS = 1e-4  # "a global minimum": the training loss has fallen by over 1000x


def trace_probes(n_train: int) -> int:
    """Hutch++ products: a sketch of ``n_train + 8`` columns (above the rank of the
    Gauss-Newton part), as many for its trace, as many Hutchinson probes."""
    return 3 * (n_train + 8)


def make_spec(n_train, dim, width, sigma_w, steps, n_logs, batch_size) -> td.Spec:
    task = td.tasks.teacher_student_mlp(dim=dim, n_train=n_train, n_test=200,
                                        activation="tanh", seed=0)
    model = td.MLP(width=width, depth=1, out_dim=1, activation="relu",
                   parametrization="standard", sigma_w=sigma_w)
    observables = ("loss", curvature.Sharpness(iterations=20),
                   curvature.HessianTrace(samples=trace_probes(n_train), method="hutch++",
                                          every=max(n_logs // 5, 1) * (steps // n_logs)))
    return td.Spec(model, task, td.optimizers.sgd(0.1), steps=steps,
                   log_every=steps // n_logs, batch_size=batch_size, observables=observables)


def run(n_train, dim, width, sigma_w, steps, n_logs, lrs, seeds):
    parts = []
    for batch_size in (None, 1):
        spec = make_spec(n_train, dim, width, sigma_w, steps, n_logs, batch_size)
        parts.append(td.sweep(spec, seed=list(range(seeds)), lr=list(lrs)))
    ds = xr.concat(parts, dim=pd.Index(["gd", "sgd"], name="optimizer"), combine_attrs="override")
    return ds.assign(threshold=("lr", 2.0 / ds.lr.values))


def _final(ds):
    """Final values of the runs that did not diverge (NaN elsewhere)."""
    return ds.isel(step=-1).where(ds.diverged_at < 0)


def check(ds) -> list[Claim]:
    final = _final(ds)
    gd, sgd = final.sel(optimizer="gd"), final.sel(optimizer="sgd")
    sgd_trace = float((sgd.hessian_trace * sgd.lr / 2).max())
    gd_sharp = float((gd.sharpness * gd.lr / 2).max())
    gd_trace = float((gd.hessian_trace * gd.lr / 2).max())
    converged = (ds.sel(optimizer="sgd").diverged_at < 0).all("seed")
    lr_top = float(ds.lr.values[converged.values].max())
    flatter = float((sgd.hessian_trace / gd.hessian_trace).sel(lr=lr_top).max())
    loss = float(final.train_loss.max())
    return [
        Claim("sgd_minima_trace_bound", sgd_trace, TRACE_TOLERANCE, "<=",
              description="max over converged SGD runs (batch 1) of eta tr H / 2 "
              "(Wu & Su 2023: tr H <= 2/eta)"),
        Claim("sgd_bound_reached", sgd_trace, 0.7, ">=",
              description="the same maximum: the learning rates reach the bound"),
        Claim("gd_minima_sharpness_bound", gd_sharp, SHARPNESS_TOLERANCE, "<=",
              description="max over GD runs of eta lambda_max / 2 (linear stability of GD)"),
        Claim("gd_minima_exceed_trace_bound", gd_trace, 1.5, ">=",
              description="max over GD runs of eta tr H / 2: GD is not held to the trace bound"),
        Claim("sgd_flatter_than_gd", flatter, 0.8, "<=",
              description=f"tr H of SGD / of GD at eta={lr_top:g}, the largest learning "
              "rate at which every SGD run converged"),
        Claim("runs_reach_minima", loss, MINIMUM_LOSS, "<=",
              description="largest final training loss over the converged runs"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    final = _final(ds)
    lrs = ds.lr.values
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    ax = axes[0]
    for method, marker in (("gd", "o"), ("sgd", "s")):
        f = final.sel(optimizer=method)
        ax.plot(lrs, (f.hessian_trace * f.lr / 2).mean("seed"), marker=marker,
                label=f"{method}: eta tr H / 2")
        ax.plot(lrs, (f.sharpness * f.lr / 2).mean("seed"), marker=marker, ls="--",
                label=f"{method}: eta lambda_max / 2")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="learning rate eta",
           ylabel="curvature x eta / 2 at the minimum", title="stability bounds (1: 2/eta)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for method, marker in (("gd", "o"), ("sgd", "s")):
        f = final.sel(optimizer=method)
        ax.scatter(np.broadcast_to(2 / lrs, f.hessian_trace.shape), f.hessian_trace,
                   marker=marker, label=f"{method}: tr H")
    grid = np.array([2 / lrs.max(), 2 / lrs.min()])
    ax.plot(grid, grid, "k:", label="tr H = 2/eta")
    ax.set(xscale="log", yscale="log", xlabel="2/eta", ylabel="tr H at the minimum",
           title="trace of the Hessian at the minima found")
    ax.legend(fontsize=7)
    ax = axes[2]
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(lrs)))
    for lr, c in zip(lrs, colors):
        run_ = ds.sel(lr=lr, optimizer="sgd").isel(seed=0)
        ax.plot(ds.step, run_.hessian_trace, color=c, label=f"SGD eta={lr:g}")
        ax.axhline(2 / lr, color=c, ls=":", lw=0.8)
    ax.set(yscale="log", xlabel="step", ylabel="tr H", title="SGD: trace during training "
           "(dotted: 2/eta)")
    ax.legend(fontsize=7)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
