"""The residual-depth experiment: its closed-form bound, its per-seed variance estimate,
the best-learning-rate grid logic and its claims, and (slow) the quick preset end to end."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

from experiments import cli
from experiments import residual_depth as rd
from experiments.common import best_grid_point
from kernels import infinite


def _inputs(n=4, d=6):
    return jax.random.normal(jax.random.PRNGKey(3), (n, d))


def test_nngp_limit_is_the_deep_limit_of_the_residual_recursion():
    # Under 1/sqrt(L) branches the stream's variance is Sigma^1 (1 + c/L)^L, c =
    # sigma_w^2 / 2, = Sigma^1 exp(c - c^2/(2L) + c^3/(3L^2) - ...). At L = 64 the
    # c^2/(2L) term (2e-3) is divided out; the next one, c^3/(3L^2) = 1e-5, bounds the
    # remaining relative difference, so rtol 1e-4 would catch a wrong limit or recursion.
    x = _inputs()
    depth, c = 64, rd.SIGMA_W ** 2 / 2
    model = rd.variance_model(16, depth, 0.5)
    deep = float(jnp.mean(jnp.diag(infinite.nngp(model, x))))
    np.testing.assert_allclose(deep, rd.nngp_limit(x) * math.exp(-c * c / (2 * depth)),
                               rtol=1e-4)


def test_unscaled_nngp_grows_by_one_and_a_half_per_block():
    # ReLU without biases, sigma_w = 1: each block multiplies the stream's variance by
    # exactly 1 + sigma_w^2/2 (the claim's target); float32 recursion, rtol 1e-5.
    x = _inputs()
    v = [float(jnp.mean(jnp.diag(infinite.nngp(rd.variance_model(16, L, 0.0), x))))
         for L in (3, 4)]
    np.testing.assert_allclose(v[1] / v[0], 1.5, rtol=1e-5)


def test_second_moment_per_seed_is_that_of_the_seeds_own_network():
    # A dense recomputation, seed by seed, across a chunk boundary: the chunked, vmapped
    # estimate must be each initialisation's own mean g^2 (float32 sums of 40 squares:
    # rtol 1e-5).
    x = _inputs()
    model = rd.variance_model(8, 2, 0.5)
    seeds = rd.SEED_CHUNK + 2
    got = rd.empirical_second_moment(model, x, seeds)
    root = jax.random.PRNGKey(0)
    for s in (0, rd.SEED_CHUNK - 1, rd.SEED_CHUNK + 1):
        g = model.apply(model.init(jax.random.fold_in(root, s), x), x)
        np.testing.assert_allclose(got[s], float(jnp.mean(g ** 2)), rtol=1e-5)
    assert got.shape == (seeds,) and np.std(got) > 0


def test_best_grid_point_never_picks_a_grid_point_where_a_seed_diverged():
    lr = [0.25, 0.5, 1.0]
    loss = xr.DataArray([[1.0, 0.5, 0.1], [1.0, 0.6, 0.2]], dims=("seed", "lr"),
                        coords={"lr": lr})
    diverged = xr.zeros_like(loss, dtype=bool)
    best, at = best_grid_point(loss, diverged)
    assert float(best) == 0.0 and float(at) == pytest.approx(0.15)
    diverged[1, 2] = True  # lr 1 diverged for one seed: the best is lr 0.5
    best, at = best_grid_point(loss, diverged)
    assert float(best) == -1.0 and float(at) == pytest.approx(0.55)


def _synthetic(best_unscaled, best_scaled, growth=1.5):
    """A Dataset shaped like run()'s: second moments ``0.5 growth^L`` without scaling and
    the NNGP bound with it; losses with a minimum at the given log2 learning rates."""
    depths_v, depths = [1, 2, 4, 8], [2, 4, 8, 16]
    log2_lr = np.arange(-4, 5)
    mom = np.stack([0.5 * growth ** np.array(depths_v, float), np.full(4, 0.6)])
    moments = np.repeat(mom[:, :, None], 3, axis=2)
    nngp = np.stack([0.5 * 1.5 ** np.array(depths_v, float), np.full(4, 0.6)])
    loss = np.stack([[(log2_lr - b) ** 2 + 0.1 for b in best]
                     for best in (best_unscaled, best_scaled)])          # (exp, depth, lr)
    loss = np.repeat(loss[:, :, None, :], 2, axis=2)                     # seeds
    return xr.Dataset(
        {"output_second_moment": (("depth_exponent", "var_depth", "var_seed"), moments),
         "nngp_variance": (("depth_exponent", "var_depth"), nngp),
         "final_loss": (("depth_exponent", "depth", "seed", "lr"), loss),
         "diverged": (("depth_exponent", "depth", "seed", "lr"), np.zeros(loss.shape, bool))},
        coords={"depth_exponent": [0.0, 0.5], "var_depth": depths_v, "depth": depths,
                "lr": 2.0 ** log2_lr},
        attrs={"nngp_limit": 0.62, "steps": 10, "width": 8, "var_width": 8})


def test_claims_read_each_branch_rule_apart():
    claims = {c.name: c for c in rd.check(_synthetic([2, 1, -1, -2], [0, 0, 1, 0]))}
    assert claims["unscaled_growth_per_block"].measured == pytest.approx(1.5)
    assert claims["unscaled_best_lr_drifts"].measured == 4
    assert claims["depth_mup_best_lr_stable"].measured == 1
    assert all(c.passed for c in claims.values()), [c for c in claims.values()
                                                     if not c.passed]
    # the rules swapped: both learning-rate claims fail
    swapped = {c.name: c for c in rd.check(_synthetic([0, 0, 1, 0], [2, 1, -1, -2]))}
    assert not swapped["unscaled_best_lr_drifts"].passed
    assert not swapped["depth_mup_best_lr_stable"].passed
    # a best learning rate at the end of the grid is flagged
    edge = {c.name: c for c in rd.check(_synthetic([4, 1, -1, -2], [0, 0, 1, 0]))}
    assert edge["best_lrs_inside_grid"].measured == 1 and not edge["best_lrs_inside_grid"].passed
    # a growth that is not the NNGP's fails both variance claims
    wrong = {c.name: c for c in rd.check(_synthetic([2, 1, -1, -2], [0, 0, 1, 0], 1.7))}
    assert not wrong["unscaled_growth_per_block"].passed
    assert not wrong["unscaled_variance_matches_nngp"].passed


@pytest.mark.slow  # 35-100 s on 2 shared cores (SECONDS["quick"] alone)
def test_quick_preset_claims_hold(tmp_path):
    assert cli.main(["run", rd.NAME, "--preset", "quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    failed = [c for c in summary["claims"] if not c["passed"]]
    assert summary["passed"] and not failed, failed
    assert len(summary["claims"]) == 8
    assert (tmp_path / "figure.png").stat().st_size > 10_000
