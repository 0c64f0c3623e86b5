"""Curvature operators, Lanczos, trace and density against dense oracles (float64:
``jax.hessian`` + ``eigh`` on small models)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import dynamics as td
from dynamics import curvature, losses
from dynamics.curvature import density, lanczos, operators, trace


pytestmark = pytest.mark.usefixtures("x64")


def dense(matvec, like):
    """The matrix of a pytree operator, column by column."""
    flat_matvec, flat, _ = lanczos.flat_operator(matvec, like)
    return jax.jit(jax.vmap(flat_matvec))(jnp.eye(flat.shape[0], dtype=flat.dtype)).T


@functools.lru_cache(maxsize=None)
def mlp_problem(n=24, dim=3, width=4, out_dim=2, seed=0, activation="tanh"):
    task = td.tasks.teacher_student_linear(
        dim=dim, n_train=n, n_test=4, out_dim=out_dim, seed=seed).astype("float64")
    model = td.MLP(width=width, depth=1, out_dim=out_dim, activation=activation)
    x, y = jnp.asarray(task.x_train), jnp.asarray(task.y_train)
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), x)

    def outputs(p, rows=None):
        return model.apply(p, x if rows is None else x[rows])

    return params, outputs, losses.mse, y


def dense_hessian(params, outputs, loss, y, rows=None):
    flat, unravel = ravel_pytree(params)
    yr = y if rows is None else y[rows]
    return jax.jit(jax.hessian(lambda f: loss(outputs(unravel(f), rows), yr)))(flat)


def random_tangent(params, seed=1):
    flat, unravel = ravel_pytree(params)
    return unravel(jax.random.normal(jax.random.PRNGKey(seed), flat.shape, flat.dtype))


# -- operators ----------------------------------------------------------------------------


@pytest.mark.parametrize("rows_per_pass", [None, 7])
def test_hvp_equals_dense_product(rows_per_pass):
    params, outputs, loss, y = mlp_problem()
    v = random_tangent(params)
    mv = operators.training_matvec("hessian", outputs, loss, y, params,
                                   rows_per_pass=rows_per_pass)
    expected = dense_hessian(params, outputs, loss, y) @ ravel_pytree(v)[0]
    # float64, the same sums in another order (7 does not divide 24: a short last batch)
    np.testing.assert_allclose(ravel_pytree(jax.jit(mv)(v))[0], expected, rtol=1e-10, atol=1e-12)


def test_hvp_on_a_batch_is_the_batch_hessian():
    params, outputs, loss, y = mlp_problem()
    rows = jnp.array([3, 17, 5, 0, 11])
    v = random_tangent(params)
    got = jax.jit(operators.training_matvec("hessian", outputs, loss, y, params, rows=rows))(v)
    expected = dense_hessian(params, outputs, loss, y, rows) @ ravel_pytree(v)[0]
    np.testing.assert_allclose(ravel_pytree(got)[0], expected, rtol=1e-10, atol=1e-12)


def test_linear_regression_hessian_is_two_over_n_xtx():
    # dynamics.losses: L = (1/N) sum_i (x_i.w - y_i)^2, so H = (2/N) X^T X exactly.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(30, 5)))
    y = jnp.asarray(rng.normal(size=(30, 1)))
    w = jnp.asarray(rng.normal(size=(5, 1)))
    mv = operators.training_matvec("hessian", lambda p, r: (x if r is None else x[r]) @ p,
                                   losses.mse, y, w, rows_per_pass=8)
    np.testing.assert_allclose(dense(mv, w), 2 / 30 * x.T @ x, rtol=1e-12, atol=1e-12)


def test_ggn_equals_hessian_for_softmax_cross_entropy_of_a_linear_model():
    # f = x W is linear in W, so the residual term of the Hessian vanishes: H = J^T H_L J.
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(20, 4)))
    labels = jnp.asarray(rng.integers(0, 3, size=20))
    w = jnp.asarray(rng.normal(size=(4, 3)))
    outputs = lambda p, r: x @ p  # noqa: E731
    ggn = dense(operators.training_matvec("ggn", outputs, losses.cross_entropy, labels, w), w)
    hessian = jax.hessian(lambda p: losses.cross_entropy(x @ p, labels))(w).reshape(12, 12)
    np.testing.assert_allclose(ggn, hessian, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_ggn_and_fisher_equal_their_dense_formulas_on_an_mlp():
    params, outputs, loss, y = mlp_problem(n=10)
    flat, unravel = ravel_pytree(params)
    jac = jax.jit(jax.jacobian(lambda f: outputs(unravel(f))))(flat)  # (N, K, P)
    f = outputs(params)
    h_l = jax.jit(jax.hessian(lambda o: loss(o, y)))(f)  # (N, K, N, K)
    n, k, p = jac.shape
    ggn = jac.reshape(n * k, p).T @ h_l.reshape(n * k, n * k) @ jac.reshape(n * k, p)
    per_example = jax.jit(jax.vmap(jax.grad(lambda fl, i: loss(outputs(unravel(fl), i[None]),
                                                       y[i[None]])), (None, 0)))(flat, jnp.arange(n))
    fisher = per_example.T @ per_example / n
    for kind, expected in (("ggn", ggn), ("fisher", fisher)):
        got = dense(operators.training_matvec(kind, outputs, loss, y, params, rows_per_pass=3),
                    params)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=kind)
    # And the Hessian differs from the GGN on a nonlinear model (the test can fail).
    assert np.abs(dense_hessian(params, outputs, loss, y) - ggn).max() > 1e-3


def test_unknown_kind_is_rejected():
    params, outputs, loss, y = mlp_problem()
    with pytest.raises(ValueError, match="kind must be one of"):
        operators.training_matvec("hessain", outputs, loss, y, params)
    with pytest.raises(ValueError, match="rows_per_pass must be"):
        operators.training_matvec("hessian", outputs, loss, y, params, rows_per_pass=0)


# -- Lanczos ------------------------------------------------------------------------------


def test_lanczos_of_order_n_reproduces_the_whole_spectrum():
    params, outputs, loss, y = mlp_problem()
    h = dense_hessian(params, outputs, loss, y)
    n = h.shape[0]
    mv = operators.training_matvec("hessian", outputs, loss, y, params)
    flat_matvec, flat, _ = lanczos.flat_operator(mv, params)
    tri = jax.jit(lambda: lanczos.tridiagonalize(flat_matvec, jnp.ones(n), n))()
    theta, _, _ = jax.jit(lanczos.ritz)(tri)
    scale = np.abs(np.linalg.eigvalsh(h)).max()
    # full reorthogonalisation keeps Q orthonormal to rounding: eigenvalues to ~n eps ||H||
    np.testing.assert_allclose(theta, np.linalg.eigvalsh(h), atol=1e-10 * scale)
    np.testing.assert_allclose(tri.basis @ tri.basis.T, np.eye(n), atol=1e-10)


def test_lanczos_restarts_on_repeated_eigenvalues():
    # 3 distinct eigenvalues of multiplicity (4, 3, 3): the Krylov space of any start is
    # invariant after 3 steps; the restarts must still find every copy.
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    eig = np.repeat([-1.0, 2.0, 5.0], [4, 3, 3])
    a = jnp.asarray(q @ np.diag(eig) @ q.T)
    v0 = jnp.asarray(rng.normal(size=10))
    theta, _, _ = jax.jit(lambda: lanczos.ritz(lanczos.tridiagonalize(
        lambda v: a @ v, v0, 10, jax.random.PRNGKey(0))))()
    np.testing.assert_allclose(theta, eig, atol=1e-10)


def test_top_and_bottom_eigenpairs_match_eigh():
    params, outputs, loss, y = mlp_problem(n=40, dim=6, width=8, out_dim=1, seed=3)
    h = dense_hessian(params, outputs, loss, y)
    exact, vecs = np.linalg.eigh(h)
    n = h.shape[0]
    mv = operators.training_matvec("hessian", outputs, loss, y, params)
    top = jax.jit(lambda: lanczos.eigenpairs(mv, params, jax.random.PRNGKey(0), k=3, order=40))()
    assert n > 40  # a genuine Krylov approximation, not the full decomposition
    # top-3 to 1e-6 relative (the contract of the issue)
    np.testing.assert_allclose(top.values, exact[::-1][:3], rtol=1e-6)
    # the reported residual is the true one, ||H x - theta x||, for unit vectors x
    x = jax.vmap(lambda t: ravel_pytree(t)[0])(top.vectors)
    true_res = np.linalg.norm(x @ h - top.values[:, None] * x, axis=1)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-10)
    np.testing.assert_allclose(top.residuals, true_res, rtol=1e-3, atol=1e-12)
    # eigenvector of the top eigenvalue up to sign
    assert abs(x[0] @ vecs[:, -1]) > 1 - 1e-6
    bottom = jax.jit(lambda: lanczos.eigenpairs(mv, params, jax.random.PRNGKey(1), k=1,
                                                order=n, which="smallest"))()
    np.testing.assert_allclose(bottom.values, exact[:1], atol=1e-10 * np.abs(exact).max())


def test_power_iteration_converges_to_the_largest_magnitude():
    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    eig = np.concatenate([[3.0, 1.5], rng.uniform(-1, 1, size=10)])
    a = jnp.asarray(q @ np.diag(eig) @ q.T)
    value, _, history = jax.jit(lambda: lanczos.power_iteration(
        lambda v: a @ v, jnp.zeros(12), jax.random.PRNGKey(0), iterations=60))()
    # error of the Rayleigh quotient ~ (lambda_2/lambda_1)^(2 t) = 0.5^120: rounding only
    np.testing.assert_allclose(value, 3.0, rtol=1e-12)
    assert abs(history[2] - 3.0) > 1e-6  # and it was not there from the start


def test_lanczos_arguments_are_validated():
    with pytest.raises(ValueError, match="which must be one of"):
        lanczos.eigenpairs(lambda v: v, jnp.zeros(3), jax.random.PRNGKey(0), which="top")
    with pytest.raises(ValueError, match="k must be an int in"):
        lanczos.eigenpairs(lambda v: v, jnp.zeros(3), jax.random.PRNGKey(0), k=4)


# -- trace ---------------------------------------------------------------------------------


def test_hutchinson_mean_and_variance():
    params, outputs, loss, y = mlp_problem()
    h = dense_hessian(params, outputs, loss, y)
    a = jnp.asarray(h)
    m, trials = 4, 20000
    estimates = jax.jit(jax.vmap(lambda k: trace.hutchinson(lambda v: a @ v, jnp.zeros(a.shape[0]),
                                                    k, samples=m)))(
        jax.random.split(jax.random.PRNGKey(0), trials))
    exact_var = 2 * (np.sum(h**2) - np.sum(np.diag(h) ** 2)) / m
    # sample variance of 20000 draws: relative sd sqrt((kurtosis - 1)/trials) < 3% for any
    # kurtosis below 19; 10% is more than 3 sd
    np.testing.assert_allclose(np.var(estimates.estimate), exact_var, rtol=0.1)
    # the reported stderr^2 is an unbiased estimate of the same variance
    np.testing.assert_allclose(np.mean(estimates.stderr**2), exact_var, rtol=0.1)
    # one estimate with more samples: its mean within 3 standard errors of the trace
    one = jax.jit(lambda: trace.hutchinson(
        operators.training_matvec("hessian", outputs, loss, y, params),
        params, jax.random.PRNGKey(5), samples=50))()
    assert abs(one.estimate - np.trace(h)) < 3 * one.stderr


@pytest.mark.slow
def test_hutch_plus_plus_is_exact_on_low_rank_and_unbiased():
    rng = np.random.default_rng(5)
    u = rng.normal(size=(30, 3))
    low_rank = jnp.asarray(u @ np.diag([5.0, 2.0, 1.0]) @ u.T)
    est = jax.jit(lambda: trace.hutch_plus_plus(
        lambda v: low_rank @ v, jnp.zeros(30), jax.random.PRNGKey(0), samples=9))()
    # rank 3 = samples/3: the sketch spans the range, the remainder is zero
    np.testing.assert_allclose(est.estimate, np.trace(low_rank), rtol=1e-10)
    params, outputs, loss, y = mlp_problem()
    h = dense_hessian(params, outputs, loss, y)
    full = jax.jit(lambda: trace.hutch_plus_plus(
        operators.training_matvec("hessian", outputs, loss, y, params),
        params, jax.random.PRNGKey(1), samples=30))()
    assert abs(full.estimate - np.trace(h)) < 3 * full.stderr


# -- density ----------------------------------------------------------------------------------


def test_slq_density_integrates_to_one_and_its_mean_is_trace_over_n():
    params, outputs, loss, y = mlp_problem()
    h = dense_hessian(params, outputs, loss, y)
    n = h.shape[0]
    ev = np.linalg.eigvalsh(h)
    mv = operators.training_matvec("hessian", outputs, loss, y, params)
    sigma = 0.02
    grid = np.linspace(ev[0] - 10 * sigma, ev[-1] + 10 * sigma, 4001)
    quad = jax.jit(lambda: density.slq(mv, params, jax.random.PRNGKey(0), probes=32,
                                       order=12))()
    phi = np.asarray(jax.jit(density.broadened_density)(quad, grid, sigma))
    # Gaussians of sd sigma, at least 10 sd inside the grid, step sigma/10 or finer:
    # the trapezoid rule is exact to far below 1e-6
    np.testing.assert_allclose(np.trapezoid(phi, grid), 1.0, atol=1e-6)
    mean = np.trapezoid(grid * phi, grid)
    # the first moment is the mean of v^T H v / v^T v over probes (e_1^T T e_1)
    alpha1 = np.sum(np.asarray(quad.nodes) * np.asarray(quad.weights), axis=1)
    np.testing.assert_allclose(mean, alpha1.mean(), atol=1e-6 * np.abs(ev).max())
    # ... an unbiased estimate of tr(H)/n: within 3 standard errors over the probes
    assert abs(mean - np.trace(h) / n) < 3 * alpha1.std(ddof=1) / np.sqrt(32)
    # with order = n each probe's quadrature puts its nodes on the eigenvalues
    full = jax.jit(lambda: density.slq(mv, params, jax.random.PRNGKey(1), probes=1,
                                       order=n))()
    np.testing.assert_allclose(np.sort(full.nodes[0]), ev, atol=1e-10 * np.abs(ev).max())


def test_density_sigma_must_be_positive():
    with pytest.raises(ValueError, match="sigma must be > 0"):
        density.spectral_density(lambda v: v, jnp.zeros(3), jax.random.PRNGKey(0),
                                 np.linspace(0, 1, 5), 0.0)
    with pytest.raises(ValueError, match="SpectralDensity.sigma must be > 0"):
        curvature.SpectralDensity(sigma=-1.0)
    with pytest.raises(ValueError, match="TopEigenvalues.iterations must be an int >= 3"):
        curvature.TopEigenvalues(k=3, iterations=2)
