"""Oracles of the river-valley reproduction (Wen et al. 2024): the WSD schedule at its
breakpoints, the toy landscape as the engine trains it, the noisy-SGD noise floor against
its closed form over many seeds, the recursion against the closed form, the bigram
entropy floor against a dense enumeration, and the quick preset end to end."""

import itertools

import jax
import numpy as np
import pytest

import dynamics as td
from dynamics.models.river_valley import RiverValley, RiverValleyLoss, river_valley_task
from dynamics.tasks.sequences import transition_matrix
from experiments import river_valley as exp
from kernels import river_valley as theory


def test_wsd_learning_rates_at_the_breakpoints():
    # T = 100, W = 10, D = 20, f = 0, peak 0.3 (schedules module doc): the warmup is
    # (t + 1) / W, constant from t = W - 1 to the decay start T - D = 80, then linear to 0:
    # 1 - (t - 80) / 20. Float32 schedule values: 1e-6 relative.
    opt = td.optimizers.sgd(0.3, schedule="wsd", warmup_fraction=0.1, decay_fraction=0.2)
    spec = td.Spec(RiverValley(), river_valley_task(RiverValley()), opt, steps=100,
                   log_every=10)
    lrs = exp.learning_rates(spec)
    expected = {0: 0.03, 4: 0.15, 9: 0.3, 50: 0.3, 80: 0.3, 90: 0.15, 95: 0.075, 99: 0.015}
    for t, value in expected.items():
        assert abs(lrs[t] - value) <= 1e-6 * 0.3, (t, lrs[t], value)


def test_the_training_loss_is_the_landscape():
    # the residual outputs under mse give L = softplus(-x/s) + (a/2)||y||^2, and the
    # observable's two parts add up to it (float64: 1e-12)
    with jax.enable_x64(True):
        model = RiverValley(valley_dims=3, curvature=2.5, river_scale=4.0, river_start=-1.0,
                            valley_start=0.7)
        spec = td.Spec(model, river_valley_task(model, "float64"), td.optimizers.sgd(0.01),
                       steps=1, log_every=1, observables=("loss", RiverValleyLoss()))
        ds = td.sweep(spec, seed=[0]).isel(seed=0, step=0)
        expected = np.log1p(np.exp(1.0 / 4.0)) + 0.5 * 2.5 * 0.7**2
        assert abs(float(ds.train_loss) - expected) < 1e-12
        assert abs(float(ds.river_loss + ds.valley_excess) - expected) < 1e-12


def test_gradient_noise_is_the_runs_own_and_checked():
    # a run's noise comes from its own key: seed 3 alone equals seed 3 in a batch of four
    # (float32 trajectories to 1e-6, DESIGN "Keys"); seeds differ; a negative sigma is
    # refused by name
    model = RiverValley(valley_dims=2)
    spec = td.Spec(model, river_valley_task(model), td.optimizers.sgd(
        0.5, gradient_noise=1.0), steps=20, log_every=10, observables=(RiverValleyLoss(),))
    alone = td.sweep(spec, seed=[3]).valley_excess.sel(seed=3)
    batch = td.sweep(spec, seed=[0, 1, 2, 3]).valley_excess
    assert np.allclose(alone, batch.sel(seed=3), rtol=1e-6, atol=0)
    assert float(abs(batch.sel(seed=0) - batch.sel(seed=1)).max()) > 1e-3
    with pytest.raises(ValueError, match="gradient_noise must be >= 0"):
        td.optimizers.sgd(0.5, gradient_noise=-1.0)
    # a theory of plain gradient descent is told that the gradient is noisy
    assert "gradient_noise=1.0" in " ".join(
        spec.optimizer.departures_from_gradient_descent())


@pytest.mark.parametrize("lr", [0.5, 1.5])
def test_stationary_excess_over_seeds_matches_the_closed_form(lr):
    # constant lr, the valley started at its bottom; after 100 steps (relaxation time
    # 1 / (eta a (2 - eta a)) <= 1.4 steps) the excess of 2000 independent seeds at the last
    # step is a sample of the stationary law: its mean is within 4 standard errors of
    # eta sigma^2 / (2 (2 - eta a)) per direction (at eta a = 1.5 the 2 - eta a factor
    # doubles it, so a formula without it fails by ~30 standard errors)
    model = RiverValley(valley_dims=1, curvature=1.0, valley_start=0.0)
    spec = td.Spec(model, river_valley_task(model), td.optimizers.sgd(
        lr, gradient_noise=0.7), steps=100, log_every=100, observables=(RiverValleyLoss(),))
    excess = td.sweep(spec, seed=list(range(2000))).valley_excess.isel(step=-1).values
    expected = float(theory.stationary_excess(lr, 1.0, 0.7))
    se = excess.std() / np.sqrt(excess.size)
    assert abs(excess.mean() - expected) <= 4 * se, (excess.mean(), expected, se)


def test_recursion_reaches_the_closed_form_and_is_nan_when_unstable():
    # the recursion at a constant lr converges geometrically to the fixed point (float64,
    # 1e-12 after 2000 steps at a contraction (1 - eta a)^2 <= 0.25)
    for lr, a, sigma in [(0.5, 1.0, 1.0), (0.1, 10.0, 0.3), (1.5, 1.0, 2.0)]:
        traj = theory.excess_trajectory(np.full(2000, lr), a, sigma, 3.0)
        assert abs(traj[-1] - theory.stationary_excess(lr, a, sigma)) < 1e-12
    assert np.isnan(theory.stationary_excess(2.5, 1.0, 1.0))


def test_bigram_entropy_floor_against_dense_enumeration():
    # every sequence of a 3-token chain of length T + 1 = 4, with its probability (uniform
    # first token): the Bayes predictor's expected per-position cross-entropy equals
    # markov_chain_bayes_loss (float64, 1e-12)
    task = td.tasks.markov_chain(vocab_size=3, seq_len=3, n_train=4, n_test=4,
                                 concentration=0.5, seed=2)
    p = transition_matrix(3, 0.5, 2)
    total = 0.0
    for s in itertools.product(range(3), repeat=4):
        prob = np.prod([p[s[t], s[t + 1]] for t in range(3)]) / 3
        total += prob * np.mean([-np.log(p[s[t], s[t + 1]]) for t in range(3)])
    assert abs(td.tasks.markov_chain_bayes_loss(task) - total) < 1e-12


def test_sample_floor_converges_to_the_entropy_floor():
    # the chain's own loss on 4000 sampled sequences is within 4 standard errors of L*
    # (the standard error from the per-sequence losses, independent sequences)
    task = td.tasks.markov_chain(vocab_size=16, seq_len=8, n_train=4, n_test=4000, seed=1)
    p = transition_matrix(16, 0.2, 1)
    per_sequence = -np.log(p[task.x_test, task.y_test]).mean(axis=1)
    se = per_sequence.std() / np.sqrt(per_sequence.size)
    sample = td.tasks.markov_chain_sample_loss(task)
    assert abs(sample - per_sequence.mean()) < 1e-12
    assert abs(sample - td.tasks.markov_chain_bayes_loss(task)) <= 4 * se


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
    from experiments.cli import main
    import json

    assert main(["run", "river-valley", "--preset", "quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"], [c for c in summary["claims"] if not c["passed"]]
    assert (tmp_path / "figure.png").stat().st_size > 0
