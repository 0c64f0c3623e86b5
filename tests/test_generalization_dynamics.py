"""Oracles of the generalization-dynamics reproduction (Advani, Saxe & Sompolinsky 2020):
the Marchenko-Pastur law's normalisation and moments, the exact per-instance spectral
solution of GD against the simulator, the frozen subspace, and the quick preset end to
end."""

import numpy as np
import pytest

import dynamics as td
from experiments import generalization_dynamics as gd
from kernels import marchenko_pastur as mp

ALPHAS = (0.3, 0.5, 1.0, 2.5)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_marchenko_pastur_normalisation_and_moments(alpha):
    # In the angle theta the integrand of lambda^k (k >= 1) is sin^2(theta) lambda^(k-1),
    # a trigonometric polynomial of degree k + 1, which the midpoint rule integrates
    # exactly; that of 1 is sin^2(theta) / lambda, analytic and periodic (lambda > 0 on
    # the support for alpha != 1, and (1 + cos theta)/2 at alpha = 1), where the rule
    # converges geometrically. So at 200 nodes only float64 rounding remains: 1e-12.
    one = mp.expectation(lambda lam: np.ones_like(lam), alpha, nodes=200)
    mean = mp.expectation(lambda lam: lam, alpha, nodes=200)
    second = mp.expectation(lambda lam: lam**2, alpha, nodes=200)
    assert abs(one - 1.0) < 1e-12
    assert abs(mean - 1.0) < 1e-12
    assert abs(second - mean**2 - 1.0 / alpha) < 1e-12   # variance 1/alpha = D/P
    assert mp.atom(alpha) == pytest.approx(max(1 - alpha, 0.0), abs=0)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_density_integrates_to_its_continuous_weight(alpha):
    # The density function, integrated by a plain fine grid in lambda (independent of the
    # quadrature's change of variable), carries weight min(alpha, 1) (the rest is the
    # atom). The grid misses O(h^{3/2}) at each square-root edge (and, at alpha = 1, the
    # integrable 1/sqrt(lambda) at 0 costs O(sqrt(h)) = 3e-4 with h = 1e-7 * span):
    # 2e-3 covers both.
    lo, hi = mp.edges(alpha)
    grid = np.linspace(lo, hi, 2_000_001)[1:-1]
    total = np.sum(mp.density(grid, alpha)) * (grid[1] - grid[0])
    assert abs(total - min(alpha, 1.0)) < 2e-3


@pytest.mark.parametrize("alpha,expected", [(0.5, 0.5**2 / 0.5), (0.25, 0.25**2 / 0.75),
                                            (2.0, 1.0 / (1 - 0.5)), (4.0, 1 / 0.75)])
def test_inverse_moment(alpha, expected):
    # E[1/lambda] over the continuous part: 1/(1 - 1/alpha) for alpha > 1 (the
    # inverse-Wishart limit), alpha^2/(1 - alpha) for alpha < 1 (the nonzero eigenvalues
    # are those of X X^T / P). 1/lambda is smooth away from alpha = 1, so the rule
    # converges geometrically: 1e-9 at 400 nodes.
    got = mp.expectation(lambda lam: 1.0 / lam, alpha, nodes=400, at_zero=0.0)
    assert abs(got - expected) < 1e-9


def test_mp_prediction_is_the_large_n_limit_of_the_spectral_sum():
    # Formula (2) averaged over teacher, noise and w0 for one sample covariance is the
    # same integrand summed over its eigenvalues / N; at N = 400 the sample spectrum's
    # linear statistics are within O(1/N) of MP's, and an early time (t = 20 steps, before
    # the smallest eigenvalues matter) keeps the integrand smooth: 2% is ~5x the observed
    # difference.
    rng = np.random.default_rng(0)
    n, alpha, sigma_w, noise, lr = 400, 2.0, 1.0, 0.5, 0.05
    x = rng.standard_normal((int(alpha * n), n))
    lam = np.linalg.eigvalsh(x.T @ x / x.shape[0])
    steps = np.array([0, 5, 20, 100])
    r = (1 - 2 * lr * lam[None, :]) ** steps[:, None]
    empirical = np.mean((1 + sigma_w**2) * r**2 + noise**2 / alpha * (1 - r) ** 2 / lam,
                        axis=1)
    theory = gd.mp_prediction(alpha, sigma_w, noise, lr, steps)
    assert np.max(np.abs(empirical / theory - 1)) < 0.02
    assert theory[0] == pytest.approx(1 + sigma_w**2, rel=1e-12)  # E|w0 - w*|^2 at t=0


def _one_run(n_train, dim=20, outputs=2, steps=300, sigma_w=1.0):
    spec = gd.make_spec(dim, n_train, outputs, 0.5, 0.1, steps, 10)
    ds, states = td.sweep(spec, seed=[0], sigma_w=[sigma_w], return_state=True,
                          progress=False)
    w0 = np.asarray(td.init_params(spec, 0, sigma_w=sigma_w)[0]["w"])
    wt = np.asarray(states[()].params[0]["w"])[0, 0]
    return spec, ds, w0, wt


@pytest.mark.parametrize("n_train", [12, 30])
def test_instance_prediction_equals_the_simulation(n_train):
    # The exact mode-by-mode solution (1) in float64 from the run's own data and w0,
    # against the float32 simulation: in every mode GD contracts (|1 - 2 eta lambda| < 1),
    # so per-step rounding (eps = 6e-8, a few per step) does not grow; over 300 steps
    # the measured error is ~5e-7, and 1e-5 leaves a margin of 20 while a wrong factor of
    # 2 in the rate or a moved null space would fail by orders of magnitude.
    spec, ds, w0, wt = _one_run(n_train)
    teacher = gd.TeacherError().bind(spec).teacher()
    predicted = gd.instance_prediction(spec.task.x_train, spec.task.train_targets(), w0,
                                       teacher, 0.1, ds.step.values)
    simulated = ds.teacher_error.isel(seed=0, sigma_w=0).values
    assert np.max(np.abs(simulated / predicted - 1)) < 1e-5
    # the trajectory's end point too, weight by weight
    w_end = gd.trajectory(spec.task.x_train, spec.task.train_targets(), w0, 0.1,
                          [spec.steps])[0]
    assert np.max(np.abs(w_end - wt)) < 1e-5 * np.max(np.abs(wt))


def test_weights_outside_the_data_span_never_move():
    # alpha = 12/20 < 1: 8 null directions. GD's update X^T r / P lies in the row span;
    # float32 rounding of the update leaves a null component of a few eps (6e-8) relative:
    # 1e-5 bounds it, while the motion inside the span is O(1) (asserted, so the test
    # cannot pass by not training).
    spec, ds, w0, wt = _one_run(12)
    assert np.linalg.norm(wt - w0) > 0.1
    assert gd.null_component(spec.task.x_train, wt - w0) < 1e-5
    # and the test error keeps the frozen part: never below (1 - alpha)(1 + sigma_w^2) /
    # 2 (half the MP frozen floor, room for the N = 20 fluctuation)
    assert ds.teacher_error.min() > 0.5 * (1 - 12 / 20) * 2.0


def test_invalid_learning_rate_is_refused_before_compiling():
    with pytest.raises(ValueError, match="lr must be <"):
        gd.run(dim=20, alphas=(0.25, 1.0), sigma_ws=(1.0,), label_noise=0.5, outputs=1,
               seeds=1, data_seeds=(0,), lr=1.0, steps=10, log_every=5)


def test_teacher_error_refuses_another_task():
    spec = td.Spec(td.MLP(depth=0, out_dim=1, activation="linear", bias=False),
                   td.tasks.teacher_student_mlp(dim=5, n_train=8, n_test=8),
                   td.optimizers.sgd(0.1), steps=2, log_every=1)
    with pytest.raises(ValueError, match="teacher_student_linear"):
        gd.TeacherError().bind(spec)


@pytest.mark.slow
def test_quick_preset_passes_every_claim(tmp_path):
    from experiments.common import execute

    summary = execute(gd, "quick", tmp_path, progress=False)
    failed = [c["name"] for c in summary["claims"] if not c["passed"]]
    assert failed == []
    assert (tmp_path / "figure.png").exists()
