r"""Softmax collapse stops grokking without weight decay; StableMax and ⊥Grad restore it.

Prieto, Barsbey, Mediano & Birdal (2025), "Grokking at the edge of numerical stability"
(ICLR 2025; arXiv:2501.04697). Without regularisation a network that has fitted its
training set keeps lowering the cross-entropy by scaling its logits up (*naive loss
minimisation*, NLM: for a ReLU MLP without biases, by scaling its weights along
themselves, so ``-grad L`` aligns with ``theta``). The margins grow until the
floating-point softmax of most training examples is exactly one-hot (*softmax collapse*,
SC: the sum ``sum_k exp(f_k - max f)`` rounds to exactly 1, the loss term is exactly 0
and the label's logit gets no gradient), learning stops, and the test accuracy stays
where it was. Float64 pushes the collapse to larger margins (later); StableMax (the
cross-entropy of ``s(x) = x + 1`` / ``1 / (1 - x)`` in place of ``exp``,
``dynamics.losses.stablemax_cross_entropy``) and ⊥Grad (the gradient's component along
the weights removed, ``dynamics.optimizers.orthogonal``) each let the network generalise
without weight decay. The observables are ``dynamics.numerical_stability``'s
``SoftmaxCollapse`` and ``GradientWeightAlignment``.

The setup (the authors' code, its defaults and the commands of their Fig. 1)
----------------------------------------------------------------------------
Modular addition ``(a + b) mod p`` with one-hot pairs ``[e_a, e_b]`` (``p = 113`` in the
paper), a fraction ``0.4`` of the ``p^2`` pairs for training; an MLP with two hidden ReLU
layers of 200 units and no biases, PyTorch's default initialisation (uniform with
variance ``1 / (3 fan_in)``: here Gaussian with that variance, ``sigma_w = 1/sqrt(3)`` in
the standard parametrization); full-batch AdamW with weight decay 0 (Adam),
``lr = 0.01``, ``beta1 = 0.9``, ``eps = 1e-25``, ``beta2 = 0.99`` (0.999 for StableMax);
⊥Grad applied per parameter tensor with the projected gradient rescaled to the norm of
the original (the authors' ``OrthoGrad``, ``orthogonal="layer"``, ``rescale=True``). The
four variants are the float32 softmax cross-entropy, the same in float64 (the paper casts
only the logits to float64; here the whole run is float64, ``Spec(dtype="float64")``),
StableMax, and ⊥Grad with the float32 softmax. The collapse is measured as the paper's
logger does, in the precision of the softmax (float64 for the float64 run).

StableMax runs as a model whose outputs are ``log_stablemax`` of the MLP's logits
(``StableMaxMLP``): the task's softmax cross-entropy of log-probabilities is the StableMax
cross-entropy of the logits (``dynamics.losses``); its accuracies are those of the logits
(``s`` is increasing), and its "collapse" is that of the StableMax denominator.

Presets and the paper's scale
-----------------------------
The paper trains ``p = 113`` for up to 80 000 full-batch epochs (StableMax) on a GPU; a
step of that network on the 5108 training pairs costs about 0.09 s on 2 CPU cores. Both
presets therefore use ``p = 59`` (3481 pairs) and the paper's network, optimiser and
learning rate, with a training fraction of 0.5 (at 0.4 and ``p <= 59`` even ⊥Grad does not
generalise within our budget: there are too few pairs per residue), ``quick`` for 2000
steps and ``full`` for 6000 steps with two seeds. Both are far shorter than the paper's
StableMax run (see the StableMax claim).

Claims and tolerances
---------------------
Values are per variant and seed; "late" is the last quarter of the log points.

* ``float32_softmax_collapses``: the smallest over seeds of the late median
  ``softmax_collapse`` of the float32 softmax run is at least 0.5 ("most training
  examples"); measured 0.8-1 (it fluctuates as collapsed examples' logits drift).
* ``collapsed_examples_have_zero_loss``: the same for ``zero_loss_fraction``, the
  examples whose float32 loss term (hence the label logit's gradient) is exactly 0.
* ``float32_test_accuracy_stalls``: the largest test accuracy over seeds and the late
  log points of the float32 softmax run is at most 0.1 (chance is ``1/p``; the ⊥Grad runs
  reach 1 on the same split, so 0.1 separates "stalled" from "generalised" by a wide
  margin).
* ``float64_delays_collapse``: the late median ``softmax_collapse`` of the float64 run
  (in float64) is at most a quarter of the float32 run's (mean over seeds; float64's
  collapse needs margins of about 37 instead of about 17, which NLM reaches much later).
* ``stablemax_generalises`` and ``orthogonal_generalises``: the final test accuracy,
  smallest over seeds, is at least 0.9 (the paper's runs reach about 1).
* ``gradient_aligns_with_weights``: the median of ``gradient_weight_cosine`` over the log
  points of the float32 softmax run after its training accuracy reached 1 and before its
  softmax collapse passed 0.5, smallest over seeds, is at least 0.5. The paper reports a
  cosine near 1 with the NLM direction; 0.5 asks that the negative gradient lie mostly
  along the weights (a random direction has cosine ``O(1/sqrt(#params))``).
* ``no_divergence``: no run is frozen by a non-finite loss.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import xarray as xr

import dynamics as td
from dynamics.losses import log_stablemax
from dynamics.numerical_stability import GradientWeightAlignment, SoftmaxCollapse
from experiments.common import Claim

NAME = "softmax-collapse"
TITLE = "Softmax collapse, StableMax and ⊥Grad (Prieto et al. 2025)"

VARIANTS = ("softmax_float32", "softmax_float64", "stablemax", "orthogonal")

PRESETS = {
    "quick": dict(p=59, train_fraction=0.5, width=200, lr=0.01, steps=2000, log_every=50,
                  seeds=1),
    "full": dict(p=59, train_fraction=0.5, width=200, lr=0.01, steps=6000, log_every=100,
                 seeds=2),
}

# Running times (SECONDS, see experiments/__init__.py), measured on 2 shared CPU cores.
SECONDS = {"quick": None, "full": None}

SIGMA_W = 1.0 / math.sqrt(3.0)  # PyTorch's nn.Linear init: U(+-1/sqrt(fan_in)), var 1/(3 fan_in)
BETA1 = 0.9
BETA2 = {"stablemax": 0.999}  # the authors' Fig. 1 commands; 0.99 (their default) otherwise
BETA2_DEFAULT = 0.99
ADAM_EPS = 1e-25  # the authors' default

MOST = 0.5          # "most training examples" collapse
STALLED = 0.1       # test accuracy of a run that did not generalise
GENERALISED = 0.9   # test accuracy of one that did
DELAY_RATIO = 0.25  # float64's late collapse fraction against float32's
ALIGNED = 0.5       # the negative gradient mostly along the weights


@dataclasses.dataclass(frozen=True)
class StableMaxMLP(td.MLP):
    """``td.MLP`` whose outputs are ``log StableMax`` of its logits (module doc): trained
    with the softmax cross-entropy it minimises the StableMax cross-entropy
    (``dynamics.losses.stablemax_cross_entropy``). Use it with ``output_scale = 1`` and
    no centering (the loop would scale and shift the log-probabilities)."""

    def __post_init__(self):
        super().__post_init__()
        if self.output_scale != 1.0 or self.center:
            raise ValueError(f"StableMaxMLP needs output_scale=1 and center=False, got "
                             f"output_scale={self.output_scale!r}, center={self.center!r}")

    def apply(self, params, x, hparams=None):
        return log_stablemax(super().apply(params, x, hparams))


def _require(cond, field, value, allowed):
    if not cond:
        raise ValueError(f"{field} must be {allowed}, got {value!r}")


def make_spec(variant, p, train_fraction, width, lr, steps, log_every) -> td.Spec:
    """The spec of one variant (module doc)."""
    _require(variant in VARIANTS, "variant", variant, f"one of {list(VARIANTS)}")
    task = td.tasks.modular_arithmetic(p, operation="add", train_fraction=train_fraction,
                                       seed=0, encoding="onehot")
    cls = StableMaxMLP if variant == "stablemax" else td.MLP
    model = cls(width=width, depth=2, out_dim=p, activation="relu",
                parametrization="standard", bias=False, sigma_w=SIGMA_W)
    optimizer = td.optimizers.adam(
        lr, b1=BETA1, b2=BETA2.get(variant, BETA2_DEFAULT), eps=ADAM_EPS,
        orthogonal="layer" if variant == "orthogonal" else "none")
    observables = ("loss", "accuracy", "param_norm", SoftmaxCollapse(),
                   GradientWeightAlignment())
    dtype = "float64" if variant == "softmax_float64" else "float32"
    return td.Spec(model, task, optimizer, steps=steps, log_every=log_every,
                   observables=observables, dtype=dtype)


def run(p, train_fraction, width, lr, steps, log_every, seeds):
    """One sweep over seeds per variant, concatenated along ``variant``."""
    parts = []
    for variant in VARIANTS:
        spec = make_spec(variant, p, train_fraction, width, lr, steps, log_every)
        ds = td.sweep(spec, seed=list(range(seeds)))
        parts.append(ds.astype({v: "float64" for v in ds.data_vars
                                if np.issubdtype(ds[v].dtype, np.floating)})
                     .expand_dims(variant=[variant]))
    ds = xr.concat(parts, "variant", combine_attrs="override")
    return ds.assign_attrs(p=p, train_fraction=train_fraction, width=width, lr=lr)


def _late(da):
    """The last quarter of the log points."""
    n = da.sizes["step"]
    return da.isel(step=slice(n - max(n // 4, 1), None))


def _aligned_window_cosine(run):
    """Median cosine of one run over the log points after its training accuracy reached 1
    and before its collapse fraction passed ``MOST`` (NaN if there are none)."""
    fitted = run.train_accuracy.values >= 1.0
    collapsed = run.softmax_collapse.values >= MOST
    first_collapse = np.argmax(collapsed) if collapsed.any() else len(collapsed)
    window = fitted & (np.arange(len(fitted)) < first_collapse)
    values = run.gradient_weight_cosine.values[window]
    return float(np.median(values)) if values.size else math.nan


def check(ds) -> list[Claim]:
    f32 = ds.sel(variant="softmax_float32")
    f64 = ds.sel(variant="softmax_float64")
    late32 = _late(f32.softmax_collapse).median("step")
    late64 = _late(f64.softmax_collapse).median("step")
    ratio = float(late64.mean()) / max(float(late32.mean()), 1e-12)
    final = ds.test_accuracy.isel(step=-1)
    cosine = min(_aligned_window_cosine(f32.sel(seed=s)) for s in ds.seed.values)
    return [
        Claim("float32_softmax_collapses", float(late32.min()), MOST, ">=",
              description="min over seeds of the late median fraction of training examples "
              "whose float32 softmax sum is exactly 1 (float32 softmax run)"),
        Claim("collapsed_examples_have_zero_loss",
              float(_late(f32.zero_loss_fraction).median("step").min()), MOST, ">=",
              description="min over seeds of the late median fraction of training examples "
              "whose float32 loss term (and the label logit's gradient) is exactly 0"),
        Claim("float32_test_accuracy_stalls", float(_late(f32.test_accuracy).max()), STALLED,
              "<=", description="max over seeds and late log points of the float32 softmax "
              "run's test accuracy (chance 1/p; the ⊥Grad run reaches 1)"),
        Claim("float64_delays_collapse", ratio, DELAY_RATIO, "<=",
              description="late median collapse fraction of the float64 run (its softmax in "
              "float64) over that of the float32 run, means over seeds"),
        Claim("stablemax_generalises", float(final.sel(variant="stablemax").min()),
              GENERALISED, ">=", description="min over seeds of the final test accuracy with "
              "the StableMax cross-entropy, no weight decay"),
        Claim("orthogonal_generalises", float(final.sel(variant="orthogonal").min()),
              GENERALISED, ">=", description="min over seeds of the final test accuracy with "
              "⊥Grad (per-layer projection, rescaled), float32 softmax, no weight decay"),
        Claim("gradient_aligns_with_weights", cosine, ALIGNED, ">=",
              description="min over seeds of the median cos(-grad L, theta) of the float32 "
              "softmax run between fitting the training set (train accuracy 1) and the "
              "collapse of half the examples (naive loss minimisation)"),
        Claim("no_divergence", float((ds.diverged_at >= 0).sum()), 0.0, "<=",
              description="runs frozen by a non-finite loss"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    step = ds.step.values
    colors = dict(zip(VARIANTS, ("tab:red", "tab:purple", "tab:green", "tab:blue")))
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    panels = (
        (axes[0, 0], "accuracy (train --, test -)", None),
        (axes[0, 1], "softmax_collapse", "fraction of training examples collapsed"),
        (axes[1, 0], "gradient_weight_cosine", "cos(-grad L, theta)"),
        (axes[1, 1], "train_loss", "training loss"),
    )
    for variant in VARIANTS:
        c = colors[variant]
        for s in ds.seed.values:
            r = ds.sel(variant=variant, seed=s)
            label = variant if s == ds.seed.values[0] else None
            axes[0, 0].plot(step, r.test_accuracy, "-", color=c, label=label)
            axes[0, 0].plot(step, r.train_accuracy, "--", color=c, lw=0.8)
            axes[0, 1].plot(step, r.softmax_collapse, color=c, label=label)
            axes[1, 0].plot(step, r.gradient_weight_cosine, color=c, label=label)
            axes[1, 1].plot(step, r.train_loss, color=c, label=label)
    for ax, name, ylabel in panels:
        ax.set(xlabel="step", ylabel=ylabel or "accuracy", title=name)
        ax.legend(fontsize=7)
    axes[1, 1].set_yscale("log")
    fig.suptitle(f"{TITLE}: (a + b) mod {ds.attrs.get('p')}, train fraction "
                 f"{ds.attrs.get('train_fraction')}, no weight decay")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
