"""Criticality at initialisation (kernels.criticality, experiments.criticality): the
kernel and four-point-vertex recursions against the book's closed forms (Roberts, Yaida &
Hanin 2022, ch. 5), the SELU moment map against Klambauer et al. (2017) and quadrature,
and networks against the exact finite-width ReLU law."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynamics import activations
from experiments import criticality as experiment
from kernels import activation_duals, criticality


def test_relu_recursion_is_exactly_flat_with_vertex_5_l():
    # Book §5.2: at C_W = 1/A_2 = 2, K^(l) = K^(1) and V^(l)/K^2 = (l-1)(3A_4/A_2^2 - 1)
    # = 5 (l - 1). The symmetric Gauss-Hermite nodes integrate relu(z)^p as half of |z|^p
    # exactly, so only rounding is left (1e-12).
    r = criticality.kernel_recursion("relu", 2.0, 0.0, 1.7, 30)
    np.testing.assert_allclose(r["kernel"], 1.7, rtol=1e-12)
    np.testing.assert_allclose(r["chi_parallel"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(r["four_point_vertex"] / r["kernel"] ** 2,
                               5.0 * np.arange(30), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c_w", [1.8, 2.2])
def test_relu_off_criticality_is_exponential(c_w):
    # K^(l) = (C_W/2)^(l-1) K^(1) (scale invariance: <relu^2>_K = K/2), to rounding.
    r = criticality.kernel_recursion("relu", c_w, 0.0, 1.0, 20)
    np.testing.assert_allclose(r["kernel"], (c_w / 2) ** np.arange(20), rtol=1e-12)


def test_tanh_kernel_decays_as_one_over_two_l():
    # Book §5.3.3, a_1 = -2: 1/K^(l) = 2 l - (5/6) log l + O(1) (module doc), so
    # l K^(l) - 1/2 = (5/24) log(l)/l + O(1/l). At l = 2000 the log term is 8e-4; the
    # O(1/l) constant is bounded by comparing two depths: (l K - 1/2) l / log l must
    # approach 5/24 = 0.208 from above and lie within 0.06 of it at both (it is 0.24 at
    # l = 1000 and falls like 1/log l).
    r = criticality.kernel_recursion("tanh", 1.0, 0.0, 1.0, 2000)
    k = r["kernel"]
    assert abs(2000 * k[-1] - 0.5) < 1e-3
    c1000 = (1000 * k[999] - 0.5) * 1000 / math.log(1000)
    c2000 = (2000 * k[-1] - 0.5) * 2000 / math.log(2000)
    assert 5 / 24 < c2000 < c1000 < 5 / 24 + 0.06
    # chi_par = 1 + 2 a_1 K + O(K^2) = 1 - 4 K: the second-order term is O(K^2) ~ 1e-6
    np.testing.assert_allclose(r["chi_parallel"][-1], 1 - 4 * k[-1], atol=1e-5)


def test_tanh_vertex_slope_tends_to_two_thirds():
    # Book §5.3.3: V/K^2 = (2/3) l + ... for the K* = 0 class; the slope over
    # l in [250, 500] is within 1% of 2/3 (it is 0.662 at l ~ 75 and converges like
    # 1/l up to logs).
    r = criticality.kernel_recursion("tanh", 1.0, 0.0, 1.0, 500)
    v = r["four_point_vertex"] / r["kernel"] ** 2
    assert abs((v[-1] - v[249]) / 250 - 2 / 3) < 0.01 * 2 / 3


def test_gaussian_moments_match_the_dual():
    # <sigma^2>_K is the dual's diagonal k(K, K, K) (kernels.activation_duals: erf has a
    # closed form, Williams 1997); 200 nodes on an analytic function: 1e-10.
    for k in (0.3, 1.0, 2.5):
        m = criticality.gaussian_moments("erf", k)
        with jax.enable_x64(True):
            exact = float(activation_duals.get("erf")(jnp.float64(k), jnp.float64(k),
                                                      jnp.float64(k))[0])
        assert abs(float(m["sigma2"]) - exact) < 1e-10


def test_chi_parallel_is_the_derivative_of_the_recursion():
    # chi_par = d<sigma^2>_K/dK C_W (Gaussian integration by parts) against a central
    # difference with h = 1e-5 (error O(h^2) ~ 1e-10, rounding ~1e-11).
    h, k = 1e-5, 0.7
    f = lambda q: float(criticality.gaussian_moments("tanh", q)["sigma2"])  # noqa: E731
    fd = (f(k + h) - f(k - h)) / (2 * h)
    assert abs(float(criticality.gaussian_moments("tanh", k)["chi_over_cw"]) - fd) < 1e-8


@pytest.mark.usefixtures("x64")
def test_selu_fixed_point_and_jacobian():
    # Klambauer et al. (2017): (0, 1) is the fixed point at omega = 0, tau = 1 (their
    # constants to 30 digits: float64 rounding, well under 1e-6); the Jacobian they
    # report there is ((0, 0.088834), (0, 0.782648)) (6 digits).
    mu, nu = criticality.selu_moment_map(0.0, 1.0)
    assert abs(float(mu)) < 1e-6 and abs(float(nu) - 1) < 1e-6
    jac = np.asarray(criticality.selu_moment_jacobian())
    np.testing.assert_allclose(jac, [[0.0, 0.088834], [0.0, 0.782648]], atol=1e-6)
    # against a central finite-difference Jacobian at a generic point (h = 1e-6:
    # truncation O(h^2), rounding ~1e-10 / h): eigenvalues to 1e-7
    point = (0.05, 1.2, 0.08, 1.03)
    h = 1e-6
    fd = np.zeros((2, 2))
    for j in range(2):
        up, down = list(point), list(point)
        up[j] += h
        down[j] -= h
        fd[:, j] = (np.array(criticality.selu_moment_map(*up), float)
                    - np.array(criticality.selu_moment_map(*down), float)) / (2 * h)
    ad = np.asarray(criticality.selu_moment_jacobian(*point))
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(ad)),
                               np.sort(np.linalg.eigvals(fd)), atol=1e-7)


@pytest.mark.usefixtures("x64")
def test_selu_moment_map_against_quadrature():
    # The closed form (Klambauer et al. eqs. 4-5) against 2000-point trapezoid
    # integration of selu over +-12 sd of z ~ N(mu omega, nu tau); the kink at 0 makes
    # the trapezoid error O(dz^2) ~ 1e-5 relative: tolerance 1e-4.
    for mu, nu, omega, tau in ((0.0, 1.0, 0.0, 1.0), (0.3, 1.4, 0.5, 0.9),
                               (-0.5, 0.6, 1.0, 1.1)):
        m, s = mu * omega, math.sqrt(nu * tau)
        z = np.linspace(m - 12 * s, m + 12 * s, 200001)
        p = np.exp(-0.5 * ((z - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
        y = np.asarray(activations.get("selu")(jnp.asarray(z)))
        mean = np.trapezoid(y * p, z)
        var = np.trapezoid(y**2 * p, z) - mean**2
        got = criticality.selu_moment_map(mu, nu, omega, tau)
        np.testing.assert_allclose([float(got[0]), float(got[1])], [mean, var], atol=1e-4)


def test_selu_activation_constants():
    # Klambauer et al. (2017), eq. 2 with alpha_01, lambda_01.
    x = jnp.array([-2.0, -0.5, 0.0, 0.7])
    want = criticality.SELU_LAMBDA * np.where(
        np.asarray(x) > 0, np.asarray(x), criticality.SELU_ALPHA * np.expm1(np.asarray(x)))
    np.testing.assert_allclose(activations.get("selu")(x), want, rtol=1e-6)


def test_relu_networks_follow_the_exact_finite_width_law():
    # Bias-free ReLU networks at C_W = 2, width 16: E G_hat^(l) = K^(1) and
    # n Var(G_hat)/K^2 = n((1 + 5/n)^(l-1) - 1) exactly (kernels.criticality). 1500 seeds:
    # each estimate within 4 standard errors (its own, from the samples) at each of 4
    # layers.
    width, depth, seeds = 16, 3, 1500
    g = experiment.metric_samples("relu", 2.0, width, depth, seeds, np.ones((1, 4)))
    k1 = g[0, 0]
    assert np.allclose(g[:, 0], 2.0)
    se_mean = g.std(0) / math.sqrt(seeds)
    assert np.all(np.abs(g.mean(0) - k1)[1:] <= 4 * se_mean[1:])
    vertex = experiment.normalised_variance(g, width)
    se = experiment.normalised_variance_se(g, width)
    exact = width * criticality.relu_metric_variance_exact(width, np.arange(1, depth + 2))
    assert np.all(np.abs(vertex - exact)[1:] <= 4 * se[1:])


def test_vertex_fit_recovers_a_quadratic():
    # an exact a x + b x^2 curve is recovered to rounding
    layers = np.arange(1, 12)
    a, b = experiment.vertex_fit(layers, 5 * (layers - 1) + 0.1 * (layers - 1) ** 2)
    assert abs(a - 5) < 1e-9 and abs(b - 0.1) < 1e-9


def test_contraction_factor_of_a_geometric_sequence():
    # nu_l - 1 = d0 rho^l on both sides of 1 (layer 0, the input, is ignored): rho exactly
    nu = np.vstack([np.r_[9.0, 1 + 0.3 * 0.7 ** np.arange(6)],
                    np.r_[0.0, 1 - 0.2 * 0.7 ** np.arange(6)]])
    assert abs(experiment.contraction_factor(nu) - 0.7) < 1e-12


def test_kernel_recursion_validates():
    with pytest.raises(ValueError, match="c_w"):
        criticality.kernel_recursion("relu", -1.0, 0.0, 1.0, 5)
    with pytest.raises(ValueError, match="depth"):
        criticality.kernel_recursion("relu", 2.0, 0.0, 1.0, 0)
    with pytest.raises(ValueError, match="activation"):
        criticality.kernel_recursion("nope", 2.0, 0.0, 1.0, 3)


@pytest.mark.slow
def test_quick_preset_passes(tmp_path):
    from experiments.common import execute

    summary = execute(experiment, "quick", tmp_path, progress=False)
    failed = [c["name"] for c in summary["claims"] if not c["passed"]]
    assert not failed, failed
