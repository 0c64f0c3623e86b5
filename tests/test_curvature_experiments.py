"""The four curvature reproductions: oracles for the pieces they rest on (fast) and their
quick presets end to end through the command line (slow).

The oracles use linear regression ``f = x . w`` with rows on the unit sphere, whose
training-loss Hessian is exactly ``H = (2/P) X^T X`` (``dynamics.losses``: no 1/2), the
Hessian of the loss on one row is ``2 x x^T`` (top eigenvalue ``2 ||x||^2 = 2``) and
``tr H = (2/P) sum ||x_i||^2 = 2``; the GD and SGD stability thresholds are then exact:
GD along an eigenvector of ``H`` multiplies the error by ``1 - eta lambda``, SGD with one
row per step multiplies the error along ``x_i`` by ``1 - 2 eta ||x_i||^2 = 1 - eta tr H``
(Wu & Su 2023's bound ``tr H <= 2/eta`` is sharp for equal-norm rows).
"""

import json

import numpy as np
import pytest
import xarray as xr

import dynamics as td
from dynamics import curvature
from experiments import (adaptive_edge_of_stability, batch_hessian, cli, hessian_outliers,
                         tiny_subspace)

P, D = 8, 32  # fewer rows than parameters: the regression interpolates, as a network does
STEPS = 200


def _sphere_task():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((P, D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.standard_normal((P, 1))
    return td.tasks.from_arrays(x, y, loss="mse", name="sphere"), x


def _linear_spec(task, batch_size):
    model = td.MLP(width=1, depth=0, out_dim=1, activation="linear",
                   parametrization="standard", bias=False)
    observables = ("loss", curvature.Sharpness(iterations=D),
                   curvature.BatchSharpness(batch_size=1, iterations=D))
    return td.Spec(model, task, td.optimizers.sgd(0.1), steps=STEPS, log_every=STEPS // 2,
                   batch_size=batch_size, observables=observables)


def _stable(ds):
    """Did not diverge and ended 10x below its initial loss."""
    loss = ds.train_loss
    return (ds.diverged_at < 0) & (loss.isel(step=-1) < 0.1 * loss.isel(step=0))


def test_stability_thresholds_of_gd_and_sgd_on_linear_regression():
    """GD is stable iff eta lambda_max / 2 < 1, SGD with one row per step iff
    eta tr H / 2 < 1; the loop's sharpness observables are the exact eigenvalues."""
    task, x = _sphere_task()
    lam = 2 / P * np.linalg.eigvalsh(x.T @ x)[-1]
    trace = 2.0  # (2/P) sum ||x_i||^2 on the unit sphere
    assert lam * 1.1 < trace  # the window where GD is stable and SGD is not exists
    gd_lrs = [0.9 * 2 / lam, 1.1 * 2 / lam, 1.2 * 2 / trace]
    gd = td.sweep(_linear_spec(task, None), lr=gd_lrs)
    sgd = td.sweep(_linear_spec(task, 1), lr=[0.9 * 2 / trace, 1.2 * 2 / trace])

    # Lanczos with as many steps as parameters is exact up to float32 rounding (1e-4).
    np.testing.assert_allclose(gd.sharpness.isel(step=0), lam, rtol=1e-4)
    # One row's Hessian 2 x x^T has top eigenvalue 2 ||x||^2 = 2 whichever row is drawn.
    np.testing.assert_allclose(gd.batch_sharpness.isel(step=0), 2.0, rtol=1e-4)

    assert _stable(gd).values.tolist() == [True, False, True]  # GD: only lambda_max
    assert _stable(sgd).values.tolist() == [True, False]  # SGD: the trace bound


def test_count_outliers_by_largest_ratio_gap():
    """Synthetic spectra: C outliers above a geometric bulk are counted as C, whatever
    the overall scale."""
    bulk = 0.01 * 0.95 ** np.arange(8)
    spectra = []
    for c in (1, 3, 5):
        outliers = 0.05 * 0.9 ** np.arange(c)
        spectra.append(np.concatenate([outliers, bulk])[:9])
    ev = xr.DataArray(np.array(spectra) * np.array([[1.0], [1e3], [1e-3]]),
                      dims=("case", "eigen_index"))
    assert hessian_outliers.count_outliers(ev).values.tolist() == [1, 3, 5]
    np.testing.assert_allclose(hessian_outliers.gap_ratio(ev, 3).values[1],
                               0.05 * 0.9**2 / 0.01, rtol=1e-12)


def test_largest_stable_lr_needs_every_seed_stable():
    """eta*(B) is the largest lr at which every seed neither diverged nor ended above its
    initial loss; NaN when there is none."""
    lr = np.array([0.1, 0.2, 0.4])
    loss0 = np.ones((2, 2, 3))
    loss1 = np.array([[[0.1, 0.1, 2.0], [0.1, 0.1, 0.1]],     # B=1: seed 0 grows at 0.4
                      [[0.1, 5.0, 0.1], [0.1, 0.1, 0.1]]])    # B=2: 0.2 fails, 0.4 passes
    diverged = np.array([[[-1, -1, -1], [-1, -1, 3]],
                         [[-1, -1, -1], [-1, -1, -1]]])
    ds = xr.Dataset(
        {"train_loss": (("batch_size", "seed", "lr", "step"), np.stack([loss0, loss1], -1)),
         "diverged_at": (("batch_size", "seed", "lr"), diverged)},
        coords={"batch_size": [1, 2], "seed": [0, 1], "lr": lr, "step": [0, 10]})
    assert batch_hessian.largest_stable_lr(ds).values.tolist() == [0.2, 0.4]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["edge-of-stability", "hessian-outliers", "batch-hessian",
                                  "sgd-stability", "adaptive-edge-of-stability",
                                  "tiny-subspace"])
def test_quick_preset_claims_hold(name, tmp_path):
    assert cli.main(["run", name, "--preset", "quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    failed = [c for c in summary["claims"] if not c["passed"]]
    assert summary["passed"] and not failed, failed
    assert len(summary["claims"]) >= 4
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_adaptive_threshold_is_38_over_eta_for_beta1_09():
    # (2 + 2 * 0.9) / (0.1 * eta) = 38 / eta exactly, up to float rounding
    aeos = adaptive_edge_of_stability
    assert aeos.threshold(0.01) == pytest.approx(3800.0, rel=1e-12)
    assert aeos.threshold(0.01, beta1=0.0) == pytest.approx(200.0, rel=1e-12)  # GD: 2/eta



def test_tiny_subspace_chance_level_uses_the_networks_parameter_count():
    """k/P, the fraction of a random k-dimensional subspace, needs the exact P of the
    MLP that the experiment trains (biases included): counted against its init."""
    import jax
    from jax.flatten_util import ravel_pytree

    model = td.MLP(width=32, depth=2, out_dim=10, activation="relu",
                   parametrization="standard")
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 40), np.float32))
    # integer count: exact equality
    assert tiny_subspace.parameter_count(40, 32, 10) == ravel_pytree(params)[0].size == 2698


def test_tiny_subspace_claims_read_sgd_and_gd_runs_apart():
    """``check`` takes the alignment claims from the SGD runs and the control from the
    GD run (``batch_size == n_train``): a synthetic Dataset where they differ."""
    steps = [0, 50, 200, 300]  # late: steps >= 300 / 3, so 200 and 300
    frac = np.array([[[0.6, 0.1, 0.8, 0.9]],     # SGD: late median 0.85, rise 0.1 - 0.85
                     [[0.6, 0.0, 0.01, 0.03]]])  # GD: late median 0.02
    overlap = np.array([[[np.nan, 0.7, 0.95, 0.97]], [[np.nan, 0.7, 0.99, 0.99]]])
    ds = xr.Dataset(
        {"top_subspace_gradient_fraction": (("batch_size", "seed", "step"), frac),
         "top_subspace_overlap": (("batch_size", "seed", "step"), overlap),
         "diverged_at": (("batch_size", "seed"), [[-1], [-1]]),
         "chance_fraction": 0.004},
        coords={"batch_size": [64, 1000], "seed": [0], "step": steps},
        attrs={"n_train": 1000})
    claims = {c.name: c.measured for c in tiny_subspace.check(ds)}
    # medians of two or three numbers: exact up to float rounding
    assert claims["most_gradient_in_top_subspace"] == pytest.approx(0.85)
    assert claims["tiny_subspace"] == pytest.approx(0.85 / 0.004)
    assert claims["initial_phase"] == pytest.approx(0.1 - 0.85)
    assert claims["subspace_changes_slowly"] == pytest.approx(0.96)
    assert claims["no_alignment_under_gd"] == pytest.approx(0.02)
