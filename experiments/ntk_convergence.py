r"""The empirical NTK converges to a deterministic kernel as the width grows, and stays put
during training (Jacot, Gabriel & Hongler 2018, "Neural Tangent Kernel: Convergence and
Generalization in Neural Networks").

For an MLP in the NTK parametrization (``dynamics.parametrization``, Jacot et al. eq. 1)
the empirical NTK ``Theta_N(x, x') = sum_p d_p f(x) d_p f(x')`` is a random kernel at
initialisation; as the width ``N -> infinity`` it tends to the deterministic limit
``Theta_infinity`` of their Thm 1 (the recursion ``Theta^{l+1} = Sigma^{l+1} +
sigma_w^2 E[phi'(u) phi'(v)] Theta^l`` of ``kernels.infinite``), and it stays equal to its
initial value during training (their Thm 2). Two measurements, one per theorem:

1. **Convergence at initialisation** (Thm 1, their Fig. 1). Inputs on the unit circle,
   ``x(gamma) = (cos gamma, sin gamma)`` as in Jacot et al. Fig. 1; for each width and
   each of many seeds, ``kernels.empirical_ntk(..., trace=True)`` at the initial
   parameters against ``kernels.ntk`` of the same ``dynamics.MLP``. The relative error
   ``e_N = ||Theta_N - Theta_infinity||_F / ||Theta_infinity||_F`` is a sum over ``N``
   nearly independent neurons: its fluctuations are ``O(N^{-1/2})`` (central limit
   theorem; the mean's own bias is ``O(1/N)``), so the root-mean-square over seeds
   ``sqrt(E e_N^2)`` falls with a log-log slope of ``-1/2`` (with one hidden layer the
   empirical NTK is an exact average of ``N`` i.i.d. terms with mean ``Theta_infinity``,
   so ``E e_N^2 = c / N`` exactly).
2. **Kernel movement during training** (Thm 2). ``dynamics.sweep(spec, seed=...,
   width=[...])`` trains the same architecture by full-batch gradient descent on an MLP
   teacher (MSE) with ``kernels.KernelObservables`` in the loop: ``kernel_distance = 1 -
   cos(Theta_t, Theta_0)`` (Frobenius cosine; Fort et al. 2020, eq. 2) at the end of
   training shrinks with width. If ``Theta_t - Theta_0 = O(N^{-p})`` with a component
   orthogonal to ``Theta_0`` of that size, ``1 - cos = O(N^{-2p})``; Lee et al. (2019,
   Thm 2.1) bound the change by ``p >= 1/2``, hence a slope ``<= -1``. The relative
   weight change ``||theta_t - theta_0|| / ||theta_0||`` in the NTK parametrization
   (``dynamics.parametrization``) is ``O(N^{-1/2})`` with one hidden layer (both weight
   matrices have ``O(N)`` entries, each moving by ``O(N^{-1/2})``) and ``O(N^{-1})`` with
   more (the ``N x N`` hidden matrices dominate ``||theta_0|| ~ N`` and move by ``O(1)``
   in Frobenius norm).

The quick preset uses one hidden layer (cheap up to ``N = 4096`` on a CPU); the full
preset two (its ``N x N`` hidden matrix makes the wide end the costly part).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

import dynamics as td
import kernels
from experiments.common import Claim, loglog_slope

NAME = "ntk-convergence"
TITLE = "Empirical NTK -> infinite-width NTK (Jacot, Gabriel & Hongler 2018)"

SIGMA_W = 2.0**0.5  # He scale for relu: the pre-activation variance is kept across layers
SIGMA_B = 0.1

PRESETS = {
    "quick": dict(depth=1, widths=(64, 256, 1024, 4096), seeds=16, n_circle=16,
                  train_widths=(64, 512, 4096), train_seeds=4, n_train=32,
                  steps=200, log_every=20, lr=0.4, probe_size=16),
    "full": dict(depth=2, widths=(64, 128, 256, 512, 1024, 2048, 4096), seeds=32,
                 n_circle=32, train_widths=(64, 128, 256, 512, 1024, 2048), train_seeds=8,
                 n_train=64, steps=400, log_every=20, lr=0.4, probe_size=32),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 53 s, measured on 2 shared
# cores; full: 111 s on 2 otherwise idle cores (every claim passed; an earlier 20-minute
# attempt under load did not finish).
SECONDS = {"quick": 55, "full": 111}


def make_model(width: int, depth: int) -> td.MLP:
    return td.MLP(width=width, depth=depth, activation="relu", parametrization="ntk",
                  sigma_w=SIGMA_W, sigma_b=SIGMA_B)


def circle(n: int) -> np.ndarray:
    """``n`` equally spaced points on the unit circle (Jacot et al. 2018, Fig. 1)."""
    gamma = 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(gamma), np.sin(gamma)], axis=1).astype(np.float32)


def ntk_at_init(model: td.MLP, x, seeds: int) -> np.ndarray:
    """Traced empirical NTKs ``(seeds, n, n)`` at the initial parameters of seeds
    ``0..seeds-1`` (keys as ``dynamics.run_key``), one compiled program per width."""
    x = jnp.asarray(x)

    def one(seed):
        params = model.init(jax.random.fold_in(td.run_key(0, seed), 0), x)
        return kernels.empirical_ntk(lambda p, xx: model.apply(p, xx), params, x, trace=True)

    return np.asarray(jax.jit(lambda s: jax.lax.map(one, s))(jnp.arange(seeds)))


def make_spec(depth, n_train, steps, log_every, lr, probe_size) -> td.Spec:
    task = td.tasks.teacher_student_mlp(dim=8, n_train=n_train, n_test=64,
                                        activation="tanh", seed=0)
    every = steps // 2  # kernel observables at the start, middle and end
    observables = ("loss", "relative_weight_change",
                   kernels.KernelObservables(probe_size=probe_size, every=every))
    return td.Spec(make_model(64, depth), task, td.optimizers.sgd(lr), steps=steps,
                   log_every=log_every, observables=observables)


def run(depth, widths, seeds, n_circle, train_widths, train_seeds, n_train, steps,
        log_every, lr, probe_size):
    if (steps // log_every) % 2:
        raise ValueError(f"steps // log_every must be even (kernel observables at the "
                         f"start, middle and end), got {steps} // {log_every}")
    x = circle(n_circle)
    k_inf = np.asarray(kernels.ntk(make_model(widths[0], depth), jnp.asarray(x)))
    k_emp = np.stack([ntk_at_init(make_model(w, depth), x, seeds) for w in widths])
    err = np.linalg.norm(k_emp - k_inf, axis=(-2, -1)) / np.linalg.norm(k_inf)
    gamma = 2 * np.pi * np.arange(n_circle) / n_circle
    spec = make_spec(depth, n_train, steps, log_every, lr, probe_size)
    ds = td.sweep(spec, seed=range(train_seeds), width=list(train_widths))
    ds["ntk_relative_error"] = (("init_width", "init_seed"), err)
    ds["ntk_empirical_slice"] = (("init_width", "init_seed", "angle"), k_emp[:, :, 0, :])
    ds["ntk_infinite_slice"] = (("angle",), k_inf[0])
    ds = ds.assign_coords(init_width=list(widths), init_seed=np.arange(seeds), angle=gamma)
    ds.attrs["depth"] = depth
    return ds


def _rms_error(ds):
    return np.sqrt((ds.ntk_relative_error**2).mean("init_seed"))


def local_slopes(x, y) -> np.ndarray:
    """Log-log slopes between consecutive points."""
    return np.diff(np.log(np.asarray(y, float))) / np.diff(np.log(np.asarray(x, float)))


def check(ds) -> list[Claim]:
    widths = ds.init_width.values
    weight_slope = -0.5 if int(ds.attrs.get("depth", 1)) == 1 else -1.0
    rms = _rms_error(ds).values
    train_widths = ds.width.values
    final = ds.isel(step=-1).mean("seed")
    distance = final.kernel_distance.values
    change = final.relative_weight_change.values
    fitted = float((final.train_loss / ds.train_loss.isel(step=0).mean("seed")).max())
    return [
        Claim("ntk_error_slope", loglog_slope(widths, rms), -0.5, "within", 0.1,
              "log-log slope of the RMS (over seeds) relative Frobenius error "
              "||Theta_N - Theta_inf|| / ||Theta_inf|| at initialisation against width "
              "(Jacot et al. 2018, Thm 1; central limit theorem: -1/2)"),
        Claim("ntk_error_widest", float(rms[-1]), 0.06, "<=",
              description=f"RMS relative error at width {widths[-1]}: the empirical NTK is "
              "close to kernels.ntk"),
        Claim("kernel_movement_slope", loglog_slope(train_widths, distance), -1.0, "<=",
              description="log-log slope of the final kernel_distance 1 - cos(Theta_t, "
              "Theta_0) against width (Jacot et al. 2018, Thm 2; <= -1 if the kernel "
              "moves by O(N^-1/2), Lee et al. 2019, Thm 2.1)"),
        Claim("kernel_movement_monotone", float(local_slopes(train_widths, distance).max()),
              -0.5, "<=", description="largest log-log slope of the final kernel_distance "
              "between consecutive widths (it falls everywhere, at least like N^-1/2)"),
        Claim("weight_change_slope", loglog_slope(train_widths, change), weight_slope,
              "within", 0.15, "log-log slope of ||theta_t - theta_0|| / ||theta_0|| at the "
              "end against width (NTK parametrization: -1/2 with one hidden layer, -1 with "
              "more)"),
        Claim("all_runs_fit", fitted, 0.05, "<=",
              description="largest final / initial train loss over widths (seed mean)"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    widths = ds.init_width.values
    for w, c in ((widths[0], "tab:orange"), (widths[-1], "tab:blue")):
        for i, s in enumerate(ds.init_seed.values[:4]):
            ax.plot(ds.angle, ds.ntk_empirical_slice.sel(init_width=w, init_seed=s), color=c,
                    lw=0.8, alpha=0.8, label=f"N={w}" if i == 0 else None)
    ax.plot(ds.angle, ds.ntk_infinite_slice, "k--", lw=1.5, label="kernels.ntk (N=inf)")
    ax.set(xlabel="gamma (x = (cos gamma, sin gamma))", ylabel="Theta(x(0), x(gamma))",
           title=f"NTK at init, depth {ds.attrs.get('depth', '?')}, 4 seeds each")
    ax.legend(fontsize=8)
    ax = axes[1]
    rms = _rms_error(ds)
    ax.plot(widths, rms, "o-", label="RMS over seeds")
    ax.plot(widths, rms.values[0] * np.sqrt(widths[0] / widths), "k:", label="N^-1/2")
    ax.set(xscale="log", yscale="log", xlabel="width N",
           ylabel="||Theta_N - Theta_inf||_F / ||Theta_inf||_F",
           title=f"convergence at init (slope {loglog_slope(widths, rms.values):.2f})")
    ax.legend(fontsize=8)
    ax = axes[2]
    final = ds.isel(step=-1)
    tw = ds.width.values
    for name, label in (("kernel_distance", "1 - cos(Theta_t, Theta_0)"),
                        ("relative_weight_change", "||theta_t - theta_0|| / ||theta_0||")):
        v = final[name]
        ax.errorbar(tw, v.mean("seed"), yerr=v.std("seed"), marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="width N", ylabel="after training",
           title="movement during training")
    ax.legend(fontsize=8)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
