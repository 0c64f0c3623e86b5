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
(``s`` is increasing), and its "collapse" is that of the StableMax denominator. The
authors evaluate the StableMax loss in float64; here it is float32 (StableMax's
probabilities decay like ``1/margin`` and do not approach float32's resolution at these
margins: its collapse fraction stays 0).

The transformer as a second model
---------------------------------
The authors' transformer (their Fig. 6, ``--use_transformer``) is one PyTorch
``nn.TransformerEncoderLayer`` (post-LayerNorm, ``d_model = 128``, 4 heads, a ReLU MLP
of 2048 units, dropout 0.1, no positional embedding) on the pairs ``[a, b]`` (``p = 113``,
train fraction 0.4), its answer read at the last position, trained full batch by AdamW
without weight decay at ``lr = 0.001`` for 5000 epochs. Here it is ``td.Transformer``
(pre-LayerNorm, causal, learned positions, a GELU MLP of ``4 width`` units, no dropout)
with one block, 4 heads and ``width = 32`` on the sequences ``(a, b, =)`` of
``modular_arithmetic(encoding="tokens")`` (vocabulary ``p + 1``; the target of the last
position is ``(a + b) mod p`` and only that position counts in the loss, the accuracy
and the collapse), ``p = 31`` and train fraction 0.4 (384 training sequences), trained by
the MLP runs' optimiser: full-batch Adam, ``lr = 0.01``, ``beta2 = 0.99``, ``eps =
1e-25``, no weight decay, the float32 softmax cross-entropy. The scale is set by the CPU
budget and by what collapses within it (measured, seed 0, ``SoftmaxCollapse`` only): at
the authors' ``lr = 0.001`` (``p = 59``, ``width = 64``, train fraction 0.7) the loss
falls to ``8e-7`` in 2000 steps (0.1 s a step) with no example collapsed, and at ``p =
31`` the collapse fraction is 0.03 after 3000 steps; at ``lr = 0.01``, ``p = 59``,
``width = 32``, train fraction 0.4 it peaks at 0.29 (step 2200) before an Adam spike
undoes it (see above); at ``p = 31`` it peaks at 0.72, 0.74, 0.73 (seeds 0, 1, 2, steps
2150-2250), with the test accuracy at most 0.04 (chance ``1/p = 0.03``) throughout.

The transformer run carries the in-loop theory tools, shown in the figure's last row:
``dynamics.curvature.Sharpness`` (20 Lanczos steps, every ``sharpness_every`` steps),
``kernels.KernelObservables`` (the traced empirical NTK on the first ``probe_size = 32``
training sequences, only the answer position counting, every ``kernel_every`` steps;
its method ``"auto"`` chooses structured derivatives for this model, 5.5e8 estimated
FLOPs against 1.2e9 for the Jacobian contraction and 1.4e10 for NTK-vector products on 16
probes, and it agrees with the dense Jacobian to float32 rounding, see the tests) and
``dynamics.coordinate_check.CoordinateCheck`` (each block's mean ``|h_t - h_0|`` on the
same probe, every log point). Measured (quick, seed 0): the training set is fitted by
step 100; the sharpness falls from 17 at initialisation to 0.35 at step 250 and 1.7e-4 at
the collapse (the Hessian of the cross-entropy in the outputs, ``diag(p) - p p^T``,
vanishes with the loss as the softmax saturates, and is exactly 0 for a collapsed
example), and returns to 0.1 after the spike; the NTK turns while the network fits (its
distance to ``K_0`` 0.43 at step 250, its centred alignment with the labels 0.40 -> 0.61)
and then only grows (top eigenvalue 1.4e4 -> 5.3e4 from step 250 to the collapse, the
distance within 0.02): naive loss minimisation scales the function, hence the kernel,
without changing its shape; the logits move most (mean ``|g_t - g_0|`` 3.3 at step 100,
5.2 at the collapse) while the embedding stays at 0.19.

Presets and the paper's scale
-----------------------------
The paper trains ``p = 113`` with a training fraction of 0.4 for up to 80 000 full-batch
epochs (StableMax) on a GPU; one step of that network on its 5108 training pairs costs
about 0.09 s on 2 CPU cores (float32; float64 several times more). Both presets therefore
use ``p = 59`` (3481 pairs) with the paper's network, optimiser and learning rate and the
largest training fraction of its Fig. 2, 0.7 (at 0.4-0.5 and ``p = 59`` the float32
softmax, float64 and ⊥Grad runs behave as at the paper's scale, but StableMax's test
accuracy is still below 0.01 after 16 000 steps: there are too few pairs per residue for
its slow generalisation to show within a CPU budget). Each variant has its own number of
steps (``steps``; the shorter runs are NaN past their end): ``quick`` runs 2500 steps
(⊥Grad 500), ``full`` 3000 (⊥Grad 1000) and StableMax 12 000, one seed each (the
paper's curves are single runs too). The transformer runs 2500 steps in ``quick``
(sharpness and NTK every 250) and 3000 in ``full`` (every 200), logged at the MLP runs'
log points; its collapse peaks at steps 2150-2250.

Adam with ``eps = 1e-25`` divides the vanishing gradients of a collapsing run by their
own tiny scale: once most examples have collapsed, the few remaining ones give an
``O(lr)`` step that perturbs the logits, the loss jumps (``1e-8 -> 1e-3``), part of the
collapse is undone and then re-forms. The collapse fraction therefore peaks and
oscillates rather than staying at 1; the claims read its peak.

Claims and tolerances
---------------------
Values are per variant and seed.

* ``float32_softmax_collapses``: the largest ``softmax_collapse`` of the float32 softmax
  run, smallest over seeds, is at least 0.5 ("most training examples"); measured 0.76 at
  its peak near step 1800 (see Adam's oscillation above), after which the test accuracy
  stays at 0.03.
* ``collapsed_examples_have_zero_loss``: the same for ``zero_loss_fraction``, the
  examples whose float32 loss term (hence the label logit's gradient) is exactly 0; once
  the training set is fitted it equals the collapse fraction.
* ``float32_test_accuracy_stalls``: the largest test accuracy of the float32 softmax run
  over seeds and log points is at most 0.1 (chance is ``1/p = 0.017``; the ⊥Grad run
  reaches 1 on the same split, so 0.1 separates "stalled" from "generalised" widely).
* ``float64_delays_collapse``: the largest collapse fraction of the float64 run (its
  softmax in float64) over the float32 run's, in the same number of steps, is at most
  0.25 (float64 needs margins of about 37 instead of about 17: NLM, which grows the
  margins at a roughly constant rate per step, reaches them much later; measured 0: no
  float64 example collapses in the 2500-3000 steps in which the float32 run peaks at
  0.76).
* ``stablemax_generalises`` and ``orthogonal_generalises``: the final test accuracy,
  smallest over seeds, is at least 0.9 (the paper's runs reach about 1). ⊥Grad reaches 1
  within 100 steps. StableMax's test accuracy rises slowly and steadily (0.33 after 2500
  steps, 0.93 after 12 000 in ``full``): the quick preset is too short for it and leaves
  the StableMax run and its claim out (its target is not lowered to fit a short run);
  every claim of each preset passes.
* ``gradient_aligns_with_weights``: the median of ``gradient_weight_cosine`` over the log
  points of the float32 softmax run after its training accuracy reached 1 and before its
  collapse fraction passed 0.5, smallest over seeds, is at least 0.5. The paper reports
  that the gradient aligns strongly with the NLM direction; we measure the cosine of the
  whole gradient with the whole parameter vector at about 0.7 (per layer, in a float32
  run at train fraction 0.5 after 1000 steps: 0.73 for the input layer, 0.87 for the
  hidden and readout layers), clearly aligned (a random
  direction has cosine ``O(1/sqrt(#params)) ~ 0.003``) but not "near 1": 0.5 asks that
  the negative gradient lie mostly along the weights, and the measured value is reported.
* ``no_divergence``: no run is frozen by a non-finite loss (the transformer's included).

The transformer (variant ``transformer``; values per seed, the extremes over seeds):

* ``transformer_fits_training_set``: its largest training accuracy is 1 (measured 1 from
  step 100 on, until the spike after the collapse).
* ``transformer_softmax_collapses``: its largest collapse fraction is at least 0.5, as
  for the MLP (measured 0.72-0.74 over three seeds).
* ``transformer_test_accuracy_stalls``: its largest test accuracy over all log points is
  at most 0.1, as for the MLP (measured 0.03-0.04, chance 0.03).
* ``transformer_sharpness_falls``: its smallest measured sharpness over that at
  initialisation is at most 1e-3 (measured 1e-5: the Hessian vanishes with the loss,
  which falls from 4 to 5e-8; 1e-3 asks for three of those five orders of magnitude).
* ``transformer_ntk_grows``: the top eigenvalue of the empirical NTK at the kernel log
  point of largest collapse fraction over that at the first kernel log point with
  training accuracy 1 is at least 2 (measured 3.8: the logits, and with them the
  Jacobian, keep growing after the fit; 4.1 in ``full``, whose kernel log points are
  every 200 steps).
* ``transformer_ntk_keeps_its_shape``: the kernel distance changes by at most 0.1 between
  the same two log points (measured 0.017, 0.006 in ``full``, against the 0.43 that
  fitting moved it: a kernel that is only scaled keeps its cosine with ``K_0``).
* ``transformer_theory_observables_finite``: no value of its sharpness, NTK or
  coordinate-check observables is non-finite at the log points where they are measured.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import xarray as xr

import dynamics as td
from dynamics.coordinate_check import CoordinateCheck
from dynamics.curvature import Sharpness
from dynamics.losses import log_stablemax
from dynamics.numerical_stability import GradientWeightAlignment, SoftmaxCollapse
from experiments.common import Claim
from kernels.observables import KernelObservables

NAME = "softmax-collapse"
TITLE = "Softmax collapse, StableMax and ⊥Grad (Prieto et al. 2025)"

VARIANTS = ("softmax_float32", "softmax_float64", "stablemax", "orthogonal")
TRANSFORMER = "transformer"  # the variant of the transformer run (module doc)
TRANSFORMER_FIELDS = ("p", "train_fraction", "width", "depth", "heads", "lr", "steps",
                      "log_every", "sharpness_every", "kernel_every", "probe_size")

PRESETS = {
    # quick leaves StableMax out: it needs the full preset's 12,000 steps to generalise
    # (measured: test accuracy 0.33 after 2,500 steps, 0.93 after 12,000)
    "quick": dict(p=59, train_fraction=0.7, width=200, lr=0.01, log_every=50, seeds=1,
                  steps=dict(softmax_float32=2500, softmax_float64=2500, orthogonal=500),
                  transformer=dict(p=31, train_fraction=0.4, width=32, depth=1, heads=4,
                                   lr=0.01, steps=2500, log_every=50, sharpness_every=250,
                                   kernel_every=250, probe_size=32)),
    # full logs every 50 steps as quick: the transformer's collapse peaks for about 100
    # steps (read every 100 steps, its peak measured 0.59 instead of 0.72)
    "full": dict(p=59, train_fraction=0.7, width=200, lr=0.01, log_every=50, seeds=1,
                 steps=dict(softmax_float32=3000, softmax_float64=3000, stablemax=12000,
                            orthogonal=1000),
                 transformer=dict(p=31, train_fraction=0.4, width=32, depth=1, heads=4,
                                  lr=0.01, steps=3000, log_every=50, sharpness_every=200,
                                  kernel_every=200, probe_size=32)),
}

# Running times (SECONDS, see experiments/__init__.py), measured on 2 shared CPU cores:
# quick 149 s (without StableMax; the transformer's sweep 23 s of steps plus its
# compilation), full 782 s wall at a load average of 10 on the 2 cores (406 s of user CPU
# time; before the transformer the full preset took 455 s).
SECONDS = {"quick": 149, "full": 782}

SIGMA_W = 1.0 / math.sqrt(3.0)  # nn.Linear init: U(+-1/sqrt(fan_in)), variance 1/(3 fan_in)
BETA1 = 0.9
BETA2 = {"stablemax": 0.999}  # the authors' Fig. 1 commands; 0.99 (their default) otherwise
BETA2_DEFAULT = 0.99
ADAM_EPS = 1e-25  # the authors' default

MOST = 0.5          # "most training examples" collapse
STALLED = 0.1       # test accuracy of a run that did not generalise
GENERALISED = 0.9   # test accuracy of one that did
DELAY_RATIO = 0.25  # float64's late collapse fraction against float32's
ALIGNED = 0.5       # the negative gradient mostly along the weights
SHARPNESS_ITERATIONS = 20  # Lanczos steps of the transformer's sharpness
SHARPNESS_DROP = 1e-3  # smallest sharpness over the initial one, transformer
NTK_GROWTH = 2.0       # top NTK eigenvalue, collapse against fit
NTK_TURN = 0.1         # change of the kernel distance over the same interval


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


def make_transformer_spec(p, train_fraction, width, depth, heads, lr, steps, log_every,
                          sharpness_every, kernel_every, probe_size) -> td.Spec:
    """The spec of the transformer run (module doc): the sequences ``(a, b, =)`` of
    ``modular_arithmetic(encoding="tokens")``, the loss at the answer position only, a
    pre-LN ``td.Transformer`` trained by the MLP runs' optimiser (Adam, no weight decay,
    float32 softmax cross-entropy), with the collapse, sharpness, NTK and coordinate-check
    observables in the loop."""
    for name, value in (("sharpness_every", sharpness_every), ("kernel_every", kernel_every)):
        _require(isinstance(value, int) and value >= log_every and value % log_every == 0,
                 f"transformer.{name}", value, f"a multiple of log_every={log_every}")
    task = td.tasks.modular_arithmetic(p, operation="add", train_fraction=train_fraction,
                                       seed=0, encoding="tokens")
    model = td.Transformer(vocab_size=p + 1, width=width, depth=depth, heads=heads,
                           parametrization="standard")
    optimizer = td.optimizers.adam(lr, b1=BETA1, b2=BETA2_DEFAULT, eps=ADAM_EPS)
    observables = ("loss", "accuracy", "param_norm", SoftmaxCollapse(),
                   GradientWeightAlignment(),
                   Sharpness(iterations=SHARPNESS_ITERATIONS, every=sharpness_every),
                   KernelObservables(probe_size=probe_size, every=kernel_every),
                   CoordinateCheck(probe_size=probe_size))
    return td.Spec(model, task, optimizer, steps=steps, log_every=log_every,
                   observables=observables)


def _as_float64(ds):
    for name in ds.data_vars:  # one dtype across the float32 and float64 variants
        if np.issubdtype(ds[name].dtype, np.floating):
            ds[name] = ds[name].astype("float64")
    return ds


def run(p, train_fraction, width, lr, steps, log_every, seeds, transformer=None):
    """One sweep over seeds per variant, concatenated along ``variant``; ``steps`` maps
    each variant to run (all but ``stablemax`` are needed) to its number of steps (the
    shorter runs are NaN past their end). ``transformer`` (a dict of
    ``make_transformer_spec``'s arguments, or None) adds the variant ``"transformer"``
    with its own task; its variables that the MLP runs lack (``sharpness``, the NTK's,
    the coordinate check's) are NaN for them."""
    needed = set(VARIANTS) - {"stablemax"}
    _require(isinstance(steps, dict) and needed <= set(steps) <= set(VARIANTS), "steps",
             steps, f"a dict with the keys {sorted(needed)} and optionally 'stablemax'")
    if transformer is not None:
        _require(isinstance(transformer, dict) and set(transformer) == set(TRANSFORMER_FIELDS),
                 "transformer", transformer, f"None or a dict with the keys "
                 f"{list(TRANSFORMER_FIELDS)}")
        transformer_spec = make_transformer_spec(**transformer)  # validated before running
    parts = []
    for variant in (v for v in VARIANTS if v in steps):
        spec = make_spec(variant, p, train_fraction, width, lr, steps[variant], log_every)
        ds = td.sweep(spec, seed=list(range(seeds)))
        parts.append(_as_float64(ds).expand_dims(variant=[variant]))
    attrs = {}
    if transformer is not None:
        ds = td.sweep(transformer_spec, seed=list(range(seeds)))
        parts.append(_as_float64(ds).expand_dims(variant=[TRANSFORMER]))
        attrs["transformer"] = json.dumps(transformer)
    ds = xr.concat(parts, "variant", join="outer", combine_attrs="override")
    return ds.assign_attrs(p=p, train_fraction=train_fraction, width=width, lr=lr,
                           steps_per_variant=json.dumps(steps), **attrs)


def _final(da):
    """The value at each run's last log point (runs of different lengths: NaN after)."""
    last = da.notnull().cumsum("step").argmax("step")  # first index of the final count
    return da.isel(step=last)


def _aligned_window_cosine(run):
    """Median cosine of one run over the log points after its training accuracy reached 1
    and before its collapse fraction passed ``MOST`` (NaN if there are none)."""
    run = run.dropna("step", subset=["train_accuracy"])
    fitted = run.train_accuracy.values >= 1.0
    collapsed = run.softmax_collapse.values >= MOST
    first_collapse = np.argmax(collapsed) if collapsed.any() else len(collapsed)
    window = fitted & (np.arange(len(fitted)) < first_collapse)
    values = run.gradient_weight_cosine.values[window]
    return float(np.median(values)) if values.size else math.nan


def check(ds) -> list[Claim]:
    f32 = ds.sel(variant="softmax_float32")
    f64 = ds.sel(variant="softmax_float64")
    peak32 = f32.softmax_collapse.max("step")
    peak64 = f64.softmax_collapse.max("step")
    ratio = float(peak64.mean()) / max(float(peak32.mean()), 1e-12)
    final = _final(ds.test_accuracy)
    cosine = min(_aligned_window_cosine(f32.sel(seed=s)) for s in ds.seed.values)
    return [
        Claim("float32_softmax_collapses", float(peak32.min()), MOST, ">=",
              description="min over seeds of the largest fraction of training examples "
              "whose float32 softmax sum is exactly 1 (float32 softmax run)"),
        Claim("collapsed_examples_have_zero_loss",
              float(f32.zero_loss_fraction.max("step").min()), MOST, ">=",
              description="min over seeds of the largest fraction of training examples "
              "whose float32 loss term (and the label logit's gradient) is exactly 0"),
        Claim("float32_test_accuracy_stalls", float(f32.test_accuracy.max()), STALLED,
              "<=", description="max over seeds and log points of the float32 softmax run's "
              "test accuracy (chance 1/p; the ⊥Grad run reaches 1 on the same split)"),
        Claim("float64_delays_collapse", ratio, DELAY_RATIO, "<=",
              description="largest collapse fraction of the float64 run (its softmax in "
              "float64) over that of the float32 run in the same number of steps, means "
              "over seeds"),
    ] + ([
        Claim("stablemax_generalises", float(final.sel(variant="stablemax").min()),
              GENERALISED, ">=", description="min over seeds of the final test accuracy with "
              "the StableMax cross-entropy, no weight decay"),
    ] if "stablemax" in ds.variant.values else []) + [
        Claim("orthogonal_generalises", float(final.sel(variant="orthogonal").min()),
              GENERALISED, ">=", description="min over seeds of the final test accuracy with "
              "⊥Grad (per-layer projection, rescaled), float32 softmax, no weight decay"),
        Claim("gradient_aligns_with_weights", cosine, ALIGNED, ">=",
              description="min over seeds of the median cos(-grad L, theta) of the float32 "
              "softmax run between fitting the training set (train accuracy 1) and the "
              "collapse of half the examples (naive loss minimisation)"),
        Claim("no_divergence", float((ds.diverged_at >= 0).sum()), 0.0, "<=",
              description="runs frozen by a non-finite loss"),
    ] + (transformer_claims(ds.sel(variant=TRANSFORMER))
         if TRANSFORMER in ds.variant.values else [])


# the transformer's in-loop theory observables and the stride they are measured at
THEORY_VARIABLES = {"sharpness": "sharpness_every", "kernel_distance": "kernel_every",
                    "kernel_alignment": "kernel_every", "ntk_eigenvalues": "kernel_every",
                    "activation_change_l1": "log_every"}


def _nonfinite_measurements(t, config):
    """How many values of the transformer run's theory observables are not finite at the
    log points where they are measured (step 0 and every multiple of their stride up to
    the run's end; a strided observable is NaN elsewhere by design)."""
    count = 0
    for name, stride in THEORY_VARIABLES.items():
        steps = np.arange(0, config["steps"] + 1, config[stride])
        count += int(np.sum(~np.isfinite(t[name].sel(step=steps).values)))
    return count


def _ntk_growth(run):
    """``(eigenvalue ratio, |distance change|)`` of one transformer run between its first
    kernel log point with training accuracy 1 and its kernel log point of largest
    collapse fraction (NaN if there are none)."""
    run = run.dropna("step", subset=["kernel_distance"])
    fitted = np.flatnonzero(run.train_accuracy.values >= 1.0)
    if fitted.size == 0:
        return math.nan, math.nan
    start = int(fitted[0])
    peak = start + int(np.argmax(run.softmax_collapse.values[start:]))
    top = run.ntk_eigenvalues.isel(ntk_index=0).values
    distance = run.kernel_distance.values
    return float(top[peak] / top[start]), float(abs(distance[peak] - distance[start]))


def transformer_claims(t) -> list[Claim]:
    """The claims of the transformer run (module doc), ``t`` its variant."""
    config = json.loads(t.attrs["transformer"])
    peak = t.softmax_collapse.max("step")
    sharpness_drop = t.sharpness.min("step") / t.sharpness.sel(step=0)
    growth = [_ntk_growth(t.sel(seed=s)) for s in t.seed.values]
    return [
        Claim("transformer_fits_training_set", float(t.train_accuracy.max("step").min()),
              1.0, ">=", description="min over seeds of the transformer's largest training "
              "accuracy (the answer position)"),
        Claim("transformer_softmax_collapses", float(peak.min()), MOST, ">=",
              description="min over seeds of the transformer's largest fraction of training "
              "examples whose float32 softmax sum is exactly 1"),
        Claim("transformer_test_accuracy_stalls", float(t.test_accuracy.max()), STALLED,
              "<=", description="max over seeds and log points of the transformer's test "
              "accuracy (chance 1/p)"),
        Claim("transformer_sharpness_falls", float(sharpness_drop.max()), SHARPNESS_DROP,
              "<=", description="max over seeds of the smallest measured sharpness of the "
              "transformer over its sharpness at initialisation (the Hessian of the "
              "cross-entropy vanishes with the loss as the softmax saturates)"),
        Claim("transformer_ntk_grows", min(g for g, _ in growth), NTK_GROWTH, ">=",
              description="min over seeds of the top empirical-NTK eigenvalue at the kernel "
              "log point of largest collapse fraction over that at the first kernel log "
              "point with training accuracy 1 (naive loss minimisation scales the kernel)"),
        Claim("transformer_ntk_keeps_its_shape", max(d for _, d in growth), NTK_TURN, "<=",
              description="max over seeds of |kernel_distance| change between the same two "
              "log points (scaling the kernel leaves its cosine with K_0 unchanged)"),
        Claim("transformer_theory_observables_finite",
              float(_nonfinite_measurements(t, config)),
              0.0, "<=", description="non-finite values of the transformer's in-loop "
              "sharpness, empirical-NTK and coordinate-check observables at the log points "
              "where they are measured"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    step = ds.step.values
    colors = dict(zip(VARIANTS, ("tab:red", "tab:purple", "tab:green", "tab:blue")))
    has_transformer = TRANSFORMER in ds.variant.values
    mosaic = [["acc", "acc", "sc", "sc"], ["cos", "cos", "loss", "loss"]]
    if has_transformer:
        mosaic.append(["t_acc", "t_sharp", "t_ntk", "t_coord"])
    fig, axes = plt.subplot_mosaic(mosaic, figsize=(15, 4.2 * len(mosaic)))
    panels = (
        (axes["acc"], "accuracy (train --, test -)", None),
        (axes["sc"], "softmax_collapse", "fraction of training examples collapsed"),
        (axes["cos"], "gradient_weight_cosine", "cos(-grad L, theta)"),
        (axes["loss"], "train_loss", "training loss"),
    )
    for variant in (v for v in ds.variant.values if str(v) in colors):
        c = colors[str(variant)]
        for s in ds.seed.values:
            r = ds.sel(variant=variant, seed=s)
            label = variant if s == ds.seed.values[0] else None
            axes["acc"].plot(step, r.test_accuracy, "-", color=c, label=label)
            axes["acc"].plot(step, r.train_accuracy, "--", color=c, lw=0.8)
            axes["sc"].plot(step, r.softmax_collapse, color=c, label=label)
            axes["cos"].plot(step, r.gradient_weight_cosine, color=c, label=label)
            axes["loss"].plot(step, r.train_loss, color=c, label=label)
    for ax, name, ylabel in panels:
        ax.set(xlabel="step", ylabel=ylabel or "accuracy", title=f"MLP: {name}")
        ax.legend(fontsize=7)
    axes["loss"].set_yscale("log")
    if has_transformer:
        _plot_transformer(ds, axes)
    fig.suptitle(f"{TITLE}: (a + b) mod {ds.attrs.get('p')}, train fraction "
                 f"{ds.attrs.get('train_fraction')}, no weight decay")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_transformer(ds, axes):
    """The row of the transformer run: its collapse fraction and accuracies, and the
    in-loop theory observables (sharpness, empirical NTK, coordinate check)."""
    config = json.loads(ds.attrs.get("transformer", "{}"))
    where = f"transformer, (a + b) mod {config.get('p')}\n"
    t = ds.sel(variant=TRANSFORMER)
    seeds = ds.seed.values
    eigen_axis = axes["t_ntk"].twinx()
    for k, s in enumerate(seeds):
        r = t.sel(seed=s)
        first = k == 0
        ok = r.train_accuracy.notnull().values
        step = r.step.values[ok]
        axes["t_acc"].plot(step, r.softmax_collapse.values[ok], color="k",
                           label="collapse fraction" if first else None)
        axes["t_acc"].plot(step, r.train_accuracy.values[ok], "--", color="tab:orange",
                           label="train accuracy" if first else None)
        axes["t_acc"].plot(step, r.test_accuracy.values[ok], color="tab:orange",
                           label="test accuracy" if first else None)
        for name, ax, style in (("sharpness", axes["t_sharp"], "o-"),
                                ("kernel_distance", axes["t_ntk"], "o-"),
                                ("kernel_alignment", axes["t_ntk"], "s--")):
            da = r[name].dropna("step")
            ax.plot(da.step.values, da.values, style, ms=3,
                    label=name.replace("_", " ") if first else None)
        top = r.ntk_eigenvalues.isel(ntk_index=0).dropna("step")
        eigen_axis.plot(top.step.values, top.values, "^:", ms=3, color="tab:gray",
                        label="top NTK eigenvalue (right)" if first else None)
        change = r.activation_change_l1.dropna("step", how="all")
        for i, module in enumerate(change.module.values):
            axes["t_coord"].plot(change.step.values, change.sel(module=module).values,
                                 color=f"C{i}", label=str(module) if first else None)
    axes["t_acc"].set(xlabel="step", ylabel="fraction",
                      title=f"{where}collapse fraction, accuracy")
    axes["t_sharp"].set(xlabel="step", ylabel="largest Hessian eigenvalue", yscale="log",
                        title=f"{where}sharpness (Lanczos)")
    axes["t_ntk"].set(xlabel="step", ylabel="1 - cos(K_t, K_0); centred alignment",
                      title=f"{where}empirical NTK, {config.get('probe_size')} examples")
    axes["t_coord"].set(xlabel="step", ylabel="mean |h_t - h_0|", yscale="log",
                        title=f"{where}coordinate check")
    eigen_axis.set(yscale="log", ylabel="top eigenvalue of K_t")
    for name in ("t_acc", "t_sharp", "t_ntk", "t_coord"):
        axes[name].legend(fontsize=7)
    eigen_axis.legend(fontsize=7, loc="center right")
