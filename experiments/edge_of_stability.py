r"""Edge of stability: full-batch GD drives the sharpness up to ``2/eta`` and keeps it there.

Cohen, Kaur, Li, Kolter & Talwalkar (2021), "Gradient Descent on Neural Networks
Typically Occurs at the Edge of Stability" (ICLR 2021). For gradient descent
``theta <- theta - eta grad L`` on a quadratic ``L = theta^T H theta / 2`` the iterates
along an eigenvector of eigenvalue ``lambda`` are multiplied by ``1 - eta lambda``, so GD
is stable iff the *sharpness* ``lambda_max(H) <= 2/eta`` (the stability argument of their
Sec. 2). On neural networks they observe two phases (their Fig. 1 and Sec. 3):

1. *progressive sharpening*: while ``lambda_max < 2/eta`` the sharpness rises;
2. *edge of stability*: once it reaches ``2/eta`` it stops rising and hovers just above
   ``2/eta``, while the training loss keeps decreasing over long times, non-monotonically.

Here: scikit-learn's digits (real 8x8 images, 10 classes, one-hot targets), MSE in the
normalisation of ``dynamics.losses`` (``L = (1/P) sum_i ||f_i - y_i||^2``), a depth-2 tanh
MLP in the standard parametrization with a small weight scale ``sigma_w`` so that the
initial sharpness lies below ``2/eta`` for every learning rate of the sweep (progressive
sharpening is then visible before the plateau), full-batch GD at several learning rates in
one ``dynamics.sweep``. The sharpness is the ``dynamics.curvature.Sharpness`` observable:
Lanczos on Hessian-vector products of the very loss the loop trains, at every log point
of every run, inside the compiled loop. ``2/eta`` is in the same normalisation because the
Hessian is that of the loss whose gradient the optimizer follows.

Claims (for every learning rate): the plateau (median sharpness over the last half of
training) is within 10% of ``2/eta``; the initial sharpness is below ``2/eta`` (so the
plateau is reached by sharpening, not by a catapult down from above); the training loss
over the second half of training still falls; no run diverges.
"""

from __future__ import annotations

import numpy as np

import dynamics as td
from dynamics import curvature
from experiments.common import Claim, second_half

NAME = "edge-of-stability"
TITLE = "Edge of stability (Cohen et al. 2021): GD sharpness rises to 2/eta on digits"

PRESETS = {
    "quick": dict(n_train=256, width=64, sigma_w=0.6, steps=1500, log_every=50,
                  lrs=(0.1, 0.2, 0.3), lanczos_iterations=20, seeds=1),
    "full": dict(n_train=1000, width=128, sigma_w=0.6, steps=6000, log_every=50,
                 lrs=(0.05, 0.1, 0.15, 0.2), lanczos_iterations=30, seeds=2),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 35 s, measured on 2 shared
# cores; full: 245 s, measured on 2 cores shared with a test run (16 min in an older
# measurement, on a busier machine).
SECONDS = {"quick": 35, "full": 245}

PLATEAU_TOLERANCE = 0.1  # relative: |plateau eta / 2 - 1| <= 0.1 (the 10%)


def make_spec(n_train, width, sigma_w, steps, log_every, lanczos_iterations) -> td.Spec:
    task = td.tasks.digits(n_train=n_train, n_test=200, loss="mse", seed=0)
    model = td.MLP(width=width, depth=2, out_dim=10, activation="tanh",
                   parametrization="standard", sigma_w=sigma_w)
    observables = ("loss", "accuracy", curvature.Sharpness(iterations=lanczos_iterations))
    return td.Spec(model, task, td.optimizers.sgd(0.1), steps=steps, log_every=log_every,
                   observables=observables)


def run(n_train, width, sigma_w, steps, log_every, lrs, lanczos_iterations, seeds):
    spec = make_spec(n_train, width, sigma_w, steps, log_every, lanczos_iterations)
    ds = td.sweep(spec, seed=list(range(seeds)), lr=list(lrs))
    return ds.assign(threshold=("lr", 2.0 / ds.lr.values))


def plateau(ds):
    """Median sharpness over the second half of training, per (seed, lr)."""
    return second_half(ds).sharpness.median("step")


def check(ds) -> list[Claim]:
    ratio = plateau(ds) * ds.lr / 2.0  # 1 at the edge of stability
    worst = float(abs(ratio - 1.0).max())
    start = float((ds.sharpness.isel(step=0) * ds.lr / 2.0).max())
    late = second_half(ds).train_loss
    decrease = float((late.isel(step=-1) / late.isel(step=0)).max())
    return [
        Claim("plateau_at_2_over_eta", worst, 0.0, "within", PLATEAU_TOLERANCE,
              "max over lr and seed of |median late sharpness / (2/eta) - 1| "
              "(Cohen et al. 2021: sharpness hovers at 2/eta)"),
        Claim("starts_below_threshold", start, 0.9, "<=",
              description="max over runs of sharpness at step 0 times eta/2: the plateau "
              "is reached by progressive sharpening from below"),
        Claim("loss_still_decreases", decrease, 0.8, "<=",
              description="max over runs of train loss at the end / at the middle of "
              "training: the loss keeps falling at the edge of stability"),
        Claim("no_divergence", float((ds.diverged_at >= 0).sum()), 0.0, "<=",
              description="number of diverged runs"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    lrs = ds.lr.values
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(lrs)))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for lr, c in zip(lrs, colors):
        run_ = ds.sel(lr=lr).isel(seed=0) if "seed" in ds.dims else ds.sel(lr=lr)
        axes[0].plot(ds.step, run_.train_loss, color=c, label=f"eta={lr:g}")
        axes[1].plot(ds.step, run_.sharpness, color=c, label=f"eta={lr:g}")
        axes[1].axhline(2 / lr, color=c, ls="--", lw=0.8)
    axes[0].set(yscale="log", xlabel="step", ylabel="train loss (MSE)", title="training loss")
    axes[1].set(xlabel="step", ylabel="sharpness lambda_max(H)",
                title="sharpness (dashed: 2/eta)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
