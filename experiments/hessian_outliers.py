r"""Bulk and outliers: the Hessian at the end of training is a bulk near zero plus about C
outliers, one per class.

Sagun, Evci, Güney, Dauphin & Bottou (2017), "Empirical Analysis of the Hessian of
Over-Parametrized Neural Networks" (arXiv:1706.04454): the spectrum of the
training-loss Hessian splits into a bulk concentrated near zero, which depends on the
architecture, and a few large outliers whose number is the number of classes ``C`` and
whose position depends on the data. The mechanism (their discussion, and Papyan 2020,
"Traces of class/cross-class structure pervade deep learning spectra", JMLR 21): near a minimum
the Hessian is close to the Gauss-Newton matrix ``G = (1/P) sum_i J_i^T M_i J_i`` (``J_i``
the Jacobian of the logits, ``M_i = diag(p_i) - p_i p_i^T`` the Hessian of the
cross-entropy in the logits); the per-class means of the gradients span a
``C``-dimensional subspace in which ``G`` is large (the outliers), the within-class
scatter makes the bulk.

Here: a Gaussian mixture of ``C`` classes (``dynamics.tasks.gaussian_mixture``, means on
orthonormal directions at distance ``separation * sqrt(2)``) with cross-entropy, a
one-hidden-layer tanh MLP in the NTK parametrization trained by full-batch GD until the
training set is fitted; ``dynamics.curvature.TopEigenvalues(k = 3C)`` (Lanczos) at the
first and last log points of every run, inside the loop, for two widths and two
separations.

Counting outliers (the gap criterion): sort the top ``3C`` eigenvalues
``l_1 >= ... >= l_3C`` and take as outliers the ``n`` before the largest ratio gap,
``n = argmax_i l_i / l_{i+1}``. Ratios are scale-free (the overall scale of the Hessian
changes with width and training time); within a bulk the consecutive ratios of its top
edge are close to 1 (1.0-1.2 here), so the edge of the outliers is the largest jump; we
look at ``3C`` eigenvalues so that a count of ``C`` is not forced by the window.

Claims: at the well-separated mixture the count is ``C`` at every width; widening (at
fixed data) leaves the outliers (their sum changes by less than 15%) while the bulk's top
edge ``l_{C+1}`` shrinks; a less separable mixture pulls the outliers towards the bulk
(the gap ratio ``l_C / l_{C+1}`` at the larger separation is at least 1.2 times that at
the smaller).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import dynamics as td
from dynamics import curvature
from experiments.common import Claim

NAME = "hessian-outliers"
TITLE = "Hessian bulk and C outliers (Sagun et al. 2017) on a Gaussian mixture"

PRESETS = {
    "quick": dict(n_classes=4, dim=20, n_train=200, widths=(128, 1024),
                  separations=(4.0, 8.0), steps=100, lr=0.5, lanczos_iterations=80),
    "full": dict(n_classes=10, dim=40, n_train=1000, widths=(128, 512, 2048),
                 separations=(4.0, 6.0, 8.0, 12.0), steps=800, lr=0.5,
                 lanczos_iterations=120),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 51 s, measured on 2 shared
# cores; full: 158 s on 2 otherwise idle cores, 539 s while other jobs used them (800
# steps: at 300 the least separable mixture was still being fitted, 0.93 train accuracy).
SECONDS = {"quick": 50, "full": 158}

OUTLIER_STABILITY = 0.15  # |sum of outliers at the widest / narrowest width - 1|


def make_spec(n_classes, dim, n_train, width, separation, steps, lr, lanczos_iterations):
    task = td.tasks.gaussian_mixture(n_classes=n_classes, dim=dim, separation=separation,
                                     n_train=n_train, n_test=200, seed=0,
                                     loss="cross_entropy")
    model = td.MLP(width=width, depth=1, out_dim=n_classes, activation="tanh",
                   parametrization="ntk")
    top = curvature.TopEigenvalues(k=3 * n_classes, iterations=lanczos_iterations, every=steps)
    return td.Spec(model, task, td.optimizers.sgd(lr), steps=steps, log_every=steps // 2,
                   observables=("loss", "accuracy", top))


def run(n_classes, dim, n_train, widths, separations, steps, lr, lanczos_iterations):
    rows = []
    for separation in separations:
        spec = make_spec(n_classes, dim, n_train, widths[0], separation, steps, lr,
                         lanczos_iterations)
        ds = td.sweep(spec, width=list(widths))
        rows.append(ds.expand_dims(separation=[separation]))
    ds = xr.concat(rows, dim="separation", combine_attrs="override")
    ds.attrs["n_classes"] = n_classes
    ev = ds.top_eigenvalues
    return ds.assign(outlier_count=count_outliers(ev), gap_ratio=gap_ratio(ev, n_classes))


def count_outliers(eigenvalues: xr.DataArray) -> xr.DataArray:
    """Number of eigenvalues before the largest ratio gap ``l_i / l_{i+1}`` (see the
    module doc), over the descending ``eigen_index`` dimension."""
    ev = eigenvalues.transpose(..., "eigen_index").values
    ratios = ev[..., :-1] / np.maximum(ev[..., 1:], np.finfo(ev.dtype).tiny)
    count = np.argmax(np.where(np.isfinite(ratios), ratios, -np.inf), axis=-1) + 1
    dims = [d for d in eigenvalues.transpose(..., "eigen_index").dims if d != "eigen_index"]
    return xr.DataArray(count, dims=dims, coords={d: eigenvalues[d] for d in dims})


def gap_ratio(eigenvalues: xr.DataArray, n_classes: int) -> xr.DataArray:
    """``l_C / l_{C+1}``: how far the C-th eigenvalue stands above the bulk's edge."""
    return (eigenvalues.isel(eigen_index=n_classes - 1)
            / eigenvalues.isel(eigen_index=n_classes))


def check(ds) -> list[Claim]:
    c = int(ds.attrs["n_classes"])
    end = ds.isel(step=-1)
    sep_hi, sep_lo = ds.separation.values.max(), ds.separation.values.min()
    w_lo, w_hi = ds.width.values.min(), ds.width.values.max()
    hi = end.sel(separation=sep_hi)
    miscount = float(abs(hi.outlier_count - c).max())
    outliers = hi.top_eigenvalues.isel(eigen_index=slice(0, c)).sum("eigen_index")
    outlier_change = float(abs(outliers.sel(width=w_hi) / outliers.sel(width=w_lo) - 1))
    edge = hi.top_eigenvalues.isel(eigen_index=c)
    edge_ratio = float(edge.sel(width=w_hi) / edge.sel(width=w_lo))
    gaps = end.gap_ratio.sel(width=w_hi)
    gap_gain = float(gaps.sel(separation=sep_hi) / gaps.sel(separation=sep_lo))
    fitted = float(end.train_accuracy.min())
    return [
        Claim("outlier_count_is_C", miscount, 0.0, "<=",
              description=f"max over widths of |outliers by the largest ratio gap - C| "
              f"(C={c}) at separation {sep_hi:g}"),
        Claim("outliers_independent_of_width", outlier_change, OUTLIER_STABILITY, "<=",
              description=f"|sum of the top C eigenvalues at width {w_hi} / at {w_lo} - 1|"),
        Claim("bulk_edge_shrinks_with_width", edge_ratio, 0.9, "<=",
              description=f"l_(C+1) at width {w_hi} / at width {w_lo}: the bulk scales "
              "with the architecture"),
        Claim("separability_moves_outliers", gap_gain, 1.2, ">=",
              description=f"gap ratio l_C / l_(C+1) at separation {sep_hi:g} / at "
              f"{sep_lo:g} (width {w_hi})"),
        Claim("training_set_fitted", fitted, 0.95, ">=",
              description="min final train accuracy over all runs"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    c = int(ds.attrs["n_classes"])
    end = ds.isel(step=-1)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    index = np.arange(1, ds.sizes["eigen_index"] + 1)
    styles = ["-", "--", ":", "-."]
    colors = plt.cm.viridis(np.linspace(0, 0.85, ds.sizes["width"]))
    for s, sep in enumerate(ds.separation.values):
        for w, color in zip(ds.width.values, colors):
            axes[0].plot(index, end.top_eigenvalues.sel(separation=sep, width=w), marker="o",
                         ms=3, ls=styles[s % len(styles)], color=color,
                         label=f"width {w}, separation {sep:g}")
    axes[0].axvline(c + 0.5, color="k", lw=0.8)
    axes[0].set(yscale="log", xlabel="eigenvalue index i", ylabel="l_i",
                title=f"top {ds.sizes['eigen_index']} Hessian eigenvalues at the end "
                f"(line: C={c})")
    axes[0].legend(fontsize=7)
    for s, sep in enumerate(ds.separation.values):
        ev = end.top_eigenvalues.sel(separation=sep, width=ds.width.values.max()).values
        axes[1].plot(index[:-1], ev[:-1] / ev[1:], marker="o", ls=styles[s % len(styles)],
                     label=f"separation {sep:g}")
    axes[1].axvline(c, color="k", lw=0.8)
    axes[1].set(xlabel="i", ylabel="l_i / l_(i+1)",
                title="gap criterion (largest ratio = edge of the outliers)")
    axes[1].legend(fontsize=8)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
