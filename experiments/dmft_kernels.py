r"""Kernel evolution against the feature-learning strength ``gamma0``: the DMFT of a deep
tanh network laid over wide networks (Bordelon & Pehlevan 2022, "Self-Consistent
Dynamical Field Theory of Kernel Evolution in Wide Neural Networks", Fig. 1).

The network is the ``mup`` MLP of ``kernels.dmft`` (B&P eq. 1-3): tanh, no biases, one
output, ``depth`` hidden layers of width ``N``, trained by full-batch gradient descent on
the MSE ``L = (1/P) sum_mu (f_mu - y_mu)^2`` with learning rate ``lr`` (times the mup
multiplier ``gamma0^2 N``), centred (``center=True``: ``f = g(theta) - g(theta0)``, so
``f(0) = 0`` at every width, as in the infinite-width limit where the initial output
vanishes). ``gamma0`` sets how far the features move: ``gamma0 -> 0`` is the lazy (static
NTK) limit and at fixed ``gamma0 > 0`` the feature kernels
``Phi^l_{mu nu}(t) = phi(h^l_mu(t)) . phi(h^l_nu(t)) / N`` evolve by ``O(1)`` as
``N -> infinity``. Their deterministic limit is the self-consistent DMFT
(B&P eq. 7-8, the alternating Monte Carlo solver of their Sec. 5, ``kernels.dmft.solve``
with ``solver="monte_carlo"``), whose outputs ``f`` evolve with the kernel
``K = sum_l G^{l+1} Phi^l`` (B&P eq. 5).

Data: ``P`` real images of two digit classes from scikit-learn's digits (``D = 64``),
labelled ``y = +-1``, centred by the training mean pixel and scaled so that
``x . x / D = 1`` exactly (``binary_digits``), ordered by class so the heat maps show the
class blocks. As in their Fig. 1: ``P = 10`` points, a depth-4 tanh network,
``gamma0 in {0, 0.5, 1, 1.5}``.

What is computed:

* the DMFT for every ``gamma0``, each solve warm-started from the previous (smaller)
  ``gamma0``'s state; ``gamma0 = 0`` is the exact lazy limit (static kernels, NTK
  dynamics);
* ``dynamics.sweep`` of the finite networks over ``seed x gamma0 x width`` with
  ``kernels.dmft.OrderParameters`` logging their ``feature_kernel``, ``gradient_kernel``
  and ``ntk``. The ``mup`` MLP needs ``gamma0 > 0``: the networks of the ``gamma0 = 0``
  column are trained at ``gamma0 = LAZY_NETWORK_GAMMA0 = 1e-3`` (centred), against the
  DMFT's exact ``gamma0 = 0``; the variable ``network_gamma0`` records the value used.
  Their feature kernels barely move: ``1 - cos(Phi^l(T), Phi^l(0))`` measured
  ``<= 1e-8`` (quick preset) against ``6e-3`` at ``gamma0 = 0.5``, the ratio
  ``(0.5 / 1e-3)^2`` of a movement quadratic in ``gamma0``.

Claims (``check``): (1) the loss at the middle step falls strictly with ``gamma0``, for
the DMFT and for the networks at every width (richer training is faster here, B&P
Fig. 1), and the networks' loss curves lie on the DMFT's; (2) the final ``Phi^l`` of the
networks (seed mean) and of the DMFT are aligned, cosine ``>= 0.99`` for every layer,
``gamma0`` and width (B&P Fig. 1's heat maps); (3) the final
``Phi^l`` moves away from its initial value more as ``gamma0`` grows: its cosine
alignment with ``Phi^l(0)`` falls strictly with ``gamma0`` (DMFT and networks), by the
same amount in both; (4) every
DMFT solve converged, and its Monte Carlo error (the gap to the solution with half the
samples) is small.

The quick preset uses two hidden layers (the Monte Carlo solver's Jacobians cost
``2L - 2`` per iteration; depth 4 takes several minutes on 2 CPU cores); the full preset
has the figure's four.
"""

from __future__ import annotations

import time

import numpy as np
import xarray as xr

import dynamics as td
import kernels.dmft as dmft
from experiments.common import Claim

NAME = "dmft-kernels"
TITLE = "Kernel evolution vs gamma0: DMFT and wide tanh networks (Bordelon & Pehlevan 2022)"

# The mup MLP needs gamma0 > 0: the networks of the gamma0 = 0 (lazy) column use this.
LAZY_NETWORK_GAMMA0 = 1e-3

PRESETS = {
    "quick": dict(depth=2, n_train=10, classes=(0, 1), lr=0.5, steps=8,
                  gamma0s=(0.0, 0.5, 1.0, 1.5), widths=(500, 1000), seeds=4,
                  samples=512, batch=64),
    "full": dict(depth=4, n_train=10, classes=(0, 1), lr=0.5, steps=8,
                 gamma0s=(0.0, 0.5, 1.0, 1.5), widths=(500, 1000, 2000), seeds=8,
                 samples=1024, batch=64),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 112 s on 2 shared cores
# (31-74 s on a quieter machine); full: about 600 s, measured.
SECONDS = {"quick": 110, "full": 600}

ACTIVATION = "tanh"

# Tolerance of the network-vs-DMFT loss gap (units of the initial loss). Two errors add:
# the seed mean of the networks' loss, O(N^-1/2 / sqrt(seeds)) (per-seed standard
# deviations measured <= 0.009 at N = 500-1000 in the quick preset, <= 0.03 at N = 500 in
# the full one, so standard errors ~0.005-0.01), and the DMFT's Monte Carlo error: the
# step-1 loss of solves at gamma0 = 0.01 (which must equal the exact lazy one to O(1e-4))
# spreads by +-0.01 over noise seeds at S = 1024 (depth 2 and 4), +-0.002 at S = 16384.
# Measured gaps: 0.015 (quick), 0.022 (full, step 1, the same at every width: the DMFT's
# noise). 0.03 is about twice the combined error; it is also the loss difference between
# gamma0 = 0.5 and 1 at the middle step, so a wrong gamma0 mapping fails it.
LOSS_GAP_TOLERANCE = 0.03

# "Falls strictly" for the alignment of the final Phi^l with Phi^l(0): by at least this
# much between consecutive gamma0 (a kernel that does not move at all gives 0 and fails).
# The smallest fall in the presets is the first, from the lazy limit (1 - cos = O(gamma0^2)),
# in layer 1 for gamma0 = 0 -> 0.5: measured 0.0051 / 0.0059 (DMFT / networks, quick) and
# 0.0055 / 0.0044 (full).
MIN_MOVEMENT_STEP = 1e-3

# Tolerance of |network - DMFT| alignment of the final Phi^l with Phi^l(0) (widest width):
# measured at most 0.0063 (quick) and 0.0054 (full), with movements 1 - cos up to 0.13 and
# 0.17; 0.02 leaves room for the Monte Carlo and finite-width errors and is still below
# the change of the deep layers' alignment between consecutive gamma0 (0.03-0.07).
MOVEMENT_TOLERANCE = 0.02


# -- helpers -------------------------------------------------------------------------------


def binary_digits(n_train: int, classes=(0, 1), seed: int = 0):
    """``P = n_train`` digits images of ``classes = (a, b)`` (``dynamics.tasks.digits``,
    its seeded split), as float64 ``x (P, 64)`` and targets ``y = -1`` for ``a``, ``+1``
    for ``b``. Each pixel is centred by its training mean, then every row scaled to
    ``x . x / D = 1``; the rows are ordered by class (stable), so kernels show the
    class blocks."""
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 2:
        raise ValueError(f"n_train must be an int >= 2, got {n_train!r}")
    classes = tuple(classes)
    if len(classes) != 2:
        raise ValueError(f"classes must be two distinct digits, got {classes!r}")
    task = td.tasks.digits(n_train=n_train, classes=classes, loss="cross_entropy",
                           standardize=False, seed=seed)
    x = np.asarray(task.x_train, np.float64)
    labels = np.asarray(task.y_train)
    order = np.argsort(labels, kind="stable")
    x, labels = x[order], labels[order]
    x = x - x.mean(0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("an image equals the training mean; pick another seed or n_train")
    x = x / norms * np.sqrt(x.shape[1])
    return x, 2.0 * labels - 1.0


def cosine_alignment(a, b):
    """Frobenius cosine ``<A, B> / (||A|| ||B||)`` over the last two axes (leading axes
    broadcast): the kernel alignment of Cristianini et al. (2001, Def. 1), uncentred, as
    B&P (2022, Fig. 1) compare DMFT and network kernels. 1 for proportional kernels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"cosine_alignment needs matrices of the same shape in the last "
                         f"two axes, got {a.shape} and {b.shape}")
    inner = np.sum(a * b, axis=(-2, -1))
    norms = np.linalg.norm(a, axis=(-2, -1)) * np.linalg.norm(b, axis=(-2, -1))
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("cosine_alignment of a zero or non-finite matrix is undefined")
    return inner / norms


def network_gamma0s(gamma0s) -> list[float]:
    """The ``gamma0`` the networks are trained at: ``gamma0`` itself, except
    ``LAZY_NETWORK_GAMMA0`` for 0 (the mup MLP needs ``gamma0 > 0``)."""
    return [LAZY_NETWORK_GAMMA0 if g == 0 else float(g) for g in gamma0s]


def _check_args(depth, n_train, lr, steps, gamma0s, widths, seeds, samples, batch):
    def need_int(name, v, low):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")

    need_int("depth", depth, 1)
    need_int("n_train", n_train, 2)
    need_int("steps", steps, 2)
    need_int("seeds", seeds, 1)
    need_int("samples", samples, 2)
    need_int("batch", batch, 1)
    if not (np.isscalar(lr) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    g = np.asarray(gamma0s, np.float64)
    if g.ndim != 1 or g.size < 2 or not np.all(np.isfinite(g)) or np.any(g < 0) \
            or np.any(np.diff(g) <= 0):
        raise ValueError(f"gamma0s must be at least two increasing values >= 0 (each DMFT "
                         f"solve is warm-started from the previous one), got {gamma0s!r}")
    if len(widths) < 1 or any(isinstance(w, bool) or not isinstance(w, (int, np.integer))
                              or w < 1 for w in widths):
        raise ValueError(f"widths must be positive ints, got {widths!r}")


def make_model(depth: int, width: int = 500, gamma0: float = 1.0) -> td.MLP:
    return td.MLP(width=width, depth=depth, activation=ACTIVATION, parametrization="mup",
                  bias=False, center=True, gamma0=gamma0)


def make_spec(x, y, depth: int, lr: float, steps: int) -> td.Spec:
    """Full-batch GD on ``(x, y)`` logging the loss and the DMFT order parameters."""
    task = td.tasks.from_arrays(x, y, loss="mse", name="binary-digits")
    return td.Spec(make_model(depth), task, td.optimizers.sgd(lr), steps=steps, log_every=1,
                   observables=("loss", dmft.OrderParameters(activation=ACTIVATION,
                                                             depth=depth)))


# -- run -----------------------------------------------------------------------------------


def run(depth, n_train, classes, lr, steps, gamma0s, widths, seeds, samples, batch):
    _check_args(depth, n_train, lr, steps, gamma0s, widths, seeds, samples, batch)
    x, y = binary_digits(n_train, classes)
    model = make_model(depth)
    parts, state = [], None
    start = time.perf_counter()
    for g in gamma0s:
        sol, state = dmft.solve(model, x, y, lr=lr, steps=steps, hparams={"gamma0": float(g)},
                                solver="monte_carlo", samples=samples, batch=batch,
                                warm_start=state, return_state=True)
        parts.append(sol)
    dmft_seconds = time.perf_counter() - start
    names = ["train_loss", "train_outputs", "feature_kernel", "gradient_kernel", "ntk"]
    sol = xr.concat([p[names] for p in parts], dim="gamma0", coords="minimal",
                    compat="override", combine_attrs="drop")
    sol = sol.rename({n: f"dmft_{n}" for n in names})
    for key in ("converged", "iterations", "mc_error_loss", "mc_error_feature_kernel",
                "seconds"):
        sol[f"dmft_{key}"] = (("gamma0",), np.array([p.attrs[key] for p in parts], float))
    # Phi^l(0) does not depend on gamma0: exact (dual activations) from the lazy solve
    lazy = parts[0] if float(gamma0s[0]) == 0 else dmft.solve(
        model, x, y, lr=lr, steps=steps, hparams={"gamma0": 0.0})
    sol["dmft_initial_feature_kernel"] = lazy.feature_kernel.isel(step=0, drop=True)

    start = time.perf_counter()
    spec = make_spec(x, y, depth, lr, steps)
    net = td.sweep(spec, seed=range(seeds), gamma0=network_gamma0s(gamma0s),
                   width=list(widths))
    network_seconds = time.perf_counter() - start
    net = net.assign_coords(gamma0=np.asarray(gamma0s, float))
    net["network_gamma0"] = (("gamma0",), np.asarray(network_gamma0s(gamma0s)))
    ds = xr.merge([net, sol.assign_coords(gamma0=np.asarray(gamma0s, float))],
                  compat="override", combine_attrs="override")
    ds["x_train"] = (("train_example", "feature"), x)
    ds["y_train"] = (("train_example",), y)
    ds.attrs.update({"depth": depth, "lr": lr, "dmft_samples": samples,
                     "lazy_network_gamma0": LAZY_NETWORK_GAMMA0,
                     "dmft_total_seconds": round(dmft_seconds, 2),
                     "network_seconds": round(network_seconds, 2)})
    return ds


# -- check ---------------------------------------------------------------------------------


def mid_step_losses(ds):
    """``(dmft (gamma0,), network (width, gamma0))`` train losses at step ``steps // 2``
    (network: mean over seeds)."""
    mid = int(ds.step.values[-1]) // 2
    d = ds.dmft_train_loss.sel(step=mid)
    n = ds.train_loss.sel(step=mid).mean("seed").transpose("width", "gamma0")
    return d.values, n.values


def largest_ratio(values) -> float:
    """``max_i v[..., i+1] / v[..., i]`` over the last axis: below 1 when every row falls
    strictly."""
    v = np.asarray(values, np.float64)
    return float(np.max(v[..., 1:] / v[..., :-1]))


def loss_gap(ds) -> float:
    """Largest ``|L_network - L_dmft|`` over steps and ``gamma0`` at the widest width
    (network: mean over seeds), divided by the initial loss."""
    net = ds.train_loss.isel(width=-1).mean("seed")
    gap = np.abs(net - ds.dmft_train_loss) / ds.dmft_train_loss.isel(step=0)
    return float(gap.max())


def final_alignment(ds):
    """Cosine alignment of the final ``Phi^l`` of the networks (seed mean) with the
    DMFT's, ``(width, gamma0, layer)``."""
    net = ds.feature_kernel.isel(step=-1).mean("seed").transpose(
        "width", "gamma0", "layer", "train_example", "train_example_2")
    theory = ds.dmft_feature_kernel.isel(step=-1).transpose(
        "gamma0", "layer", "train_example", "train_example_2")
    return cosine_alignment(net.values, theory.values[None])


def movement(ds):
    """Cosine alignment of the final ``Phi^l`` with its initial value: DMFT
    ``(gamma0, layer)`` and networks (mean over seeds of each run's own) ``(width,
    gamma0, layer)``.

    The DMFT's initial value is the exact ``Phi^l(0)`` (``dmft_initial_feature_kernel``,
    the lazy solve's; it does not depend on ``gamma0``), not the Monte Carlo solves' own
    step-0 estimate: that one carries a sampling error (measured 5-10% relative in
    Frobenius norm at ``S = 1024``, depth 4) shared with their ``Phi^l(T)``, which would
    bias the alignment upward (measured 0.928 against 0.901 for layer 4 at
    ``gamma0 = 0.5``, full preset; the networks give 0.906)."""
    dims = ("gamma0", "layer", "train_example", "train_example_2")
    initial = ds.dmft_initial_feature_kernel.transpose(*dims[1:]).values
    theory = cosine_alignment(
        ds.dmft_feature_kernel.isel(step=-1).transpose(*dims).values, initial[None])
    n = ds.feature_kernel
    dims_n = ("width",) + dims[:2] + ("seed",) + dims[2:]
    per_run = cosine_alignment(n.isel(step=-1).transpose(*dims_n).values,
                               n.isel(step=0).transpose(*dims_n).values)
    return theory, per_run.mean(-1)


def check(ds) -> list[Claim]:
    loss_dmft, loss_net = mid_step_losses(ds)
    align = final_alignment(ds)
    move_dmft, move_net = movement(ds)
    mid = int(ds.step.values[-1]) // 2
    widths = ", ".join(str(int(w)) for w in ds.width.values)
    return [
        Claim("dmft_loss_falls_with_gamma0", largest_ratio(loss_dmft), 0.95, "<=",
              description=f"DMFT: largest ratio of the train loss at step {mid} between "
              "consecutive gamma0 (larger / smaller); <= 0.95: each increase of gamma0 "
              "cuts it by at least 5%, far above the Monte Carlo error (claim "
              "dmft_mc_error_loss)"),
        Claim("network_loss_falls_with_gamma0", largest_ratio(loss_net), 0.95, "<=",
              description=f"networks (seed mean, widths {widths}): the same ratio, the "
              "largest over widths and consecutive gamma0 (B&P 2022, Fig. 1)"),
        Claim("network_loss_matches_dmft", loss_gap(ds), LOSS_GAP_TOLERANCE, "<=",
              description=f"largest |network (seed mean, N={int(ds.width.values[-1])}) - "
              "DMFT| train loss over steps and gamma0, in units of the initial loss (1 for "
              "y = +-1 and f(0) = 0): the DMFT lines go through the network points"),
        Claim("final_kernel_alignment", float(align.min()), 0.99, ">=",
              description="smallest cosine alignment between the final Phi^l of the "
              "networks (seed mean) and of the DMFT, over layers, gamma0 and widths "
              f"{widths} (B&P 2022, Fig. 1)"),
        Claim("dmft_kernels_move_with_gamma0",
              float(np.max(np.diff(move_dmft, axis=0))), -MIN_MOVEMENT_STEP, "<=",
              description="DMFT: largest change, between consecutive gamma0, of the "
              "cosine alignment of the final Phi^l with Phi^l(0), over layers: negative "
              "when it falls strictly (the kernels move more at larger gamma0)"),
        Claim("network_kernels_move_with_gamma0",
              float(np.max(np.diff(move_net, axis=1))), -MIN_MOVEMENT_STEP, "<=",
              description="networks: the same, per width, of the seed mean of each run's "
              "alignment of its final Phi^l with its own Phi^l(0)"),
        Claim("kernel_movement_matches_dmft",
              float(np.max(np.abs(move_net[-1] - move_dmft))), MOVEMENT_TOLERANCE, "<=",
              description="largest |network (N="
              f"{int(ds.width.values[-1])}) - DMFT| cosine alignment of the final Phi^l "
              "with Phi^l(0), over layers and gamma0: the networks' kernels move as far "
              "as the DMFT's"),
        Claim("dmft_converged", float(ds.dmft_converged.min()), 1.0, ">=",
              description="every DMFT solve reached its tolerance (attrs converged)"),
        Claim("dmft_mc_error_loss", float(ds.dmft_mc_error_loss.max()), 0.02, "<=",
              description="largest relative gap of the DMFT loss curve to the solution "
              "with half the samples, over gamma0 (Monte Carlo error, O(S^-1/2))"),
    ]


# -- plot ----------------------------------------------------------------------------------


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    gammas = ds.gamma0.values
    depth = ds.sizes["layer"]
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(gammas)))
    fig = plt.figure(figsize=(3.2 * max(depth, 3) + 1, 10))
    grid = fig.add_gridspec(3, max(depth, 2))
    half = max(depth, 2) // 2
    ax = fig.add_subplot(grid[0, :half])
    widest = ds.width.values[-1]
    for g, c in zip(gammas, colors):
        ax.plot(ds.step, ds.dmft_train_loss.sel(gamma0=g), color=c, label=f"gamma0={g:g}")
        for w, marker in zip(ds.width.values, "os^vD"):
            net = ds.train_loss.sel(gamma0=g, width=w)
            ax.errorbar(ds.step, net.mean("seed"), yerr=net.std("seed"), color=c,
                        marker=marker, ls="none", ms=4, alpha=0.8,
                        label=f"N={int(w)}" if g == gammas[0] else None)
    ax.set(yscale="log", xlabel="step", ylabel="train loss",
           title="loss: DMFT (lines), networks (points, seed mean)")
    ax.legend(fontsize=7, ncol=2)
    ax = fig.add_subplot(grid[0, half:])
    move_dmft, move_net = movement(ds)
    for l in range(depth):
        c = plt.cm.plasma(l / max(depth, 1))
        ax.plot(gammas, move_dmft[:, l], "-", color=c, label=f"layer {l + 1}, DMFT")
        ax.plot(gammas, move_net[-1, :, l], "o", color=c,
                label=f"layer {l + 1}, N={int(widest)}")
    ax.set(xlabel="gamma0", ylabel="cos(Phi^l(T), Phi^l(0))",
           title="feature kernels move more with gamma0")
    ax.legend(fontsize=7, ncol=2)
    g = gammas[-1]
    theory = ds.dmft_feature_kernel.sel(gamma0=g).isel(step=-1)
    net = ds.feature_kernel.sel(gamma0=g, width=widest).isel(step=-1).mean("seed")
    for l in range(depth):
        vmax = float(max(np.abs(theory.isel(layer=l)).max(), np.abs(net.isel(layer=l)).max()))
        for row, (kern, who) in enumerate(((theory, "DMFT"), (net, f"N={int(widest)}"))):
            ax = fig.add_subplot(grid[1 + row, l])
            im = ax.imshow(kern.isel(layer=l), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set(title=f"Phi^{l + 1} final, {who}", xticks=[], yticks=[])
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{TITLE}\ndepth {depth}, heat maps at gamma0={g:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
