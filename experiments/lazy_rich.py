"""Lazy versus rich training: one sweep over seeds x learning rate x output scale.

Chizat, Oyallon & Bach (2019, "On Lazy Training in Differentiable Programming") train
``f = alpha (g(theta, x) - g(theta0, x))`` with learning rate ``eta / alpha^2``: the
function-space dynamics at initialisation do not depend on ``alpha``, but the weights
needed to fit the data move by ``O(1/alpha)`` (their Thm 2.3-2.4). Large ``alpha`` is the
lazy (kernel) regime: ``||theta - theta0|| / ||theta0|| ~ 1/alpha`` and the training curves
of different large ``alpha`` coincide (the linearised model). Small ``alpha`` forces the
weights, hence the features, to move by ``O(1)``: the rich regime, where the curves
depart from the kernel ones.

Here: scikit-learn's digits (real 8x8 images, 10 classes, one-hot targets, MSE in the
normalisation of ``dynamics.losses``), an NTK-parametrized tanh MLP, full-batch GD,
``output_scale`` from 0.1 to 30, two base learning rates, several seeds, all in one call
of ``dynamics.sweep``.
"""

from __future__ import annotations

import numpy as np

import dynamics as td
from experiments.common import Claim, loglog_slope

NAME = "lazy-rich"
TITLE = "Lazy vs rich training (Chizat, Oyallon & Bach 2019) on digits"

PRESETS = {
    "quick": dict(seeds=2, width=128, n_train=256, steps=400, log_every=20,
                  lrs=(0.5, 1.0), alphas=(0.1, 0.3, 1.0, 3.0, 10.0, 30.0)),
    "full": dict(seeds=4, width=256, n_train=1000, steps=2000, log_every=50,
                 lrs=(0.5, 1.0), alphas=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)),
}


def make_spec(width: int, n_train: int, steps: int, log_every: int) -> td.Spec:
    task = td.tasks.digits(n_train=n_train, n_test=500, loss="mse", seed=0)
    model = td.MLP(width=width, depth=2, out_dim=10, activation="tanh",
                   parametrization="ntk", center=True)
    return td.Spec(model, task, td.optimizers.sgd(0.5), steps=steps, log_every=log_every,
                   scale_lr_by_output_scale=True)


def run(seeds, width, n_train, steps, log_every, lrs, alphas):
    spec = make_spec(width, n_train, steps, log_every)
    return td.sweep(spec, seed=range(seeds), lr=list(lrs), output_scale=list(alphas))


def check(ds) -> list[Claim]:
    final = ds.isel(step=-1).mean("seed")
    alphas = ds.output_scale.values
    lazy = alphas >= 1.0
    change = final.relative_weight_change  # (lr, output_scale)
    slopes = [loglog_slope(alphas[lazy], change.sel(lr=lr).values[lazy]) for lr in ds.lr.values]
    a_hi, a_lo = alphas[-1], alphas[-2]
    curve_hi = ds.train_loss.sel(output_scale=a_hi).mean("seed")
    curve_lo = ds.train_loss.sel(output_scale=a_lo).mean("seed")
    lazy_gap = float((abs(curve_hi - curve_lo) / curve_hi).max())
    rich_gap = float((abs(ds.train_loss.sel(output_scale=alphas[0]).mean("seed") - curve_hi)
                      / curve_hi).max())
    start = ds.train_loss.isel(step=0).mean("seed")
    fitted = float((final.train_loss / start).max())
    accuracy_gain = float((final.test_accuracy.isel(output_scale=0)
                           - final.test_accuracy.isel(output_scale=-1)).min())
    return [
        Claim("lazy_weight_change_slope", float(np.mean(slopes)), -1.0, "within", 0.1,
              "log-log slope of ||theta-theta0||/||theta0|| against alpha for alpha >= 1 "
              "(Chizat et al. 2019: -1)"),
        Claim("rich_weight_change", float(change.isel(output_scale=0).min()), 0.1, ">=",
              description="relative weight change at the smallest alpha: O(1) movement"),
        Claim("lazy_curves_coincide", lazy_gap, 0.05, "<=",
              description=f"max relative gap between the train-loss curves at alpha={a_lo:g} "
              f"and {a_hi:g} (the kernel limit)"),
        Claim("rich_departs_from_lazy", rich_gap, 0.05, ">=",
              description=f"max relative gap between alpha={alphas[0]:g} and {a_hi:g}"),
        Claim("all_runs_fit", fitted, 0.2, "<=",
              description="largest final/initial train loss over lr and alpha (seed mean)"),
        Claim("rich_generalises_better", accuracy_gain, 0.0, ">=",
              description="test accuracy at the smallest alpha minus at the largest "
              "(seed mean, worst lr): feature learning helps on digits"),
        Claim("no_divergence", float((ds.diverged_at >= 0).sum()), 0.0, "<=",
              description="number of diverged runs"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    alphas = ds.output_scale.values
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(alphas)))
    lr = ds.lr.values[-1]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for a, c in zip(alphas, colors):
        curve = ds.train_loss.sel(lr=lr, output_scale=a)
        ax.plot(ds.step, curve.mean("seed"), color=c, label=f"alpha={a:g}")
        ax.plot(ds.step, ds.test_loss.sel(lr=lr, output_scale=a).mean("seed"), color=c,
                ls="--", lw=0.8)
    ax.set(yscale="log", xlabel="step", ylabel="loss (train solid, test dashed)",
           title=f"training curves, lr/alpha^2 with lr={lr:g}")
    ax.legend(fontsize=7)
    ax = axes[1]
    final = ds.isel(step=-1)
    for lr_value in ds.lr.values:
        change = final.relative_weight_change.sel(lr=lr_value)
        ax.errorbar(alphas, change.mean("seed"), yerr=change.std("seed"), marker="o",
                    label=f"lr={lr_value:g}")
    ref = final.relative_weight_change.sel(lr=lr).mean("seed").values[-1] * alphas[-1]
    ax.plot(alphas, ref / alphas, "k:", label="1/alpha")
    ax.set(xscale="log", yscale="log", xlabel="output scale alpha",
           ylabel="||theta - theta0|| / ||theta0||", title="weight movement")
    ax.legend(fontsize=8)
    ax = axes[2]
    for lr_value in ds.lr.values:
        acc = final.test_accuracy.sel(lr=lr_value)
        ax.errorbar(alphas, acc.mean("seed"), yerr=acc.std("seed"), marker="o",
                    label=f"lr={lr_value:g}")
    ax.set(xscale="log", xlabel="output scale alpha", ylabel="test accuracy",
           title="generalisation at the end of training")
    ax.legend(fontsize=8)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
