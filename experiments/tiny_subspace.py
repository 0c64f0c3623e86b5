r"""Gradient descent happens in a tiny subspace: after a short initial phase most of the
gradient lies in the span of the top-``k`` Hessian eigenvectors, ``k`` the number of
classes, and that span turns slowly.

Gur-Ari, Roberts & Dyer (2018), "Gradient Descent Happens in a Tiny Subspace"
(arXiv:1812.04754), Sec. 2. Their first network is fully connected, two hidden layers of
32 ReLU units, softmax cross-entropy on the 10 classes of MNIST, trained by SGD (batch
64, learning rate 0.1). With ``V_k`` the top-``k`` Hessian eigenvectors of the training
loss and ``g`` its gradient, they plot (their Fig. 1) the fraction of the gradient in the
top subspace, ``f_top = ||V_k^T g||^2 / ||g||^2``, which after a short initial phase rises
to near 1 and stays there while the network trains; ``k = 10`` of the ``P`` (thousands)
parameter directions hold most of the gradient, a subspace ``k/P`` of the space. The same
section tracks the top subspace along training by the overlap ``tr(P_top(t) P_top(t'))/k``
of its projectors at an earlier time ``t`` and a later ``t'``, which stays high once the
initial phase is over: the subspace changes slowly. Here ``t`` and ``t'`` are consecutive
log points (what ``TopSubspaceOverlap`` carries), ``log_every`` steps apart: a local
version of their measurement, which bounds how fast the subspace turns but not its drift
over the whole run. (Song, Ahn & Yun 2025, "Does SGD really happen in tiny
subspaces?", measure the same ``f_top`` of the full-batch gradient along SGD and trace
the alignment to SGD's noise, which makes the iterates oscillate across the sharp top
directions: full-batch GD at a learning rate well below ``2/lambda_max`` shows no such
alignment.)

Here (real data is offline only at digits' size): a mixture of ``C = 10`` Gaussian
classes in ``D = 40`` dimensions whose means are ``separation sqrt(2)`` apart
(``dynamics.tasks.gaussian_mixture``) at ``separation = 2``: the classes overlap, so, as
MNIST does for a 32-wide network, the training set is not fitted within the run and the
loss stays of order 0.1-1. The network and optimizer are the paper's (two hidden layers
of 32 ReLU units, standard parametrization, cross-entropy, SGD with batch 64 and learning
rate 0.1). ``curvature.GradientInTopSubspace`` measures ``f_top`` of the full-batch
gradient with the full-batch Hessian (``k = C = 10`` Lanczos Ritz vectors) at every log
point inside the compiled loop, ``curvature.TopSubspaceOverlap`` the overlap of the top
subspaces of consecutive log points (``log_every`` SGD steps apart). The same network
is also trained by full-batch GD at the same learning rate (``batch_size = n_train`` in
the Dataset), the control of Song et al.

Why the setup matters (measured while building this, 600 steps, same network and SGD):
on scikit-learn's digits (1000 training images) the loss falls to 1e-2 within a few
hundred steps (the 2,700-parameter network memorises them) and ``f_top`` is 0.1-0.5;
on a separable mixture (``separation = 5``) the loss reaches 4e-3 and ``f_top`` falls to
0.003-0.07. Once the training set is fitted the gradient is small and no longer
dominated by the class-mean directions that make the top outliers. The paper's regime
is the one where the network is still learning, as here. And under full-batch GD
(``eta lambda_max ~ 0.6``) ``f_top`` is 1e-4 to 2e-3 along the whole run, although the
loss falls as under SGD: the alignment is SGD's. The Lanczos Ritz vectors are converged:
80 iterations instead of 30 change no fraction or overlap in the third decimal.
A dense check of the same quick setup (``jax.hessian`` and ``eigh`` at P = 2,698, its own
initialisation and batch order): ``f_top`` of the full-batch gradient 0.65-0.73 at steps
200-600, of a batch-64 gradient only 0.29-0.36 (mean of 20 batches); the overlap of the
top-10 subspaces of steps 200 and 600 is 0.81 (200 and 400: 0.87), so the subspace also
drifts little over the run; and ``lambda_10 / lambda_11`` is only 1.06-1.10 (``lambda_1 /
lambda_10 ~ 6``): the top subspace carries the gradient without a sharp gap at ``k = C``.

Claims (every run; "late" = the log points from a third of training on, after the
initial phase):

* ``most_gradient_in_top_subspace``: the median late ``f_top`` is at least 0.5 ("most of
  the gradient" of the abstract; the paper's Fig. 1 curve approaches 1 there);
* ``tiny_subspace``: that median is at least 50 times ``k/P``, the expected fraction for a
  random ``k``-dimensional subspace (``k/P ~ 0.004`` here): the alignment is not chance;
* ``initial_phase``: at the first log point after step 0, ``f_top`` is below the late
  median minus 0.2 (the rise is the "short period of training" of the abstract);
* ``subspace_changes_slowly``: the median late overlap of consecutive top subspaces is at
  least 0.85 (the paper: the overlap stays high; unrelated subspaces give ``k/P``);
* ``no_alignment_under_gd``: under full-batch GD at the same learning rate the median
  late ``f_top`` is at most 0.05 (Song et al. 2025; a twentieth of the SGD claim's 0.5
  bar, while a chance level ``k/P`` would be 0.004);
* no run diverges.
"""

from __future__ import annotations

import numpy as np

import dynamics as td
from dynamics import curvature
from experiments.common import Claim

NAME = "tiny-subspace"
TITLE = ("Gradient descent happens in a tiny subspace (Gur-Ari et al. 2018): the gradient "
         "in the top-C Hessian eigenspace")

PRESETS = {
    "quick": dict(n_classes=10, dim=40, separation=2.0, n_train=1000, width=32, steps=600,
                  log_every=50, lr=0.1, batch_sizes=(64, 1000), lanczos_iterations=30,
                  seeds=1),
    "full": dict(n_classes=10, dim=40, separation=2.0, n_train=2000, width=32, steps=2000,
                 log_every=100, lr=0.1, batch_sizes=(64, 2000), lanczos_iterations=40,
                 seeds=2),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 20 s, measured on 2 shared
# cores; full: 19 s on 2 otherwise idle cores (66 s while other jobs used them).
SECONDS = {"quick": 20, "full": 19}

MOST = 0.5             # "most of the gradient"
CHANCE_FACTOR = 50.0   # late f_top >= 50 k/P
RISE = 0.2             # f_top after the first log interval <= late median - 0.2
SLOW = 0.85            # consecutive overlap of the top subspaces, late median
GD_AT_MOST = 0.05      # full-batch GD: late median f_top


def parameter_count(dim, width, n_classes, depth=2):
    """``P`` of the MLP with biases: ``sum (fan_in + 1) fan_out`` over its layers."""
    sizes = (dim,) + (width,) * depth + (n_classes,)
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def make_spec(n_classes, dim, separation, n_train, width, steps, log_every, lr,
              batch_size, lanczos_iterations) -> td.Spec:
    task = td.tasks.gaussian_mixture(n_classes=n_classes, dim=dim, separation=separation,
                                     n_train=n_train, n_test=200, seed=0,
                                     loss="cross_entropy")
    model = td.MLP(width=width, depth=2, out_dim=n_classes, activation="relu",
                   parametrization="standard")
    top = dict(k=n_classes, iterations=lanczos_iterations)
    observables = ("loss", "accuracy", curvature.GradientInTopSubspace(**top),
                   curvature.TopSubspaceOverlap(**top))
    return td.Spec(model, task, td.optimizers.sgd(lr), steps=steps, log_every=log_every,
                   batch_size=None if batch_size == n_train else batch_size,
                   observables=observables)


def run(n_classes, dim, separation, n_train, width, steps, log_every, lr, batch_sizes,
        lanczos_iterations, seeds):
    """One sweep over seeds per batch size (``n_train``: full-batch GD), concatenated
    along ``batch_size``."""
    import xarray as xr

    parts = []
    for b in batch_sizes:
        spec = make_spec(n_classes, dim, separation, n_train, width, steps, log_every, lr,
                         b, lanczos_iterations)
        parts.append(td.sweep(spec, seed=list(range(seeds))).expand_dims(batch_size=[b]))
    ds = xr.concat(parts, "batch_size")
    chance = n_classes / parameter_count(dim, width, n_classes)
    return ds.assign(chance_fraction=chance).assign_attrs(n_train=n_train)


def _late(da):
    """The log points from a third of training on."""
    steps = da.step.values
    return da.sel(step=steps[steps >= steps[-1] / 3])


def _split(ds):
    """(the SGD runs, the full-batch GD runs)."""
    n = ds.attrs["n_train"]
    sizes = ds.batch_size.values
    return ds.sel(batch_size=sizes[sizes < n]), ds.sel(batch_size=sizes[sizes == n])


def check(ds) -> list[Claim]:
    sgd, gd = _split(ds)
    frac = sgd.top_subspace_gradient_fraction
    late = _late(frac).median("step")
    most = float(late.min())
    chance = float(ds.chance_fraction)
    rise = float((frac.isel(step=1) - late).max())
    overlap = float(_late(sgd.top_subspace_overlap).median("step").min())
    gd_frac = float(_late(gd.top_subspace_gradient_fraction).median("step").max())
    return [
        Claim("most_gradient_in_top_subspace", most, MOST, ">=",
              description="min over runs of the median late ||V_k^T g||^2 / ||g||^2, "
              "k = C (Gur-Ari et al. 2018 Fig. 1: approaches 1)"),
        Claim("tiny_subspace", most / chance, CHANCE_FACTOR, ">=",
              description="that fraction over k/P, its value for a random k-dimensional "
              "subspace"),
        Claim("initial_phase", rise, -RISE, "<=",
              description="max over runs of f_top at the first log point after step 0 minus "
              "the late median: the fraction rises after a short initial phase"),
        Claim("subspace_changes_slowly", overlap, SLOW, ">=",
              description="min over runs of the median late overlap ||V_prev^T V_now||_F^2 / "
              "k of consecutive top-k subspaces (log_every steps apart)"),
        Claim("no_alignment_under_gd", gd_frac, GD_AT_MOST, "<=",
              description="max over runs of the median late f_top under full-batch GD at "
              "the same lr (Song, Ahn & Yun 2025: the alignment comes from SGD's noise)"),
        Claim("no_divergence", float((ds.diverged_at >= 0).sum()), 0.0, "<=",
              description="number of diverged runs"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    n = ds.attrs["n_train"]
    for b in ds.batch_size.values:
        for s in ds.seed.values:
            run_ = ds.sel(batch_size=b, seed=s)
            kind = "GD" if b == n else f"SGD B={b}"
            style = dict(ls="--" if b == n else "-", marker="o", ms=3,
                         label=f"{kind}, seed {s}")
            axes[0].plot(run_.step, run_.train_loss, **style)
            axes[1].plot(run_.step, run_.top_subspace_gradient_fraction, **style)
            axes[2].plot(run_.step, run_.top_subspace_overlap, **style)
    axes[1].axhline(float(ds.chance_fraction), color="gray", ls="--", lw=0.8,
                    label="k/P (random subspace)")
    axes[0].set(yscale="log", xlabel="step", ylabel="train loss (cross-entropy)",
                title="training loss")
    axes[1].set(xlabel="step", ylabel="||V_k^T g||^2 / ||g||^2", ylim=(0, 1.05),
                title="gradient in the top-k Hessian subspace (k = C)")
    axes[2].set(xlabel="step", ylabel="tr(P_prev P_now) / k", ylim=(0, 1.05),
                title="overlap of consecutive top-k subspaces")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
