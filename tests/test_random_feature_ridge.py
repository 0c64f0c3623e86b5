"""Oracles of the random-feature eigenframework (kernels.random_feature_ridge): its limits
(infinitely many features is kernel regression, infinite ridge the null risk), the
equations it solves, and a direct average over random draws (kernels.random_features)."""

import numpy as np
import pytest

from kernels import random_feature_ridge as rfr
from kernels.random_features import rf_ridge_risks

RIDGES = np.logspace(-3, 2, 6)


def test_equations_are_solved():
    # (R1) at the returned (kappa, gamma), for both branches n < k and n > k, and modes
    # fewer than n and k (gamma_0 = 0): residuals at float64 rounding times the sums
    # (~M eps), 1e-9 relative.
    lam, _ = rfr.powerlaw_task(300, 1.5, 1.5)
    for n, k in [(50, 200), (200, 50), (500, 400)]:
        kappa, gamma = rfr.solve_gamma(lam, n, k, RIDGES)
        z = np.sum(lam / (lam + gamma[:, None]), axis=1)
        assert np.allclose(z + RIDGES / kappa, n, rtol=1e-9)
        assert np.allclose(z + k * kappa / gamma, k, rtol=1e-9)


def test_many_features_is_kernel_ridge_regression():
    # k -> infinity: kappa -> gamma, the bracket of (R2) -> (1 - L)^2, E0 -> n / (n - q);
    # the corrections are O(q / k) = O(n / k): 1e-5 at k = 1e9 leaves room for the
    # bisection's float64 rounding.
    lam, v = rfr.powerlaw_task(2000, 1.2, 1.4)
    rf = rfr.rf_risk(lam, v, 100, 10**9, RIDGES, noise=0.1)
    krr = rfr.krr_risk(lam, v, 100, RIDGES, noise=0.1)
    assert np.max(np.abs(rf / krr - 1)) < 1e-5
    # and at finite k the estimate is above kernel regression at every ridge
    assert np.all(rfr.rf_risk(lam, v, 100, 300, RIDGES) > rfr.krr_risk(lam, v, 100, RIDGES))


def test_krr_matches_its_closed_form_for_a_flat_spectrum():
    # M equal eigenvalues lambda: (K1) is quadratic, kappa = root of M lam/(lam + kappa) +
    # delta/kappa = n, and (K2) has L equal for all modes; an independent closed form.
    m, lam0, n, delta = 50, 0.3, 20, 0.7
    lam, v = np.full(m, lam0), np.full(m, 1 / np.sqrt(m))
    # n kappa^2 + (n lam - m lam - delta) kappa - delta lam = 0
    b = n * lam0 - m * lam0 - delta
    kappa = (-b + np.sqrt(b**2 + 4 * n * delta * lam0)) / (2 * n)
    learn = lam0 / (lam0 + kappa)
    expected = n / (n - m * learn**2) * (1 - learn) ** 2
    assert rfr.krr_risk(lam, v, n, delta) == pytest.approx(expected, rel=1e-10)


def test_infinite_ridge_gives_the_null_risk():
    # delta -> infinity: gamma ~ delta / n, L_i ~ n lambda_i / delta -> 0: risk ->
    # sum v^2 + sigma^2 with corrections O(n lambda_1 / delta) = 1e-7 at delta = 1e9.
    lam, v = rfr.powerlaw_task(500, 1.2, 1.4)
    null = rfr.null_risk(v, 0.2)
    assert rfr.rf_risk(lam, v, 100, 50, 1e9, noise=0.2) == pytest.approx(null, rel=1e-6)
    assert rfr.krr_risk(lam, v, 100, 1e9, noise=0.2) == pytest.approx(null, rel=1e-6)


def test_optimal_risk_falls_with_features_and_samples():
    # the paper's Theorem 1, on the estimate itself (fine ridge grid)
    lam, v = rfr.powerlaw_task(1000, 1.2, 1.4)
    ridges = np.logspace(-5, 3, 161)
    by_k = [rfr.rf_risk(lam, v, 64, k, ridges).min() for k in (16, 32, 64, 128, 512, 4096)]
    by_n = [rfr.rf_risk(lam, v, n, 64, ridges).min() for n in (16, 32, 64, 128, 512, 4096)]
    assert np.all(np.diff(by_k) < 0) and np.all(np.diff(by_n) < 0)


def test_matches_a_direct_average_over_draws():
    # Small Gaussian problems (M = 200 modes, n and k from 40 to 160, with label noise):
    # the mean over 64 draws of the exact test risk of RF ridge regression against the
    # estimate. The seed-mean's relative standard error is measured (<= 3%) and the
    # finite-size error of the deterministic equivalent at these sizes is a few percent,
    # so 8% at every point (ridges away from the k = n interpolation peak, where the
    # fluctuations of the smallest singular values dominate).
    lam, v = rfr.powerlaw_task(200, 1.3, 1.5)
    ridges = np.array([0.03, 0.3, 3.0])
    pairs = [(40, 160), (160, 40), (80, 120)]
    test, _ = rf_ridge_risks(lam, v, pairs, ridges, range(64), noise=0.05)
    mean = test.mean(0)
    sem = test.std(0, ddof=1) / np.sqrt(test.shape[0]) / mean
    theory = np.stack([rfr.rf_risk(lam, v, n, k, ridges, 0.05) for n, k in pairs])
    assert sem.max() < 0.03
    assert np.max(np.abs(mean / theory - 1)) < 0.08


def test_direct_simulation_is_exact_ridge_regression():
    # rf_ridge_risks against a dense NumPy solve of the same problem: the same draws are
    # regenerated with JAX's keys, the ridge solve done by numpy.linalg.solve in the
    # primal form; float64 both, 1e-8 relative (condition numbers <= 1e4 here).
    import jax
    import jax.numpy as jnp

    lam, v = rfr.powerlaw_task(60, 1.2, 1.4)
    n, k, ridges = 30, 45, np.array([0.1, 1.0])
    test, train = rf_ridge_risks(lam, v, [(n, k)], ridges, [3])
    with jax.enable_x64(True):
        key = jax.random.fold_in(jax.random.PRNGKey(3), 0)
        kx, kw, _ = jax.random.split(key, 3)
        x = np.asarray(jax.random.normal(kx, (n, 60), jnp.float64))
        w = np.asarray(jax.random.normal(kw, (k, 60), jnp.float64))
    g = (x * np.sqrt(lam)) @ w.T / np.sqrt(k)
    y = x @ v
    for j, d in enumerate(ridges):
        a = np.linalg.solve(g.T @ g + d * np.eye(k), g.T @ y)
        beta = np.sqrt(lam) * (w.T @ a) / np.sqrt(k)
        assert test[0, 0, j] == pytest.approx(np.sum((beta - v) ** 2), rel=1e-8)
        assert train[0, 0, j] == pytest.approx(np.mean((g @ a - y) ** 2), rel=1e-8)


@pytest.mark.parametrize("bad", [dict(ridge=-1.0), dict(n=0), dict(k=0)])
def test_rejects_bad_inputs(bad):
    lam, v = rfr.powerlaw_task(10, 1.0, 1.0)
    args = dict(n=5, k=5, ridge=1.0) | bad
    with pytest.raises(ValueError):
        rfr.rf_risk(lam, v, args["n"], args["k"], args["ridge"])


def test_simulation_rejects_a_zero_ridge():
    lam, v = rfr.powerlaw_task(10, 1.0, 1.0)
    with pytest.raises(ValueError, match="ridges"):
        rf_ridge_risks(lam, v, [(5, 5)], [0.0], [0])
