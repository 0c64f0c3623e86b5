"""Lazy versus rich training: one sweep over seeds x learning rate x output scale.

Chizat, Oyallon & Bach (2019, "On Lazy Training in Differentiable Programming") train
``f = alpha (g(theta, x) - g(theta0, x))`` with learning rate ``eta / alpha^2``: the
function-space dynamics at initialisation do not depend on ``alpha``, but the weights
needed to fit the data move by ``O(1/alpha)`` (their Thm 2.3-2.4). Large ``alpha`` is the
lazy (kernel) regime: ``||theta - theta0|| / ||theta0|| ~ 1/alpha`` and the training curves
of different large ``alpha`` coincide (the linearised model). Small ``alpha`` forces the
weights, hence the features, to move by ``O(1)``: the rich regime, where the curves
depart from the kernel ones.

The kernel view (Chizat et al. 2019, Sec. 2 and Thm 2.4; Jacot, Gabriel & Hongler 2018,
Thm 2). With ``lr / alpha^2`` the centred outputs obey, to first order in the weight
change, gradient descent in function space with the NTK of ``g`` at initialisation,
``r_{s+1} = (I - (2 lr / P) Theta_0) r_s`` (``r = f(X) - Y``, ``f_0 = 0``, the MSE of
``dynamics.losses``; Lee et al. 2019, eq. 8-9): ``kernels.predict`` with the initial
empirical NTK (its full ``(P, P, O, O)`` output block, ``initial_ntk`` below) is the
``alpha -> infinity`` limit of the training curves. In the loop,
``kernels.KernelObservables`` measures ``kernel_distance = 1 - cos(Theta_t, Theta_0)``
(Fort et al. 2020, eq. 2), which vanishes like the weight change as ``alpha`` grows, and
the centred kernel-target alignment (Cortes, Mohri & Rostamizadeh 2012, Def. 4), which
rises during rich training as the kernel moves toward the target's ``Y Y^T``
(Baratin et al. 2021; Atanasov, Bordelon & Pehlevan 2022) and stays at its initial
value in the lazy regime.

Here: scikit-learn's digits (real 8x8 images, 10 classes, one-hot targets, MSE in the
normalisation of ``dynamics.losses``), an NTK-parametrized tanh MLP, full-batch GD,
``output_scale`` from 0.1 to 30, two base learning rates, several seeds, all in one call
of ``dynamics.sweep``; the kernel prediction for seed 0 at the larger learning rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import dynamics as td
import kernels
from dynamics import activations
from experiments.common import Claim, loglog_slope

NAME = "lazy-rich"
TITLE = "Lazy vs rich training (Chizat, Oyallon & Bach 2019) on digits"

PRESETS = {
    "quick": dict(seeds=2, width=128, n_train=256, steps=400, log_every=20,
                  lrs=(0.5, 1.0), alphas=(0.1, 0.3, 1.0, 3.0, 10.0, 30.0)),
    "full": dict(seeds=4, width=256, n_train=1000, steps=2000, log_every=50,
                 lrs=(0.5, 1.0), alphas=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 104 s, measured on 2 cores
# shared with other jobs (35-54 s on a quieter machine); full: 572 s on 2 otherwise idle
# cores, with the kernel claims (the layer-wise initial NTK of 1000 digits in 2.3 s).
SECONDS = {"quick": 105, "full": 572}


def make_spec(width: int, n_train: int, steps: int, log_every: int) -> td.Spec:
    task = td.tasks.digits(n_train=n_train, n_test=500, loss="mse", seed=0)
    model = td.MLP(width=width, depth=2, out_dim=10, activation="tanh",
                   parametrization="ntk", center=True)
    if (steps // 2) % log_every:
        raise ValueError(f"steps / 2 must be a multiple of log_every (the kernel observables "
                         f"run at the start, middle and end), got steps={steps}, "
                         f"log_every={log_every}")
    # The kernel observables on the first 16 training examples at the start, middle and end.
    kernel_observables = kernels.KernelObservables(probe_size=16, every=steps // 2)
    return td.Spec(model, task, td.optimizers.sgd(0.5), steps=steps, log_every=log_every,
                   scale_lr_by_output_scale=True,
                   observables=("default", kernel_observables))


def initial_ntk(model: td.MLP, params, x1, x2, hparams):
    r"""The empirical NTK of ``g = model.apply`` at ``output_scale = 1``, full output block
    ``(n1, n2, O, O)``, layer by layer: with ``h^{l+1} = m_l W^l a^l + beta_l b^l``
    (``dynamics.parametrization``), ``a^0 = x``, ``a^l = phi(h^l)`` and the backward
    vectors ``delta^l_o(x) = d g_o / d h^{l+1} = (d g_o / d b^l) / beta_l``,

    .. math::  \Theta_{oo'}(x, x') = \sum_l \big(m_l^2\, a^l(x) \cdot a^l(x') + \beta_l^2\big)\,
               \delta^l_o(x) \cdot \delta^l_{o'}(x'),

    the layer-wise (outer-product) structure of the Jacobian of a dense layer (the
    structured derivatives of Novak, Sohl-Dickstein & Schoenholz 2022, "Fast Finite Width
    Neural Tangent Kernel"). It equals
    ``kernels.empirical_ntk`` (tested) at a cost of ``O(n^2 O^2 N)`` instead of the
    ``O(n^2 O^2 N^2)`` of contracting Jacobians, which makes the ``2560 x 2560`` kernel of
    256 digits and 10 outputs cheap. Needs ``bias=True``, ``sigma_b > 0`` and learning-rate
    multipliers 1 (the ``standard`` and ``ntk`` parametrizations)."""
    hp = {**hparams, "output_scale": 1.0}
    phi = activations.get(model.activation)
    values = {**model.hparams(), **{k: v for k, v in hp.items() if k in model.hparams()}}
    sigma_b = values.get("sigma_b", 0.0)
    if not model.bias or model.parametrization == "mup" or (
            isinstance(sigma_b, (int, float)) and sigma_b <= 0):
        raise ValueError(f"initial_ntk needs bias=True, sigma_b > 0 and a parametrization "
                         f"with unit learning-rate multipliers, got bias={model.bias}, "
                         f"sigma_b={sigma_b}, parametrization={model.parametrization!r}")
    scales = [layer.scale for layer in model.layers(x1.shape[-1], values)]

    def layers(x):
        acts = [x] + [phi(model.apply(params[:l], x, hp)) for l in range(1, len(params))]

        def g(biases, xi):  # one example's outputs (O,)
            return model.apply(tuple({**layer, "b": b} for layer, b in zip(params, biases)),
                               xi[None], hp)[0]

        # per example, so that the backward pass never carries all n examples for each of
        # the n O cotangents (O(n^2 O N) memory: over 20 GB at n = 1000)
        biases = tuple(layer["b"] for layer in params)
        grads = jax.vmap(jax.jacrev(g), in_axes=(None, 0))(biases, x)  # each (n, O, N_l)
        return acts, [d / s.bias_multiplier for d, s in zip(grads, scales)]

    (a1, d1), (a2, d2) = layers(x1), layers(x2)
    k = 0.0
    for l, s in enumerate(scales):
        gram = s.multiplier**2 * (a1[l] @ a2[l].T) + s.bias_multiplier**2
        k = k + gram[:, :, None, None] * jnp.einsum("iap,jbp->ijab", d1[l], d2[l])
    return k


def kernel_prediction(spec: td.Spec, lr: float, seed: int = 0):
    """``kernels.predict`` of the training curve with the initial empirical NTK of run
    ``seed`` (the ``alpha -> infinity`` limit; with ``lr / alpha^2`` the function-space
    step is ``2 lr / P`` whatever ``alpha``)."""
    x = jnp.asarray(spec.task.x_train)
    params0 = td.init_params(spec, seed)
    k = jax.jit(lambda p: initial_ntk(spec.model, p, x, x, spec.model.hparams()))(params0)
    steps = np.arange(spec.n_logs + 1) * spec.log_every
    return kernels.predict(np.asarray(k), np.asarray(spec.task.y_train), lr=lr, steps=steps)


def run(seeds, width, n_train, steps, log_every, lrs, alphas):
    spec = make_spec(width, n_train, steps, log_every)
    ds = td.sweep(spec, seed=range(seeds), lr=list(lrs), output_scale=list(alphas))
    prediction = kernel_prediction(spec, float(lrs[-1]))
    ds["kernel_train_loss"] = prediction.train_loss
    ds.attrs["kernel_prediction"] = f"seed 0, lr={float(lrs[-1]):g}"
    return ds


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
        *kernel_claims(ds),
    ]


def _gap_to_kernel(ds, alpha):
    lr = ds.lr.values[-1]
    curve = ds.train_loss.sel(seed=0, lr=lr, output_scale=alpha)
    return float((abs(curve - ds.kernel_train_loss) / ds.kernel_train_loss).max())


def kernel_claims(ds) -> list[Claim]:
    alphas = ds.output_scale.values
    final = ds.isel(step=-1).mean("seed")
    distance = final.kernel_distance  # (lr, output_scale)
    lazy = alphas >= 1.0
    slopes = [loglog_slope(alphas[lazy], distance.sel(lr=lr).values[lazy])
              for lr in ds.lr.values]
    rise = final.kernel_alignment - ds.kernel_alignment.isel(step=0).mean("seed")
    return [
        Claim("lazy_follows_kernel", _gap_to_kernel(ds, alphas[-1]), 0.01, "<=",
              description=f"max relative gap between the train-loss curve at alpha="
              f"{alphas[-1]:g} and kernels.predict with the initial empirical NTK "
              f"({ds.attrs.get('kernel_prediction', 'seed 0')})"),
        Claim("rich_leaves_kernel", _gap_to_kernel(ds, alphas[0]), 0.1, ">=",
              description=f"the same gap at alpha={alphas[0]:g}"),
        Claim("lazy_kernel_distance_slope", float(np.mean(slopes)), -2.0, "within", 0.3,
              "log-log slope of the final kernel_distance 1 - cos(Theta_t, Theta_0) against "
              "alpha >= 1: the kernel moves by O(1/alpha) and 1 - cos by O(1/alpha^2)"),
        Claim("rich_kernel_moves", float(distance.isel(output_scale=0).min()), 0.01, ">=",
              description=f"final kernel_distance at alpha={alphas[0]:g} (worst lr)"),
        Claim("rich_alignment_rises", float(rise.isel(output_scale=0).min()), 0.05, ">=",
              description=f"rise of the centred kernel-target alignment during training at "
              f"alpha={alphas[0]:g} (worst lr): the kernel moves toward Y Y^T"),
        Claim("lazy_alignment_frozen", float(abs(rise.isel(output_scale=-1)).max()), 0.005,
              "<=", description=f"|change| of the alignment at alpha={alphas[-1]:g}"),
    ]


def _against_alpha(ax, final, name, alphas, prefix=""):
    """``final[name]`` against alpha, one line per learning rate (mean and std over seeds)."""
    for lr_value in final.lr.values:
        v = final[name].sel(lr=lr_value)
        ax.errorbar(alphas, v.mean("seed"), yerr=v.std("seed"), marker="o",
                    label=f"{prefix}lr={lr_value:g}")


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    alphas = ds.output_scale.values
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(alphas)))
    lr = ds.lr.values[-1]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    axes = axes.ravel()
    ax = axes[0]
    for a, c in zip(alphas, colors):
        curve = ds.train_loss.sel(lr=lr, output_scale=a)
        ax.plot(ds.step, curve.mean("seed"), color=c, label=f"alpha={a:g}")
        ax.plot(ds.step, ds.test_loss.sel(lr=lr, output_scale=a).mean("seed"), color=c,
                ls="--", lw=0.8)
    if "kernel_train_loss" in ds:
        ax.plot(ds.step, ds.kernel_train_loss, "k:", lw=2,
                label="kernels.predict, initial NTK")
    ax.set(yscale="log", xlabel="step", ylabel="loss (train solid, test dashed)",
           title=f"training curves, lr/alpha^2 with lr={lr:g}")
    ax.legend(fontsize=7)
    final = ds.isel(step=-1)
    ax = axes[1]
    _against_alpha(ax, final, "relative_weight_change", alphas)
    ref = final.relative_weight_change.sel(lr=lr).mean("seed").values[-1] * alphas[-1]
    ax.plot(alphas, ref / alphas, "k:", label="1/alpha")
    ax.set(xscale="log", yscale="log", xlabel="output scale alpha",
           ylabel="||theta - theta0|| / ||theta0||", title="weight movement")
    ax.legend(fontsize=8)
    ax = axes[2]
    _against_alpha(ax, final, "test_accuracy", alphas)
    ax.set(xscale="log", xlabel="output scale alpha", ylabel="test accuracy",
           title="generalisation at the end of training")
    ax.legend(fontsize=8)
    ax = axes[3]
    if "kernel_distance" in ds:
        _against_alpha(ax, final, "kernel_distance", alphas)
        ref = final.kernel_distance.sel(lr=lr).mean("seed").values[2] * alphas[2] ** 2
        ax.plot(alphas, ref / alphas**2, "k:", label="1/alpha^2")
        ax.set(xscale="log", yscale="log", xlabel="output scale alpha",
               ylabel="1 - cos(Theta_t, Theta_0)", title="kernel movement (end of training)")
        ax.legend(fontsize=8)
        ax = axes[4]
        _against_alpha(ax, final, "kernel_alignment", alphas, prefix="end, ")
        ax.plot(alphas, ds.kernel_alignment.isel(step=0).mean(("seed", "lr")), "k--",
                label="initialisation")
        ax.set(xscale="log", xlabel="output scale alpha", ylabel="centred alignment",
               title="kernel-target alignment (first 16 train examples)")
        ax.legend(fontsize=8)
    ax = axes[5]
    _against_alpha(ax, final, "test_loss", alphas)
    ax.set(xscale="log", xlabel="output scale alpha", ylabel="test loss",
           title="test loss at the end of training")
    ax.legend(fontsize=8)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
