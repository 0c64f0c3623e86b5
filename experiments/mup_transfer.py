r"""Hyperparameter transfer across width under muP, with Adam: the coordinate check and
the learning rate.

Yang et al. (2022), "Tensor Programs V: Tuning large neural networks via zero-shot
hyperparameter transfer" (arXiv:2203.03466). Under the maximal-update parametrization
every layer's activations move by ``Θ(1)`` in a step at any width (their Fig. 5, the
coordinate check), so the training dynamics converge as the width grows and the best
learning rate of a narrow model is that of a wide one (their Fig. 1: Adam on a
Transformer; under the standard parametrization the best learning rate falls with width,
and the loss at the best learning rate can even get worse). Their Table 3 gives the
learning-rate multipliers of Adam (hidden weights ``∝ 1/fan_in``), which
``dynamics.parametrization`` writes for both families.

Here, for every architecture of the preset (``mlp``; ``transformer``):

1. **Coordinate check** (``td.coord_check``): a few Adam steps at a large learning rate
   at every width, each layer's mean absolute activation change ``mean |h_t - h_0|``
   (microsoft/mup's l1), SP against muP; the slope of its log against the log width is
   fitted for every layer and step (``dynamics.coordinate_check.slopes``).
2. **Learning-rate transfer**: the training loss after a fixed budget of full-batch Adam
   steps on a grid of learning rates ``2^k`` at widths spanning a factor 16, SP against
   muP, mean over seeds; the best learning rate at each width is the grid point of least
   loss.

The MLP (``td.MLP``, depth 2, ReLU) learns a ten-class Gaussian mixture whose classes
overlap (``separation = 1``: not separable in the budget) by cross-entropy; its muP is
Bordelon & Pehlevan's form at ``gamma0 = 1`` with the Adam column of the parametrization
table, and a zero-initialised readout (microsoft/mup's ``readout_zero_init``). Adam's
``eps`` is ``1e-12`` in every run: under muP the hidden weights' gradients are
``O(1/width)``, and with optax's default ``1e-8`` the update of the widest models is no
longer ``lr * sign(g)`` (measured while building this: the hidden layers' change after
three steps falls by 40% from width 64 to 2048 at ``eps = 1e-8``, by under 1% at
``1e-12``). The Transformer (``td.Transformer``, pre-LayerNorm, causal) predicts the next
token of sequences from a random Markov chain (``td.tasks.markov_chain``, whose Bayes
cross-entropy is known); its muP is microsoft/mup's form at the base width (standard
at the base shapes: ``1/d`` attention, ``MuReadout``, Adam hidden learning rates
``1/r``).

Presets: ``quick`` runs both coordinate checks and the MLP's learning-rate sweep (widths
32..512); ``full`` adds the Transformer's learning-rate sweep (widths 16..256, base 16)
and widens the MLP's. The paper's Fig. 1 trains Transformers of width 128..8192 on
WikiText-2 for thousands of steps on GPUs; here every run fits 2 CPU cores.

Claims, for each architecture (measured values in ``summary.json``; the learning-rate
claims for the architectures whose sweep the preset runs):

* ``{arch}_mup_coordinates_flat``: under muP, every layer's activation change has a
  width slope of magnitude at most 0.1 at every step (Tensor Programs V, Fig. 5);
* ``{arch}_sp_output_grows``: under SP the output's change grows, slope at least 0.7
  at every step (with Adam it is ``Θ(width)``);
* ``{arch}_mup_best_lr_stable``: under muP the best learning rate moves by at most one
  grid point (a factor 2) across the 16x width range;
* ``{arch}_sp_best_lr_shifts``: under SP it moves by at least two (a factor 4);
* ``{arch}_mup_wider_not_worse``: under muP the loss at the best learning rate of the
  widest model is at most that of the narrowest ("wider is better", their Fig. 1).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import dynamics as td
from dynamics import coordinate_check
from experiments.common import Claim, best_grid_point

NAME = "mup-transfer"
TITLE = ("Hyperparameter transfer across width (Tensor Programs V): coordinate check and "
         "Adam learning rate, SP vs muP")

MLP = dict(coord_widths=(64, 128, 256, 512, 1024), coord_lr=1e-2, coord_steps=3,
           widths=(32, 64, 128, 256, 512), log2_lrs=(-12, 2), steps=20, n_train=512,
           seeds=2)
# the transformer's coordinate check: widths 32..512 (base 32, 4 heads), sequences of 8
# tokens; its learning-rate sweep (widths 16..256, base 16) only in the full preset
TRANSFORMER = dict(coord_widths=(32, 64, 128, 256, 512), coord_lr=1e-3, coord_steps=3,
                   widths=None, n_train=16, seq_len=8, seeds=2)
PRESETS = {
    "quick": dict(archs={"mlp": MLP, "transformer": TRANSFORMER}),
    "full": dict(archs={
        "mlp": {**MLP, "coord_widths": (64, 128, 256, 512, 1024, 2048),
                "widths": (64, 128, 256, 512, 1024), "log2_lrs": (-14, 2), "steps": 30,
                "n_train": 1024, "seeds": 2},
        "transformer": {**TRANSFORMER, "widths": (16, 32, 64, 128, 256),
                        "log2_lrs": (-10, 0), "steps": 20, "n_train": 64, "seq_len": 16,
                        "seeds": 2}}),
}
# Running times (SECONDS, see experiments/__init__.py), measured on 2 CPU cores shared
# with other jobs: quick 67 s, full 997 s.
SECONDS = {"quick": 67, "full": 997}

FLAT = 0.1        # |slope| of every muP layer's change
GROWS = 0.7       # SP output's change slope, at least
STABLE = 1        # grid points the muP best lr may move
SHIFTS = 2        # grid points the SP best lr moves, at least
PARAMETRIZATIONS = ("standard", "mup")
ADAM_EPS = 1e-12  # below every gradient entry (module doc)


def mlp_spec(width, parametrization, lr, steps, n_train, log_every=None, seq_len=None):
    task = td.tasks.gaussian_mixture(n_classes=10, dim=40, separation=1.0, n_train=n_train,
                                     n_test=200, seed=0, loss="cross_entropy")
    model = td.MLP(width=width, depth=2, out_dim=10, activation="relu",
                   parametrization=parametrization, zero_readout=parametrization == "mup")
    return td.Spec(model, task, td.optimizers.adam(lr, eps=ADAM_EPS), steps=steps,
                   log_every=log_every or steps, observables=("loss",))


def transformer_spec(width, parametrization, lr, steps, n_train, log_every=None,
                     seq_len=16, base_width=None):
    task = td.tasks.markov_chain(vocab_size=32, seq_len=seq_len, n_train=n_train,
                                 n_test=16, seed=0)
    model = td.Transformer(vocab_size=32, width=width, depth=2, heads=4,
                           base_width=base_width or width, parametrization=parametrization,
                           zero_readout=parametrization == "mup")
    return td.Spec(model, task, td.optimizers.adam(lr, eps=ADAM_EPS), steps=steps,
                   log_every=log_every or steps, observables=("loss",))


SPECS = {"mlp": mlp_spec, "transformer": transformer_spec}


def _prefixed(ds, arch, keep=("seed", "parametrization")):
    """Every variable and dimension of ``ds`` renamed ``{arch}_{name}`` (but ``keep``), so
    that the parts of different architectures and grids share one Dataset."""
    dims = {d: f"{arch}_{d}" for d in ds.dims if d not in keep}
    names = {v: f"{arch}_{v}" for v in ds.data_vars}
    return ds.rename({**dims, **names})


def run_arch(arch, coord_widths, coord_lr, coord_steps, widths, n_train, seeds,
             log2_lrs=None, steps=None, seq_len=None):
    make = SPECS[arch]
    extra = {} if seq_len is None else {"seq_len": seq_len}
    parts = []
    for p in PARAMETRIZATIONS:
        if arch == "transformer":
            extra["base_width"] = coord_widths[0]
        spec = make(coord_widths[0], p, coord_lr, coord_steps, n_train, log_every=1, **extra)
        ds, _ = td.coord_check(spec, coord_widths, coord_steps, seeds=range(seeds),
                               probe_size=min(32, n_train))
        parts.append(ds[["activation_change_l1", "activation_l1"]]
                     .expand_dims(parametrization=[p]))
    coord = xr.concat(parts, "parametrization").rename(width="coord_width",
                                                       step="coord_step")
    if widths is None:
        return _prefixed(coord, arch)
    lrs = [2.0 ** k for k in range(log2_lrs[0], log2_lrs[1] + 1)]
    parts = []
    for p in PARAMETRIZATIONS:
        if arch == "transformer":
            extra["base_width"] = widths[0]
        spec = make(widths[0], p, lrs[0], steps, n_train, **extra)
        ds = td.sweep(spec, seed=list(range(seeds)), lr=lrs, width=list(widths))
        final = ds.train_loss.isel(step=-1).rename("final_loss")
        parts.append(final.to_dataset().assign(
            diverged=(ds.diverged_at >= 0)).expand_dims(parametrization=[p]))
    transfer = xr.concat(parts, "parametrization").drop_vars("step")
    merged = xr.merge([coord, transfer], combine_attrs="drop_conflicts")
    return _prefixed(merged, arch).assign_attrs({f"{arch}_steps": steps})


def run(archs):
    return xr.merge([run_arch(arch, **cfg) for arch, cfg in archs.items()],
                    combine_attrs="drop_conflicts").assign_attrs(archs=list(archs))


def _coords(ds, arch):
    """The coordinate-check variables of ``arch`` with their plain names."""
    a = f"{arch}_"
    sub = ds[[v for v in ds.data_vars if v in (a + "activation_change_l1",
                                                a + "activation_l1")]]
    sub = sub.rename({v: v[len(a):] for v in sub.data_vars})
    return sub.rename({d: d[len(a):] for d in sub.dims if d.startswith(a)}).rename(
        coord_width="width", coord_step="step")


def best_lrs(ds, arch):
    """``(log2 best lr, loss there)`` per parametrization and width
    (``experiments.common.best_grid_point``: mean over seeds, a diverged run infinitely
    bad)."""
    return best_grid_point(ds[f"{arch}_final_loss"], ds[f"{arch}_diverged"],
                           dim=f"{arch}_lr")


def check(ds) -> list[Claim]:
    claims = []
    for arch in ds.attrs["archs"]:
        slope = coordinate_check.slopes(_coords(ds, arch)).sel(step=slice(1, None))
        mup, sp = slope.sel(parametrization="mup"), slope.sel(parametrization="standard")
        output = str(sp.module.values[-1])
        claims += [
            Claim(f"{arch}_mup_coordinates_flat", float(np.abs(mup).max()), FLAT, "<=",
                  description="max over layers and steps of |width slope| of mean |h_t - "
                  "h_0| under muP (Adam)"),
            Claim(f"{arch}_sp_output_grows", float(sp.sel(module=output).min()), GROWS, ">=",
                  description="min over steps of the width slope of the output's mean "
                  "|g_t - g_0| under SP (Adam)"),
        ]
        if f"{arch}_final_loss" not in ds:
            continue
        best, loss = best_lrs(ds, arch)
        w = f"{arch}_width"
        shift = (best.max(w) - best.min(w))
        claims += [
            Claim(f"{arch}_mup_best_lr_stable", float(shift.sel(parametrization="mup")),
                  STABLE, "<=", description="grid points (log2) between the largest and "
                  "smallest best learning rate across widths, muP"),
            Claim(f"{arch}_sp_best_lr_shifts", float(shift.sel(parametrization="standard")),
                  SHIFTS, ">=", description="the same under SP"),
            Claim(f"{arch}_mup_wider_not_worse",
                  float(loss.sel(parametrization="mup").isel({w: -1})),
                  float(loss.sel(parametrization="mup").isel({w: 0})), "<=",
                  description="loss at the best learning rate, widest vs narrowest model, "
                  "muP"),
        ]
    return claims


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    archs = ds.attrs["archs"]
    fig, axes = plt.subplots(len(archs), 4, figsize=(18, 4.2 * len(archs)), squeeze=False)
    for row, arch in zip(axes, archs):
        coords = _coords(ds, arch)
        last = int(coords.step.max())
        for ax, p in zip(row[:2], PARAMETRIZATIONS):
            change = coords.activation_change_l1.sel(parametrization=p, step=last).mean("seed")
            for module in change.module.values:
                ax.loglog(change.width, change.sel(module=module), "o-", ms=3,
                          label=str(module))
            ax.set(xlabel="width", ylabel=f"mean |h_t - h_0| at t = {last}",
                   title=f"{arch}: coordinate check, {p}")
            ax.set_xticks(change.width.values, [str(w) for w in change.width.values])
            ax.minorticks_off()
            ax.legend(fontsize=6)
        if f"{arch}_final_loss" not in ds:
            for ax in row[2:]:
                ax.set_axis_off()
            continue
        loss = ds[f"{arch}_final_loss"].mean("seed")
        best, _ = best_lrs(ds, arch)
        for ax, p in zip(row[2:], PARAMETRIZATIONS):
            for width in loss[f"{arch}_width"].values:
                curve = loss.sel(parametrization=p, **{f"{arch}_width": width})
                line, = ax.semilogx(ds[f"{arch}_lr"], curve, "o-", ms=3,
                                    label=f"width {width}", base=2)
                b = float(best.sel(parametrization=p, **{f"{arch}_width": width}))
                ax.axvline(2 ** b, color=line.get_color(), lw=0.6, ls=":")
            top = float(loss.sel(parametrization=p).isel({f"{arch}_lr": 0}).max())
            ax.set(xlabel="Adam learning rate", ylabel="training loss after the budget",
                   ylim=(0, 1.3 * top), title=f"{arch}: learning rate, {p}")
            ax.legend(fontsize=6)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
