r"""Outliers with opposing signals: two small groups of images sharing one large feature
with different labels make the edge of stability, oscillate in antiphase, and own the
sharpest direction of the Hessian.

Rosenfeld & Risteski (2024), "Outliers with opposing signals have an outsized effect on
neural network optimization" (ICLR 2024; arXiv:2311.04163). Natural images hold *opposing
signals*: a large-magnitude feature (their example: a sky background) present in a few
images of one class (planes) and a few of another (e.g. birds or ships), which pushes the
network's output in one direction that is right for one group and wrong for the other.
Early training enters a narrow valley that balances the two groups; then the sharpness
rises (progressive sharpening) and the network's use of the feature oscillates, so the
loss of one group goes up while the other's goes down (their Fig. 1 and Sec. 3: "the
losses of the two groups oscillate in antiphase"), and the top eigenvector of the Hessian
lives on those few examples (their Sec. 3.2 and the two-layer linear model of their Sec.
4, whose sharpest direction is the weight on the opposing feature, with a curvature
proportional to its squared magnitude times the groups' share of the data).

The setup here
--------------
scikit-learn's digits as 8x8 images (real data that ships offline; standardised per
pixel on the training split, ``dynamics.tasks.digits(shape="image")``), MSE on one-hot
targets (``dynamics.losses``' normalisation, the loss of Cohen et al.'s edge of stability),
a ``td.ConvNet`` (two 3x3 ReLU convolutions, global average pooling, dense readout,
standard parametrization) trained by full-batch gradient descent. The opposing signal is
a uniform background: ``signal`` (in units of the pixels' standard deviation) added to
every pixel of ``group_size`` training images of digit ``CLASS_A`` (group ``A``) and as
many of digit ``CLASS_B`` (group ``B``); the other training images are group ``rest``.
Both groups share the feature, their labels differ: its gradient on one group opposes
its gradient on the other. The control run is the same network and the same groups (the
same images) without the feature (``signal = 0``), at the learning rate at which it also
sits at its edge of stability (``control_lr``: its sharpness is lower).

In the loop, at every step of every run (``log_every = 1``, so that the period-2
oscillation of the edge of stability is resolved): the training loss of each group
(``dynamics.example_groups.GroupLoss``); at strides, the sharpness
(``dynamics.curvature.Sharpness``), the share of the top eigendirection held by each
group (``dynamics.curvature.TopEigenvectorShare``), and, for the convolutional network,
the empirical NTK's kernel distance from its initial value and its alignment with the
targets (``kernels.KernelObservables``) and the coordinate check's per-layer activation
change (``dynamics.CoordinateCheck``), so that the figure shows the in-loop theory tools
on a CNN.

Scale, against the paper's: they train ResNet-18 and VGG on CIFAR-10 with SGD and GD
on accelerators and find the groups by the examples whose loss changes most between
steps; here the groups are planted, so they are known, and the network is small enough
for 2 CPU cores (``quick``: 256 images, width 32, 600 steps; ``full``: 512 images, width
32, 1200 steps, two seeds).

Claims and tolerances (measured values in ``summary.json``)
-----------------------------------------------------------
The edge-of-stability measures follow ``experiments.edge_of_stability`` (Cohen et al.
2021); "the second half" is the log points from the middle of training on.

* ``progressive_sharpening``: the sharpness at step 0 times ``eta / 2`` is at most 0.9
  (the signal run starts below the stability threshold and sharpens up to it, as in the
  paper, rather than being catapulted down from above).
* ``edge_of_stability``: the median sharpness over the second half is within 10% of
  ``2 / eta`` (Cohen et al.'s plateau; the same tolerance as ``edge-of-stability``).
* ``groups_oscillate_in_antiphase``: the correlation over the second half between the
  step-to-step changes of the two groups' log losses is at most -0.5: when one group's
  loss rises the other's falls, most of the time (a correlation of -0.5 means that the
  antiphase part of the changes carries three times the variance of the in-phase part);
  largest (least negative) over seeds. The changes are relative (of ``log L_g``): the
  two groups sit at different loss levels, and the loss spikes that interrupt the
  oscillation (the paper's "until the overall loss spikes") multiply both groups' losses
  at once, so they are in-phase events that absolute changes would weight by the
  groups' levels (measured while building this, quick preset: -0.74 on log losses,
  -0.54 on the losses themselves).
* ``outsized_oscillation``: the oscillation of the two groups against the rest's (the
  standard deviation of the step-to-step changes of ``log L_g`` over the second half,
  groups ``A`` and ``B`` averaged, over that of ``rest``), in the signal run over the
  control run, is at least 2 (smallest signal-run ratio over the largest control-run
  ratio across seeds). At its own edge of stability the control's two digit groups
  oscillate too, more than the rest (small groups average fewer examples, and ``1`` and
  ``7`` differ in label), in phase in ``quick`` (+0.51) and partly in antiphase in
  ``full`` (-0.35 and -0.41), so the sign of their correlation does not separate the two
  runs; the size of the groups' oscillation does: 32x the rest with the shared
  background against 12x without in ``quick``, 84-214x against 11-14x in ``full``
  (measured while building this).
* ``top_eigenvector_on_the_groups``: the summed share of ``A`` and ``B`` in the top
  eigendirection, median over the log points of the second half, divided by their
  fraction of the training examples, is at least 3 (the sharpest direction is carried by
  the few outliers, several times their weight in the loss); smallest over seeds. The
  share falls slowly as the network learns the digits' own features (in ``full`` from 6
  at the start to 3.1-4.5 at step 1200), so the claim reads it over the edge-of-stability
  phase rather than at the last log point alone.
* ``control_top_eigenvector_not_on_the_groups``: the same ratio in the control run is at
  most 2 (without the feature the two digit groups have about their weight in the data:
  a ratio near 1).
* ``no_divergence``: no run is frozen by a non-finite loss.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import dynamics as td
from dynamics import curvature
from dynamics.example_groups import GroupLoss
from experiments.common import Claim, second_half
from kernels import KernelObservables

NAME = "opposing-signals"
TITLE = ("Opposing signals (Rosenfeld & Risteski 2024): a CNN on digits with a shared "
         "background in two groups")

CLASS_A, CLASS_B = 1, 7  # the two digits whose images carry the opposing signal
GROUPS = ("A", "B", "rest")

PRESETS = {
    "quick": dict(n_train=256, group_size=12, signal=2.0, width=32, steps=600, lr=0.02,
                  control_lr=0.05, seeds=1, sharpness_every=25, share_every=150,
                  kernel_every=150),
    "full": dict(n_train=512, group_size=24, signal=2.0, width=32, steps=1200, lr=0.02,
                 control_lr=0.05, seeds=2, sharpness_every=25, share_every=150,
                 kernel_every=150),
}

# Running times (SECONDS, see experiments/__init__.py), measured on 2 CPU cores: quick 66 s
# on idle cores (205 s while other jobs ran); full 2789 s (46 min, 4,800 run-steps logged
# at every step) while other jobs ran.
SECONDS = {"quick": 66, "full": 2789}

SHARPENING_START = 0.9   # sharpness(0) eta/2 at most this: sharpening from below
PLATEAU_TOLERANCE = 0.1  # |median late sharpness eta/2 - 1|
ANTIPHASE = -0.5         # correlation of the groups' loss changes, at most
CONCENTRATION = 3.0      # share of A and B in the top eigendirection / their fraction
OUTSIZED = 2.0           # groups' oscillation over the rest's, signal run over control
CONTROL_CONCENTRATION = 2.0


def opposing_signal_task(n_train: int, group_size: int, signal: float, seed: int = 0):
    """Digits images with ``signal`` added to every pixel of ``group_size`` training
    images of ``CLASS_A`` and as many of ``CLASS_B`` (the first ones in the task's
    order); returns ``(task, groups)`` with ``groups = {"A": rows, "B": rows, "rest":
    rows}``. The test set is left as it is."""
    base = td.tasks.digits(n_train=n_train, n_test=200, loss="mse", seed=seed, shape="image")
    x, y = np.array(base.x_train), np.array(base.y_train)
    labels = y.argmax(-1)
    rows = {}
    for name, digit in (("A", CLASS_A), ("B", CLASS_B)):
        found = np.flatnonzero(labels == digit)
        if found.size < group_size:
            raise ValueError(f"group_size must be <= the {found.size} training images of "
                             f"digit {digit} at n_train={n_train}, got {group_size}")
        rows[name] = found[:group_size]
    for name in ("A", "B"):
        x[rows[name]] += signal
    rows["rest"] = np.setdiff1d(np.arange(n_train), np.concatenate([rows["A"], rows["B"]]))
    task = td.tasks.from_arrays(x, y, np.array(base.x_test), np.array(base.y_test),
                                loss="mse", name="digits-opposing-signal")
    return task, rows


def make_spec(n_train, group_size, signal, width, steps, sharpness_every, share_every,
              kernel_every):
    task, groups = opposing_signal_task(n_train, group_size, signal)
    model = td.ConvNet(width=width, depth=2, out_dim=10, parametrization="standard")
    observables = (
        "loss",
        GroupLoss(groups=groups),
        curvature.Sharpness(iterations=20, every=sharpness_every),
        curvature.TopEigenvectorShare(groups=groups, iterations=20, every=share_every),
        KernelObservables(probe_size=32, top_k=4, every=kernel_every),
        td.CoordinateCheck(probe_size=32, every=kernel_every),
    )
    return td.Spec(model, task, td.optimizers.sgd(0.1), steps=steps, log_every=1,
                   observables=observables)


def run(n_train, group_size, signal, width, steps, lr, control_lr, seeds, sharpness_every,
        share_every, kernel_every):
    parts = []
    for amount, rate in ((signal, lr), (0.0, control_lr)):
        spec = make_spec(n_train, group_size, amount, width, steps, sharpness_every,
                         share_every, kernel_every)
        ds = td.sweep(spec, seed=list(range(seeds)), lr=[rate]).squeeze("lr", drop=False)
        parts.append(ds.reset_coords("lr").expand_dims(opposing_signal=[amount > 0]))
    ds = xr.concat(parts, "opposing_signal")
    fraction = 2 * group_size / n_train
    return ds.assign_attrs(signal=signal, group_size=group_size, n_train=n_train,
                           group_fraction=fraction, width=width, steps=steps,
                           class_a=CLASS_A, class_b=CLASS_B)


def _log_changes(ds):
    """Step-to-step changes of each group's log loss over the second half of training."""
    return np.log(second_half(ds.group_loss)).diff("step")


def antiphase(ds):
    """Correlation, per run, of the step-to-step changes of groups A's and B's log losses
    over the second half of training (module doc)."""
    late = _log_changes(ds)
    return xr.corr(late.sel(group="A"), late.sel(group="B"), dim="step")


def oscillation_ratio(ds):
    """Per run: the standard deviation of the groups' log-loss changes over the second
    half (A and B averaged) over that of the rest (module doc)."""
    amplitude = _log_changes(ds).std("step")
    return amplitude.sel(group=["A", "B"]).mean("group") / amplitude.sel(group="rest")


def concentration(ds):
    """``(share_A + share_B) / their fraction of the data``, median over the log points of
    the second half of training at which the share was measured, per run."""
    share = ds.top_eigenvector_share.dropna("step", how="all")
    ratio = share.sel(group=["A", "B"]).sum("group") / ds.attrs["group_fraction"]
    return second_half(ratio).median("step")


def check(ds) -> list[Claim]:
    signal = ds.sel(opposing_signal=True)
    control = ds.sel(opposing_signal=False)
    sharp = signal.sharpness.dropna("step", how="all")
    eta = signal.lr
    start = float((sharp.isel(step=0) * eta / 2).max())
    plateau = float(abs(second_half(sharp).median("step") * eta / 2 - 1).max())
    return [
        Claim("progressive_sharpening", start, SHARPENING_START, "<=",
              description="largest over seeds of the signal run's sharpness at step 0 times "
              "eta/2: it starts below 2/eta and sharpens up to it"),
        Claim("edge_of_stability", plateau, 0.0, "within", PLATEAU_TOLERANCE,
              "largest over seeds of |median sharpness over the second half / (2/eta) - 1| "
              "(Cohen et al. 2021)"),
        Claim("groups_oscillate_in_antiphase", float(antiphase(signal).max()), ANTIPHASE,
              "<=", description="largest over seeds of the correlation of the step-to-step "
              "changes of groups A's and B's log losses over the second half (Rosenfeld & "
              "Risteski 2024: the two groups' losses oscillate in antiphase)"),
        Claim("outsized_oscillation",
              float(oscillation_ratio(signal).min() / oscillation_ratio(control).max()),
              OUTSIZED, ">=", description="the groups' oscillation over the rest's (std of "
              "the step-to-step changes of log L_g over the second half), smallest over the "
              "signal run's seeds over largest over the control's"),
        Claim("top_eigenvector_on_the_groups", float(concentration(signal).min()),
              CONCENTRATION, ">=", description="smallest over seeds of the share of A and B "
              "in the top Hessian eigendirection (median over the second half) over their fraction "
              f"{ds.attrs['group_fraction']:.3f} of the training examples"),
        Claim("control_top_eigenvector_not_on_the_groups",
              float(concentration(control).max()), CONTROL_CONCENTRATION, "<=",
              description="largest over seeds of the same ratio without the shared feature"),
        Claim("no_divergence", float((ds.diverged_at >= 0).sum()), 0.0, "<=",
              description="number of diverged runs"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 5, figsize=(25, 8.4))
    colors = {"A": "tab:red", "B": "tab:blue", "rest": "0.4"}
    steps = ds.step.values
    window = steps >= steps[-1] - min(60, len(steps) // 4)
    for row, flag, label in ((0, True, "with the shared background"),
                             (1, False, "control: no shared background")):
        run_ = ds.sel(opposing_signal=flag).isel(seed=0)
        eta = float(run_.lr)
        ax = axes[row, 0]
        for g in GROUPS:
            ax.plot(steps, run_.group_loss.sel(group=g), color=colors[g], lw=0.8,
                    label=f"group {g}")
        ax.set(yscale="log", xlabel="step", ylabel="training loss on the group (MSE)",
               title=f"{label}, eta={eta:g}")
        ax.legend(fontsize=8)
        ax = axes[row, 1]
        for g in ("A", "B"):
            ax.plot(steps[window], run_.group_loss.sel(group=g)[window], ".-",
                    color=colors[g], lw=0.8, ms=3, label=f"group {g}")
        ax.set(xlabel="step", ylabel="group loss", title="the last steps: "
               f"corr of changes {float(antiphase(ds.sel(opposing_signal=flag)).isel(seed=0)):.2f}")
        ax.legend(fontsize=8)
        ax = axes[row, 2]
        sharp = run_.sharpness.dropna("step")
        ax.plot(sharp.step, sharp, "k.-", label="sharpness (Lanczos)")
        ax.axhline(2 / eta, color="k", ls="--", lw=0.8, label="2/eta")
        share = run_.top_eigenvector_share.dropna("step", how="all")
        ax2 = ax.twinx()
        for g in GROUPS:
            ax2.plot(share.step, share.sel(group=g), "o-", color=colors[g], ms=4,
                     label=f"share of {g}")
        ax2.axhline(ds.attrs["group_fraction"] / 2, color="0.6", ls=":", lw=0.8,
                    label="fraction of A (= of B)")
        ax2.set(ylabel="share of the top eigendirection", ylim=(0, 1))
        ax.set(xlabel="step", ylabel="sharpness", title="sharpness and who carries it")
        ax.legend(fontsize=7, loc="lower left")
        ax2.legend(fontsize=7, loc="lower right")
        ax = axes[row, 3]
        kernel = run_[["kernel_distance", "kernel_alignment"]].dropna("step", how="all")
        ax.plot(kernel.step[1:], kernel.kernel_distance[1:], "o-", ms=4,
                label="NTK distance from init (Fort et al.)")
        ax.set(xlabel="step", ylabel="1 - cos(K_t, K_0)", yscale="log",
               title="CNN: empirical NTK in the loop (32 probe images)")
        ax4 = ax.twinx()
        ax4.plot(kernel.step, kernel.kernel_alignment, "s-", color="tab:orange", ms=4,
                 label="NTK-target alignment")
        ax4.set(ylabel="centred kernel-target alignment")
        ax.legend(fontsize=7, loc="upper left")
        ax4.legend(fontsize=7, loc="lower right")
        ax = axes[row, 4]
        change = run_.activation_change_l1.dropna("step", how="all")
        for m in change.module.values:
            ax.plot(change.step[1:], change.sel(module=m)[1:], "o-", ms=4, label=str(m))
        ax.set(xlabel="step", ylabel="mean |h_t - h_0| on 32 probe images", yscale="log",
               title="CNN: coordinate check in the loop (per layer)")
        ax.legend(fontsize=7)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
