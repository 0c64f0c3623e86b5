r"""Batch Hessian versus full Hessian, and the largest stable SGD learning rate.

Granziol, Zohren & Roberts (2022), "Learning Rates as a Function of Batch Size: A Random
Matrix Theory Approach to Neural Network Training" (JMLR 23; arXiv:2006.09092). They model
the Hessian of the loss on a batch of ``B`` examples drawn from ``P`` as the full Hessian
plus a field-dependent random fluctuation, ``H_B = H + E_B``, whose scale grows as the
batch shrinks (the per-example Hessians are averaged over ``B`` instead of ``P``; for
independent draws the fluctuation's variance goes like ``1/B - 1/P``). Their results: the
extremal eigenvalues of the batch Hessian exceed those of the full Hessian, and the
largest stable SGD learning rate, set by ``2 / lambda_max(H_B)``, grows linearly with
``B`` while the fluctuation dominates ``lambda_max(H_B)`` (the linear scaling rule),
saturating at the full-batch value ``~ 2 / lambda_max(H)`` for large ``B``. The excess
``lambda_max(H_B) - lambda_max(H)`` falling like ``1/B`` at small ``B`` is what makes
``eta* ~ B`` there; we measure both.

Here: scikit-learn's digits with one-hot MSE targets (``dynamics.losses`` normalisation),
a one-hidden-layer ReLU MLP in the standard parametrization, and one
``dynamics.sweep`` per batch size over seeds x a geometric grid of learning rates
(batch size is a static axis, the learning rates one vmapped program). Every run measures
``dynamics.curvature.Sharpness`` (full training set) and ``BatchSharpness(batch_size=B)``
(a random batch of the run's own batch size, from the run's key) at its first and last
log points, inside the loop. A run is *stable* if it did not diverge (``diverged_at``)
and its final training loss is below the initial one; ``eta*(B)`` is the largest grid
learning rate at which every seed is stable.

Claims: the batch sharpness at initialisation exceeds the full sharpness for every
``B < P``; its excess over the full sharpness falls like ``1/B`` (log-log slope ``-1 +-
0.35``) over the small batches; the log-log slope of ``eta*`` against ``B`` over the
small batches is ``1 +- 0.3``; and ``eta* lambda_max(H_B) / 2`` stays of order one there
(between 0.4 and 2.5), i.e. the stability threshold is the batch curvature's.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import dynamics as td
from dynamics import curvature
from experiments.common import Claim, loglog_slope

NAME = "batch-hessian"
TITLE = "Batch vs full Hessian and the linear scaling of the stable SGD learning rate"

PRESETS = {
    "quick": dict(n_train=256, width=64, steps=200, batch_sizes=(1, 2, 4, 8),
                  small_batches=(1, 2, 4, 8), lr_min=0.0025, lr_max=0.2, n_lrs=14, seeds=3),
    "full": dict(n_train=512, width=128, steps=300,
                 batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 512), small_batches=(1, 2, 4, 8, 16),
                 lr_min=0.001, lr_max=0.4, n_lrs=27, seeds=5),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 110-162 s in three runs on
# 2 shared cores; full: 174 s on 2 otherwise idle cores (every claim passed).
SECONDS = {"quick": 150, "full": 174}

# The lr grid has ratio ~sqrt 2, so eta* is known to a factor sqrt 2 at each B; over the
# small batches (a factor >= 8) that quantisation alone moves the slope by up to
# log(sqrt 2) / log(8) ~ 0.17, and the seeds add their own scatter.
SLOPE_TOLERANCE = 0.3
# The excess of the batch sharpness over the full one, averaged over seeds at
# initialisation, from ``seeds`` random batches: ~15% scatter per point.
EXCESS_SLOPE_TOLERANCE = 0.35


def make_spec(n_train, width, steps, batch_size) -> td.Spec:
    task = td.tasks.digits(n_train=n_train, n_test=200, loss="mse", seed=0)
    model = td.MLP(width=width, depth=1, out_dim=10, activation="relu",
                   parametrization="standard")
    observables = ("loss", curvature.Sharpness(iterations=20, every=steps),
                   curvature.BatchSharpness(batch_size=batch_size, iterations=20, every=steps))
    return td.Spec(model, task, td.optimizers.sgd(0.1), steps=steps, log_every=steps // 2,
                   batch_size=None if batch_size == n_train else batch_size,
                   observables=observables)


def run(n_train, width, steps, batch_sizes, small_batches, lr_min, lr_max, n_lrs, seeds):
    lrs = np.geomspace(lr_min, lr_max, n_lrs)
    parts = []
    for b in batch_sizes:
        ds = td.sweep(make_spec(n_train, width, steps, b), seed=list(range(seeds)),
                      lr=list(lrs))
        parts.append(ds.expand_dims(batch_size=[b]))
    ds = xr.concat(parts, dim="batch_size", combine_attrs="override")
    ds.attrs["small_batches"] = list(small_batches)
    ds.attrs["n_train"] = n_train
    return ds.assign(largest_stable_lr=largest_stable_lr(ds))


def largest_stable_lr(ds) -> xr.DataArray:
    """Per batch size, the largest learning rate at which every seed is stable (did not
    diverge and ended below its initial training loss); NaN if none is."""
    loss = ds.train_loss
    stable = ((ds.diverged_at < 0) & (loss.isel(step=-1) < loss.isel(step=0))).all("seed")
    return xr.where(stable, ds.lr, np.nan).max("lr")


def _small(ds):
    return ds.sel(batch_size=[b for b in ds.attrs["small_batches"]])


def check(ds) -> list[Claim]:
    start = ds.isel(step=0).mean(("seed", "lr"))
    n_train = int(ds.attrs["n_train"])
    below = start.sel(batch_size=[b for b in ds.batch_size.values if b < n_train])
    exceed = float((below.batch_sharpness / below.sharpness).min())
    small = _small(ds)
    s0 = small.isel(step=0).mean(("seed", "lr"))
    excess = s0.batch_sharpness - s0.sharpness
    excess_slope = loglog_slope(s0.batch_size, excess)
    eta = small.largest_stable_lr
    lr_slope = loglog_slope(eta.batch_size, eta) if bool(eta.notnull().all()) else np.nan
    product = eta * s0.batch_sharpness / 2
    return [
        Claim("batch_sharpness_exceeds_full", exceed, 1.0, ">=",
              description="min over B < P of lambda_max(H_B) / lambda_max(H) at "
              "initialisation (seed mean)"),
        Claim("batch_excess_falls_like_1_over_B", excess_slope, -1.0, "within",
              EXCESS_SLOPE_TOLERANCE,
              description="log-log slope of lambda_max(H_B) - lambda_max(H) against B over "
              "the small batches (Granziol et al.: ~1/B)"),
        Claim("stable_lr_linear_in_batch", lr_slope, 1.0, "within", SLOPE_TOLERANCE,
              description="log-log slope of the largest stable SGD learning rate against B "
              "over the small batches (linear scaling rule)"),
        Claim("stable_lr_set_by_batch_curvature_min", float(product.min()), 0.4, ">=",
              description="min over small B of eta* lambda_max(H_B) / 2"),
        Claim("stable_lr_set_by_batch_curvature_max", float(product.max()), 2.5, "<=",
              description="max over small B of eta* lambda_max(H_B) / 2"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    s0 = ds.isel(step=0)
    b = ds.batch_size.values
    ax = axes[0]
    lam_b = s0.batch_sharpness.mean(("seed", "lr"))
    lam = s0.sharpness.mean(("seed", "lr"))
    ax.errorbar(b, lam_b, yerr=s0.batch_sharpness.std(("seed", "lr")), marker="o",
                label="lambda_max(H_B)")
    ax.plot(b, lam, "k--", label="lambda_max(H), full batch")
    small = np.asarray(ds.attrs["small_batches"], float)
    ref = float(lam_b.sel(batch_size=small[0]) - lam.sel(batch_size=small[0]))
    ax.plot(small, float(lam.mean()) + ref * small[0] / small, "r:", label="full + c/B")
    ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="top eigenvalue",
           title="batch vs full Hessian at initialisation")
    ax.legend(fontsize=8)
    ax = axes[1]
    eta = ds.largest_stable_lr
    ax.plot(b, eta, "o-", label="largest stable lr eta*")
    ax.plot(b, 2 / lam_b, "s--", label="2 / lambda_max(H_B)")
    e0 = float(eta.sel(batch_size=small[0]))
    ax.plot(small, e0 * small / small[0], "r:", label="linear in B")
    ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="learning rate",
           title="stability threshold of SGD")
    ax.legend(fontsize=8)
    ax = axes[2]
    final = ds.train_loss.isel(step=-1).where(ds.diverged_at < 0).max("seed")
    im = ax.pcolormesh(np.arange(len(ds.lr)), np.arange(len(b)),
                       np.log10(final / ds.train_loss.isel(step=0).mean("seed")).values,
                       cmap="coolwarm", vmin=-2, vmax=2, shading="auto")
    ax.set_xticks(np.arange(len(ds.lr))[::2], [f"{v:.3g}" for v in ds.lr.values[::2]],
                  rotation=60, fontsize=7)
    ax.set_yticks(np.arange(len(b)), [str(v) for v in b])
    ax.set(xlabel="learning rate", ylabel="batch size",
           title="log10 final / initial loss (blank: diverged)")
    fig.colorbar(im, ax=ax)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
