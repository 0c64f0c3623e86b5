r"""Residual networks in depth: the output variance at initialisation with and without
branch scaling, and learning-rate transfer across depth under depth-muP.

Bordelon, Noci, Li, Hanin & Pehlevan (2023), "Depthwise hyperparameter transfer in
residual networks: dynamics and scaling limit" (arXiv:2309.16620), and Yang, Yu, Zhu &
Hayou (2023), "Tensor Programs VI: Feature learning in infinite-depth neural networks"
(arXiv:2310.02244). A residual stream ``h^{l+1} = h^l + b_L u^l`` adds at every block a
branch ``u^l`` uncorrelated with ``h^l``, so its variance is multiplied by
``1 + b_L^2 c`` per block: with ``b_L = 1`` (no branch scaling) it grows as
``(1 + c)^L``, exponentially in the depth ``L``; with the branches ``b_L = 1/sqrt(L)``
of both papers it is ``(1 + c/L)^L <= exp(c)``, bounded (Bordelon et al.: the product
``prod_l (1 + beta_0^2 sigma^2/L)`` of their infinite-depth analysis; Tensor Programs VI:
Depth-muP's block multiplier ``a/sqrt(L)``). Combined with muP in width (the readout divided by
``gamma0 N``, SGD learning rates times ``gamma0^2 N``) the ``1/sqrt(L)`` branches make the
training dynamics converge as the depth grows, and the best learning rate of a shallow
network is that of a deep one; with ``b_L = 1`` and muP in width alone the best
learning rate falls with depth (Bordelon et al., Fig. 1: convolutional ResNets on
CIFAR-10 trained by SGD, "muP" against "muP + 1/sqrt(L)"; Tensor Programs VI: resnets
of one-layer MLP blocks on CIFAR-10, depths up to about a thousand blocks).

The depth rule for SGD is the one both papers give: branch ``1/sqrt(L)``, learning rate
independent of ``L`` (Bordelon et al.'s parametrization; Tensor Programs VI's Depth-muP
for SGD). For Adam, Tensor Programs VI's Depth-muP also divides the block weights'
learning rate by ``sqrt(L)``; this experiment is the SGD one (Bordelon et al.'s Fig. 1;
no Adam runs here), and ``dynamics.models.residual.ResidualMLP`` leaves a depth-dependent
learning rate to the user's ``lr``.

Here (``td.ResidualMLP``: one ReLU weight layer per block, as Tensor Programs VI's
resnets, no biases):

1. **Variance at initialisation**: the output ``g(x)`` of finite networks (NTK
   parametrization, ``sigma_w = 1``) on digits inputs, its second moment over many
   initialisations (``seeds``, every output, the inputs' mean) at depths ``1..2^k``,
   branch exponent 0 (``b_L = 1``) and 1/2 (``b_L = 1/sqrt(L)``). The prediction is the
   infinite-width NNGP diagonal (``kernels.nngp``, the residual recursion of
   ``kernels.residual``): for ReLU without biases ``Sigma^{l+1} = Sigma^l (1 + b_L^2
   sigma_w^2 / 2)``, so ``(3/2)^L`` growth without scaling, and under ``1/sqrt(L)`` the
   limit ``Sigma^1 exp(sigma_w^2/2)`` as ``L -> infinity`` (the ``L -> infinity``
   product of Bordelon et al.; times the readout's ``sigma_w^2/2``).
2. **Learning-rate transfer across depth**: full-batch gradient descent with cross-entropy
   on ``n_train`` of scikit-learn's digits, muP in width (Bordelon & Pehlevan's form,
   ``gamma0 = 1``) at a fixed width, depths spanning a factor 8, branch exponent 0 and
   1/2 as values of one sweep, learning rates ``2^k``; the training loss after ``steps``
   steps, mean over seeds; the best learning rate at each depth is the grid point of
   least loss (a grid point where any seed diverged is never the best).

Scale, against the papers': Bordelon et al. train convolutional ResNets and Vision
Transformers on CIFAR-10 and ImageNet on accelerators; Tensor Programs VI trains resnets of
hundreds of blocks and more. Here (2 CPU cores) the widths are 64 (``quick``) and
128 (``full``), the depths 2..16 and 4..32, a few hundred images of digits and 50 to 100
full-batch steps: the same ratios (depth range 8x, grid factor 2) at a smaller scale
(the variance part: widths 128 and 256, depths up to ``N/8``, 256 initialisations). The
``full`` grid reaches down to ``2^-14`` because without branch scaling the best learning
rate of depth 32 lies below ``2^-8`` (measured while building this: at ``2^-8`` the loss
is 0.78, at ``2^-7`` 1.8, and from ``2^-6`` on every run diverges; with the grid to
``2^-14`` its best is ``2^-11``, loss 0.22). In that budget the training set is nearly
fitted at the best learning rates (loss ~1e-3 under depth-muP), so the loss curves'
minima sit close to the divergence edge.

Claims (measured values in ``summary.json``):

* ``unscaled_growth_per_block``: without branch scaling the empirical variance grows
  geometrically: ``exp`` of the least-squares slope of ``log E[g^2]`` against ``L`` is
  the NNGP's ``1 + sigma_w^2/2 = 1.5``, within 0.04 (the per-depth tolerance below, 0.2
  in ``log``, at the two ends of a depth range of at least 15 blocks with opposite signs,
  moves the slope of the log by at most ``0.4/15 = 0.027``, i.e. the factor by
  ``1.5 (exp(0.027) - 1) = 0.04``);
* ``unscaled_variance_matches_nngp`` and ``sqrt_depth_variance_matches_nngp``: at every
  depth ``|log(empirical / NNGP)| <= 0.2``. The estimate's sampling error: with ``S``
  seeds and 10 outputs per seed (independent given the features) the relative standard
  error of ``E[g^2]`` is ``sqrt(2/(10 S) + v/S)``, ``v`` the relative variance of the
  features' squared norm, which at finite width grows with ``L/N`` without scaling
  (log-normal fluctuations of the stream's norm, Hanin & Nica 2019, "Products of many
  large random matrices and gradients in deep neural networks"). The depths of this part
  stop at ``L = N/8``, where the per-seed second moment's relative spread is measured
  0.66 without scaling (0.24 with it), so ``S = 256`` seeds give a standard error of
  0.04 and 0.2 is five of them; the finite-width bias of the mean (the NNGP is the
  ``N -> infinity`` limit; measured -0.2% to +10% here, largest at ``L = N/8`` without
  scaling) takes up part of that margin;
* ``sqrt_depth_variance_bounded``: under ``1/sqrt(L)`` the largest empirical variance
  over all depths is at most the NNGP's ``L -> infinity`` limit times ``exp(0.2)`` (the
  same tolerance); the unscaled variance at the largest depth exceeds it by orders of
  magnitude (reported as ``unscaled_over_bound``, which must be ``>= 10``);
* ``depth_mup_best_lr_stable``: under depth-muP (``1/sqrt(L)``) the best learning rate
  moves by at most one grid point (a factor 2) across the 8x depth range;
* ``unscaled_best_lr_drifts``: without branch scaling it moves by at least two (a
  factor 4);
* ``best_lrs_inside_grid``: no best learning rate sits at an end of the grid (else the
  measured shift could be the grid's, not the network's).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

import dynamics as td
from experiments.common import Claim, best_grid_point
from kernels import infinite

NAME = "residual-depth"
TITLE = ("Residual networks in depth (Bordelon et al. 2023; Tensor Programs VI): output "
         "variance with and without 1/sqrt(L) branches, learning-rate transfer under "
         "depth-muP")

PRESETS = {
    "quick": dict(var_width=128, var_depths=(1, 2, 4, 8, 16), var_seeds=256,
                  width=64, depths=(2, 4, 8, 16), log2_lrs=(-8, 4), steps=50, n_train=256,
                  seeds=2),
    "full": dict(var_width=256, var_depths=(1, 2, 4, 8, 16, 32), var_seeds=256,
                 width=128, depths=(4, 8, 16, 32), log2_lrs=(-14, 4), steps=100,
                 n_train=256, seeds=2),
}
# Running times (SECONDS, see experiments/__init__.py), measured on 2 CPU cores.
SECONDS = {"quick": 35, "full": 354}

EXPONENTS = (0.0, 0.5)   # branch b_L = L^-exponent: none, depth-muP
SIGMA_W = 1.0
VAR_OUTPUTS = 10         # independent readouts per initialisation
VAR_INPUTS = 8           # digits inputs the variance is averaged over
LOG_TOL = 0.2            # |log(empirical / NNGP)| (module doc)
GROWTH_TOL = 0.04        # per-block growth factor (module doc)
OVER_BOUND = 10.0        # unscaled variance over the depth-muP bound, at least
STABLE = 1               # grid points the depth-muP best lr may move
DRIFTS = 2               # grid points the unscaled best lr moves, at least
SEED_CHUNK = 32          # initialisations per compiled call of the variance part


def variance_model(width, depth, exponent):
    return td.ResidualMLP(width=width, depth=depth, out_dim=VAR_OUTPUTS, activation="relu",
                          parametrization="ntk", bias=False, sigma_w=SIGMA_W,
                          depth_exponent=exponent)


def empirical_second_moment(model, x, seeds: int):
    """``mean g(x)^2`` over the inputs and outputs, one value per initialisation
    ``fold_in(PRNGKey(0), s)``, ``s < seeds``: ``(seeds,)``."""
    @jax.jit
    def moments(keys):
        def one(key):
            return jnp.mean(model.apply(model.init(key, x), x) ** 2)
        return jax.vmap(one)(keys)

    root = jax.random.PRNGKey(0)
    out = []
    for start in range(0, seeds, SEED_CHUNK):
        s = jnp.arange(start, min(start + SEED_CHUNK, seeds))
        out.append(np.asarray(moments(jax.vmap(lambda i: jax.random.fold_in(root, i))(s))))
    return np.concatenate(out)


def nngp_limit(x) -> float:
    """The NNGP output variance of the ``1/sqrt(L)`` network as ``L -> infinity`` (ReLU,
    no biases, NTK parametrization): ``Sigma^1 = sigma_w^2 |x|^2/D``, the stream's
    ``Sigma^1 prod_l (1 + sigma_w^2/(2L)) -> Sigma^1 exp(sigma_w^2/2)`` (Bordelon et al.
    2023), and the readout on ``relu`` gives ``sigma_w^2/2`` of it; mean over the
    inputs."""
    sigma1 = SIGMA_W ** 2 * np.sum(np.asarray(x, np.float64) ** 2, -1) / x.shape[-1]
    return float(np.mean(SIGMA_W ** 2 / 2 * sigma1 * math.exp(SIGMA_W ** 2 / 2)))


def run_variance(var_width, var_depths, var_seeds):
    x = jnp.asarray(td.tasks.digits(n_train=VAR_INPUTS, n_test=10, seed=0).x_train)
    emp = np.zeros((len(EXPONENTS), len(var_depths), var_seeds))
    pred = np.zeros((len(EXPONENTS), len(var_depths)))
    for i, e in enumerate(EXPONENTS):
        for j, depth in enumerate(var_depths):
            model = variance_model(var_width, depth, e)
            emp[i, j] = empirical_second_moment(model, x, var_seeds)
            pred[i, j] = float(jnp.mean(jnp.diag(infinite.nngp(model, x))))
    coords = {"depth_exponent": list(EXPONENTS), "var_depth": list(var_depths),
              "var_seed": np.arange(var_seeds)}
    return xr.Dataset(
        {"output_second_moment": (("depth_exponent", "var_depth", "var_seed"), emp),
         "nngp_variance": (("depth_exponent", "var_depth"), pred)},
        coords=coords, attrs={"nngp_limit": nngp_limit(x), "var_width": var_width})


def transfer_spec(width, depth, lr, steps, n_train):
    task = td.tasks.digits(n_train=n_train, n_test=200, seed=0)
    model = td.ResidualMLP(width=width, depth=depth, out_dim=10, activation="relu",
                           parametrization="mup", gamma0=1.0, bias=False)
    return td.Spec(model, task, td.optimizers.sgd(lr), steps=steps, log_every=steps,
                   observables=("loss",))


def run_transfer(width, depths, log2_lrs, steps, n_train, seeds):
    lrs = [2.0 ** k for k in range(log2_lrs[0], log2_lrs[1] + 1)]
    spec = transfer_spec(width, depths[0], lrs[0], steps, n_train)
    ds = td.sweep(spec, seed=list(range(seeds)), lr=lrs, depth=list(depths),
                  depth_exponent=list(EXPONENTS))
    final = ds.train_loss.isel(step=-1).drop_vars("step").rename("final_loss")
    return final.to_dataset().assign(diverged=(ds.diverged_at >= 0)).assign_attrs(
        steps=steps, width=width)


def run(var_width, var_depths, var_seeds, width, depths, log2_lrs, steps, n_train, seeds):
    variance = run_variance(var_width, var_depths, var_seeds)
    transfer = run_transfer(width, depths, log2_lrs, steps, n_train, seeds)
    return xr.merge([variance, transfer], combine_attrs="no_conflicts")


def best_lrs(ds):
    """``(log2 best lr, loss there)`` per depth exponent and depth."""
    return best_grid_point(ds.final_loss, ds.diverged, "lr")


def check(ds) -> list[Claim]:
    moment = ds.output_second_moment.mean("var_seed")
    log_err = np.abs(np.log(moment / ds.nngp_variance))
    unscaled, scaled = moment.sel(depth_exponent=0.0), moment.sel(depth_exponent=0.5)
    depth = ds.var_depth.values.astype(float)
    slope = np.polyfit(depth, np.log(unscaled.values), 1)[0]
    growth = math.exp(slope)
    target_growth = 1 + SIGMA_W ** 2 / 2
    bound = ds.attrs["nngp_limit"]
    best, _ = best_lrs(ds)
    shift = best.max("depth") - best.min("depth")
    log2_lrs = np.log2(ds.lr.values)
    at_edge = int(np.sum((best.values <= log2_lrs.min()) | (best.values >= log2_lrs.max())))
    return [
        Claim("unscaled_growth_per_block", growth, target_growth, "within", GROWTH_TOL,
              description="exp of the slope of log E[g^2] against depth without branch "
              "scaling; NNGP: 1 + sigma_w^2/2"),
        Claim("unscaled_variance_matches_nngp",
              float(log_err.sel(depth_exponent=0.0).max()), LOG_TOL, "<=",
              description="max over depths of |log(empirical E[g^2] / NNGP)|, branches 1"),
        Claim("sqrt_depth_variance_matches_nngp",
              float(log_err.sel(depth_exponent=0.5).max()), LOG_TOL, "<=",
              description="the same, branches 1/sqrt(L)"),
        Claim("sqrt_depth_variance_bounded", float(scaled.max()), bound * math.exp(LOG_TOL),
              "<=", description="largest empirical E[g^2] over depths under 1/sqrt(L), "
              "against the NNGP's L -> infinity limit (times exp(tolerance))"),
        Claim("unscaled_over_bound", float(unscaled.isel(var_depth=-1)) / bound,
              OVER_BOUND, ">=", description="empirical E[g^2] at the largest depth without "
              "branch scaling, over the 1/sqrt(L) bound"),
        Claim("depth_mup_best_lr_stable", float(shift.sel(depth_exponent=0.5)), STABLE,
              "<=", description="grid points (log2) between the largest and smallest best "
              "SGD learning rate across the 8x depth range, muP + 1/sqrt(L) branches"),
        Claim("unscaled_best_lr_drifts", float(shift.sel(depth_exponent=0.0)), DRIFTS,
              ">=", description="the same, muP with branches 1"),
        Claim("best_lrs_inside_grid", at_edge, 0, "<=",
              description="best learning rates at an end of the grid (both rules, every "
              "depth)"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.6))
    ax = axes[0]
    moment = ds.output_second_moment
    for e, label in zip(EXPONENTS, ("branches 1", "branches 1/sqrt(L)")):
        m = moment.sel(depth_exponent=e)
        err = m.std("var_seed") / np.sqrt(m.sizes["var_seed"])
        line = ax.errorbar(ds.var_depth, m.mean("var_seed"), yerr=err, fmt="o", ms=4,
                           label=f"{label}: width {ds.attrs['var_width']}")
        ax.plot(ds.var_depth, ds.nngp_variance.sel(depth_exponent=e), "-",
                color=line[0].get_color(), lw=1, label=f"{label}: NNGP")
    ax.axhline(ds.attrs["nngp_limit"], color="k", ls=":", lw=0.8,
               label="NNGP, 1/sqrt(L), L -> inf")
    ax.set(xscale="log", yscale="log", xlabel="depth L (blocks)",
           ylabel="E[g(x)^2] at initialisation", title="output variance at initialisation")
    ax.legend(fontsize=7)
    loss = ds.final_loss.where(~ds.diverged).mean("seed")
    best, _ = best_lrs(ds)
    for ax, e, label in zip(axes[1:], EXPONENTS, ("muP, branches 1",
                                                   "depth-muP: muP + branches 1/sqrt(L)")):
        for depth in ds.depth.values:
            curve = loss.sel(depth_exponent=e, depth=depth)
            line, = ax.semilogx(ds.lr, curve, "o-", ms=3, base=2, label=f"depth {depth}")
            ax.axvline(2.0 ** float(best.sel(depth_exponent=e, depth=depth)),
                       color=line.get_color(), lw=0.6, ls=":")
        ax.set(xlabel="SGD learning rate (times gamma0^2 N)",
               ylabel=f"training loss after {ds.attrs['steps']} steps", yscale="log",
               ylim=(0.5 * float(loss.min()), 4),
               title=f"{label}, width {ds.attrs['width']}")
        ax.legend(fontsize=7)
    fig.suptitle(TITLE, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
