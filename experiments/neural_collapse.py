r"""Dang, Tran, Osher, Tran-The, Ho & Nguyen (2023), "Neural Collapse in Deep Linear
Networks: From Balanced to Imbalanced Data" (ICML 2023; arXiv:2301.00437): gradient
descent with weight decay on unconstrained features followed by ``M`` linear layers
reaches the paper's global minimiser: within-class collapse (NC1), an orthogonal frame
(bias-free) or a simplex ETF (last-layer bias) for balanced classes, and for imbalanced
classes the "general orthogonal frame" whose lengths ``s_k`` solve the paper's scalar
equation (``kernels.neural_collapse``).

Setting (the paper's synthetic "direct optimization" experiment, Sec. 5)
-------------------------------------------------------------------------
``K = 4`` classes, ``n_k = 100`` examples each (balanced) or ``(200, 100, 50, 50)``
(imbalanced), ``N = 400``; features of dimension ``d = 64``; ``lambda_W = lambda_H =
5e-4`` on every layer and on the features, an unregularised last-layer bias
(``lambda_b = 0``) in the bias case; SGD with momentum 0.9 and step 0.1 for 30000
iterations from ``N(0, 0.1^2)`` entries; depths ``M`` in ``{1, 3, 6}``.

In traindyn. The unconstrained features are the first layer of a linear ``td.MLP``
whose inputs are the one-hot codes of the examples (``x_i = e_i``, ``N x N``): its
weights (``N x d``, ``params[0]["w"]``) are ``H^T`` and its output on ``x_i`` is the
feature ``h_i``. ``depth = M`` hidden layers then give ``M`` more weight layers, ``W_1^T
... W_M^T``, so the network is ``g(x_i) = W_M ... W_1 h_i (+ b)``: ``td.MLP(width=d,
depth=M, out_dim=K, activation="linear", parametrization="standard", bias=False,
readout_bias=...)``. Loss: ``td.tasks.from_arrays(I_N, Y^T)`` with the mse loss, ``L =
(1/N) sum_i ||g(x_i) - y_i||^2``, twice the paper's fit term; with coupled (L2) weight
decay ``weight_decay = 2 lambda`` on every weight (the default mask decays the weights
and not the bias, which is the paper's ``lambda_b = 0``) the gradient is ``2 grad F``, so
the paper's step 0.1 is our ``lr = 0.05`` (momentum ``optax.sgd(momentum=0.9)``, the
same heavy-ball form as the paper's optimizer). Initial entries: standard
parametrization, ``sigma_w / sqrt(fan_in)`` with ``sigma_w = 0.8``: 0.1 for the ``d x d``
and ``K x d`` layers (the paper's), 0.04 for ``H`` (fan-in ``N``; the minimiser does not
depend on the initialisation, only the time to reach it does).

Measured (``dynamics.observables_collapse.NeuralCollapse`` on the features ``H``, the
first layer's outputs, and the classifier ``W = W_M ... W_1`` of ``ClassifierGram``):
``nc1 = tr(Sigma_W Sigma_B^+)/K``; the paper's NC2 distances ``|| G/||G|| - G*/||G*|| ||_F``
of ``G = W W^T`` to ``I_K`` (bias-free), ``I - 1 1^T/K`` (bias) and ``diag(s_k^{2M})``
(imbalanced); and the relative Frobenius error of ``W W^T`` and of the class-mean
features' Gram ``Hbar^T Hbar`` to the closed forms in absolute scale
(``kernels.neural_collapse.closed_form``), which is stronger than the paper's normalised
distances.

Claims and tolerances
---------------------
1. ``nc1 <= 1e-3`` at the end of every run (the issue's threshold).
2. Balanced, bias-free: the NC2 distance of ``W W^T`` to ``I_K`` ``<= 0.01``; with the
   bias, to the simplex ETF ``<= 0.01``. A distance ``eps`` is a relative perturbation of
   about ``eps`` of the frame; 0.01 lies far below the distance between the two
   candidate geometries (``||I/2 - ETF/||ETF||_F|| = 0.27`` for ``K = 4``, so each claim
   tells the frames apart) and far above what the runs leave (measured: 1.2e-5 quick,
   4e-6 full, the float32 floor of the normalised Gram).
3. Imbalanced, bias-free: ``W W^T`` within 5% (relative Frobenius, absolute scale) of
   ``diag(s_k^{2M})`` with ``s_k`` from the root of the paper's scalar equation (the
   issue's 5%); the class-mean features' Gram within 5% of its closed form too. What the
   5% covers: the runs stop at a finite step (the slowest direction of the regularised
   landscape contracts at a rate ``~ lr lambda / (1 - momentum)`` per step) and float32;
   measured 6e-5 (quick) and 3e-5 (full), so the claim has room for shorter runs or
   other seeds and would still catch a wrong root (another ``x`` of (2), or the paper's
   equation with our loss's factor 2 left in, moves ``s_k^{2M}`` by tens of percent).
4. NC3 (self-duality), seen through the outputs: the outputs on the class means, ``W
   Hbar + b 1^T``, within 5% (relative Frobenius) of the closed form, in every case: the
   classifier's rows align with the class means with the closed form's lengths.
5. Every run reaches the closed-form objective: ``|F_T / F* - 1|`` (the paper's objective
   at the last step, against the closed form) within 1%: the runs found the global
   minimiser, not another stationary point (for ``M >= 2`` the origin is a local
   minimum too). What is left at a finite step is the initial weights' components that
   the fit does not see (most of ``H``'s ``N x d`` entries and of the ``d x d`` layers),
   which only the decay removes, their squared norm falling as ``exp(-2 lr (2 lambda) t
   / (1 - momentum)) = exp(-t / 1000)`` in our units (``lr = 0.05``): a few 1e-4 of
   ``F`` after the quick preset's 8000 steps (measured 9.8e-4, with the transient of the
   heavy ball), nothing after the full preset's 30000 but float32 rounding (measured
   1.9e-7).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
import xarray as xr

import dynamics as td
from dynamics.checks import check_float, check_int
from dynamics.observables import Observable
from dynamics.observables_collapse import NeuralCollapse
from experiments.common import Claim
from kernels import neural_collapse as theory

NAME = "neural-collapse"
TITLE = ("Neural collapse in deep linear networks (Dang et al. 2023): unconstrained "
         "features + M linear layers with weight decay, balanced and imbalanced classes")

CASES = ("balanced", "balanced_bias", "imbalanced")

PRESETS = {
    "quick": dict(n_balanced=(100, 100, 100, 100), n_imbalanced=(200, 100, 50, 50),
                  width=64, depths=(1, 3), lambda_w=5e-4, lambda_h=5e-4, lr=0.1,
                  momentum=0.9, steps=8000, log_every=200, seeds=1),
    "full": dict(n_balanced=(100, 100, 100, 100), n_imbalanced=(200, 100, 50, 50),
                 width=64, depths=(1, 3, 6), lambda_w=5e-4, lambda_h=5e-4, lr=0.1,
                 momentum=0.9, steps=30000, log_every=300, seeds=2),
}

# Running times (SECONDS, see experiments/__init__.py), on 2 cores shared with other jobs:
# quick 36 s (40 s wall with start-up and figure), full 602 s and 685 s in two runs
# (608 s and 691 s wall; 2 seeds x 3 depths x 3 cases x 30000 steps, 800 to 1500
# run-steps/s as the other jobs allowed: the one-hot inputs make the first layer an
# N x N by N x d product per step). The two full runs gave bitwise the same claims.
SECONDS = {"quick": 36, "full": 600}

NC1_TARGET = 1e-3
FRAME_TOLERANCE = 0.01
CLOSED_FORM_TOLERANCE = 0.05
OBJECTIVE_TOLERANCE = 0.01
SIGMA_W = 0.8


@dataclasses.dataclass(frozen=True)
class ClassifierGram(Observable):
    """``classifier_gram = W W^T`` (``K x K``) of the end-to-end classifier ``W = W_M ...
    W_1`` that acts on the features (the product of every weight layer after the first,
    of a linear ``td.MLP`` in the standard parametrization), and ``objective``, the
    paper's regularised objective ``F`` (module doc of ``kernels.neural_collapse``) with
    the decays ``lambda_w`` and ``lambda_h``."""

    lambda_w: float = 0.0
    lambda_h: float = 0.0

    dims: ClassVar = {"classifier_gram": ("class", "class2")}
    descriptions: ClassVar = {
        "classifier_gram": ("classifier Gram", "W W^T of W = W_M ... W_1, the product of "
                            "the linear layers after the features"),
        "objective": ("regularised objective", "F = (1/(2N)) ||W H + b 1^T - Y||^2 + "
                      "sum_m lambda_W/2 ||W_m||^2 + lambda_H/2 ||H||^2 (Dang et al. 2023)"),
    }

    def __call__(self, ctx):
        params = ctx.params
        product = params[1]["w"]
        for p in params[2:]:
            product = product @ p["w"]                         # (d, K) = W^T
        x, y = ctx.data["x_train"], ctx.data["y_train"]
        out = ctx.model.apply(params, x, ctx.hparams)
        n = x.shape[0]
        f = jnp.sum((out - y) ** 2) / (2 * n)
        f = f + self.lambda_w / 2 * sum(jnp.sum(p["w"] ** 2) for p in params[1:])
        f = f + self.lambda_h / 2 * jnp.sum(params[0]["w"] ** 2)
        return {"classifier_gram": product.T @ product, "objective": f}


def counts_of(case, n_balanced, n_imbalanced):
    return tuple(n_imbalanced if case == "imbalanced" else n_balanced)


def make_task(counts):
    y = theory.one_hot(counts).T
    n = y.shape[0]
    return td.tasks.from_arrays(np.eye(n), y, loss="mse", name="one_hot_examples")


@dataclasses.dataclass(frozen=True)
class FeatureDecayScale:
    """``weight_decay_scales`` (``dynamics.optimizers.weight_decay``) of the features'
    layer: ``ratio = lambda_H / lambda_W`` on the first layer (``H``), 1 elsewhere."""

    ratio: float

    def __call__(self, params):
        return tuple({name: (self.ratio if i == 0 else 1.0) for name in p}
                     for i, p in enumerate(params))


def make_spec(case, counts, width, depth, lambda_w, lambda_h, lr, momentum, steps,
              log_every):
    model = td.MLP(width=width, depth=depth, out_dim=len(counts), activation="linear",
                   parametrization="standard", bias=False,
                   readout_bias=case == "balanced_bias", sigma_w=SIGMA_W, sigma_b=0.0)
    # our mse has no 1/2 (twice the paper's fit term): weight decay 2 lambda and half the
    # paper's step give the paper's iteration (module doc)
    scales = {} if lambda_h == lambda_w else {
        "weight_decay_scales": FeatureDecayScale(lambda_h / lambda_w)}
    opt = td.optimizers.momentum(lr=lr / 2, momentum=momentum, weight_decay=2 * lambda_w,
                                 **scales)
    return td.Spec(model, make_task(counts), opt, steps=steps, log_every=log_every,
                   observables=(NeuralCollapse(features="layer0"),
                                ClassifierGram(lambda_w=lambda_w, lambda_h=lambda_h)))


def run(n_balanced, n_imbalanced, width, depths, lambda_w, lambda_h, lr, momentum, steps,
        log_every, seeds) -> xr.Dataset:
    width = check_int("width", width, minimum=len(n_balanced))
    depths = [check_int("depth", m) for m in depths]
    seeds = check_int("seeds", seeds)
    check_float("lambda_w", lambda_w, 0.0, low_open=True)
    check_float("lambda_h", lambda_h, 0.0, low_open=True)
    check_float("lr", lr, 0.0, low_open=True)
    if len(n_balanced) != len(n_imbalanced):
        raise ValueError("n_balanced and n_imbalanced must have the same number of classes, "
                         f"got {n_balanced} and {n_imbalanced}")
    parts = []
    for case in CASES:
        counts = counts_of(case, n_balanced, n_imbalanced)
        spec = make_spec(case, counts, width, depths[0], lambda_w, lambda_h, lr, momentum,
                         steps, log_every)
        ds = td.sweep(spec, seed=list(range(seeds)), depth=list(depths))
        keep = ["nc1", "feature_gram", "centered_feature_gram", "readout_gram",
                "class_mean_outputs", "classifier_gram", "objective", "train_loss",
                "diverged_at"]
        ds = ds[[k for k in keep if k in ds]]
        parts.append(_with_theory(ds, case, counts, depths, lambda_w, lambda_h))
    ds = xr.concat(parts, dim="case", coords="minimal", compat="override")
    ds = ds.assign_coords(case=list(CASES))
    ds.attrs.update(width=width, lambda_w=lambda_w, lambda_h=lambda_h, lr=lr,
                    momentum=momentum, n_balanced=list(n_balanced),
                    n_imbalanced=list(n_imbalanced))
    return ds


def target_frame(case, form):
    """The paper's target geometry of ``W W^T`` for a case (up to scale)."""
    k = len(form.counts)
    if case == "balanced":
        return np.eye(k)
    if case == "balanced_bias":
        return theory.simplex_etf(k)
    return form.classifier_gram


def _with_theory(ds, case, counts, depths, lambda_w, lambda_h):
    forms = [theory.closed_form(counts, lambda_h, [lambda_w] * m,
                                bias=case == "balanced_bias") for m in depths]
    ds = ds.assign(
        theory_classifier_gram=(("depth", "class", "class2"),
                                np.stack([f.classifier_gram for f in forms])),
        theory_feature_gram=(("depth", "class", "class2"),
                             np.stack([f.feature_gram for f in forms])),
        theory_class_mean_outputs=(("depth", "class", "output"),
                                   np.stack([f.class_mean_outputs for f in forms])),
        theory_objective=(("depth",), np.array([f.objective for f in forms])),
        theory_s=(("depth", "mode"), np.stack([f.layer_singular_values for f in forms])),
    )
    frames = np.stack([target_frame(case, f) for f in forms])
    gram = ds.classifier_gram.transpose(..., "class", "class2")
    nc2 = xr.apply_ufunc(_normalized_distance, gram, xr.DataArray(frames, dims=(
        "depth", "class", "class2")), input_core_dims=[["class", "class2"]] * 2,
        vectorize=True)
    rel = xr.apply_ufunc(theory.relative_error, gram, ds.theory_classifier_gram,
                         input_core_dims=[["class", "class2"]] * 2, vectorize=True)
    rel_h = xr.apply_ufunc(theory.relative_error, ds.feature_gram,
                           ds.theory_feature_gram,
                           input_core_dims=[["class", "class2"]] * 2, vectorize=True)
    rel_out = xr.apply_ufunc(theory.relative_error, ds.class_mean_outputs,
                             ds.theory_class_mean_outputs,
                             input_core_dims=[["class", "output"]] * 2, vectorize=True)
    return ds.assign(nc2_frame=nc2, classifier_gram_error=rel, feature_gram_error=rel_h,
                     class_mean_outputs_error=rel_out)


def _normalized_distance(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)) or np.linalg.norm(a) == 0:
        return np.nan
    return theory.normalized_distance(a, b)


# --------------------------------------------------------------------------- check


def check(ds) -> list[Claim]:
    final = ds.isel(step=-1)
    depths = ds.depth.values.tolist()
    diverged = int((ds.diverged_at >= 0).sum())
    nc1 = float(final.nc1.max())
    claims = [Claim("nc1_final", nc1, NC1_TARGET, "<=",
                    description="max over cases, depths M and seeds of tr(Sigma_W "
                    f"Sigma_B^+)/K of the features H at the last step (M = {depths}; "
                    f"{diverged} runs diverged)")]
    for case, name, frame in (("balanced", "orthogonal_frame", "I_K"),
                              ("balanced_bias", "simplex_etf", "I_K - 1 1^T/K")):
        value = float(final.nc2_frame.sel(case=case).max())
        claims.append(Claim(
            f"{name}_{case}", value, FRAME_TOLERANCE, "<=",
            description=f"{case}: max over M and seeds of ||G/||G|| - G*/||G*|| ||_F, G = "
            f"W W^T of the classifier W = W_M...W_1, G* = {frame} (the paper's NC2)"))
    imb = final.sel(case="imbalanced")
    s = ds.theory_s.sel(case="imbalanced")
    claims += [
        Claim("imbalanced_classifier_gram", float(imb.classifier_gram_error.max()), 0.0,
              "within", CLOSED_FORM_TOLERANCE,
              "imbalanced (n = " + str(ds.attrs.get("n_imbalanced")) + "): max over M and "
              "seeds of ||W W^T - diag(s_k^{2M})||_F / ||diag(s_k^{2M})||_F, s_k from the "
              "root of the paper's scalar equation (s per mode, the classes by "
              "decreasing n_k, per M: "
              + "; ".join(f"M={m}: {np.round(s.sel(depth=m).values, 4).tolist()}"
                          for m in depths) + ")"),
        Claim("imbalanced_feature_gram", float(imb.feature_gram_error.max()), 0.0,
              "within", CLOSED_FORM_TOLERANCE,
              "imbalanced: max over M and seeds of the relative error of the class means' "
              "Gram Hbar^T Hbar against diag(s_k^{2M} / (s_k^{2M} + N lambda_H)^2)"),
        Claim("class_mean_outputs", float(final.class_mean_outputs_error.max()), 0.0,
              "within", CLOSED_FORM_TOLERANCE,
              "NC3 through the outputs: max over cases, M and seeds of the relative error "
              "of the outputs on the class means, W Hbar + b 1^T, against the closed form "
              "(bias-free: diag(s_k^{2M} / (s_k^{2M} + N lambda_H)), the classifier "
              "aligned with the means; with the bias: the ETF's plus the class "
              "frequencies)"),
        Claim("objective_vs_closed_form",
              float(abs(final.objective / ds.theory_objective - 1).max()), 0.0, "within",
              OBJECTIVE_TOLERANCE,
              "max over cases, M and seeds of |F(last step) / F(closed-form minimiser) - 1|"),
    ]
    return claims


# --------------------------------------------------------------------------- plot


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    depths = ds.depth.values
    steps = ds.step.values
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(depths)))
    styles = {"balanced": "-", "balanced_bias": "--", "imbalanced": ":"}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    for case in ds.case.values:
        for m, c in zip(depths, colors):
            sel = ds.sel(case=case, depth=m).isel(seed=0)
            axes[0].plot(steps[1:], sel.nc1[1:], styles[case], color=c,
                         label=f"{case}, M={m}")
            axes[1].plot(steps[1:], sel.nc2_frame[1:], styles[case], color=c)
    axes[0].axhline(NC1_TARGET, color="gray", lw=0.6, ls=":")
    axes[0].set(yscale="log", xlabel="step", ylabel="NC1 = tr(Σ_W Σ_B^+)/K",
                title="NC1 of the features H")
    axes[0].legend(fontsize=7, ncol=1)
    axes[1].set(yscale="log", xlabel="step", ylabel="||G/||G|| - G*/||G*|| ||",
                title="NC2: W W^T vs I (—), ETF (--), diag(s_k^{2M}) (··)")
    final = ds.isel(step=-1, seed=0).sel(case="imbalanced")
    k = ds.sizes["class"]
    for m, c in zip(depths, colors):
        sim = np.diag(final.classifier_gram.sel(depth=m).values)
        th = np.diag(final.theory_classifier_gram.sel(depth=m).values)
        axes[2].plot(range(k), th, "-", color=c, label=f"closed form, M={m}")
        axes[2].plot(range(k), sim, "o", color=c, mfc="none", label=f"trained, M={m}")
    counts = ds.attrs.get("n_imbalanced")
    axes[2].set(xlabel=f"class k (n_k = {counts})", ylabel="(W W^T)_kk",
                title="imbalanced: diagonal of W W^T vs diag(s_k^{2M})", xticks=range(k))
    axes[2].legend(fontsize=7)
    m = depths[-1]
    image = final.classifier_gram.sel(depth=m).values
    im = axes[3].imshow(image, cmap="viridis")
    for i in range(k):
        for j in range(k):
            axes[3].text(j, i, f"{image[i, j]:.3g}", ha="center", va="center", fontsize=7,
                         color="w")
    axes[3].set(title=f"imbalanced W W^T, M={m} (off-diagonal ~ 0)", xticks=range(k),
                yticks=range(k))
    fig.colorbar(im, ax=axes[3], fraction=0.046)
    fig.suptitle(TITLE, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
