"""Oracles of the rich-lazy-rank reproduction (Liu et al. 2024): the low-rank initial weights
(rank by SVD, exact norm, the aligned subspace), the task directions against the SVD of a
known teacher, the two-layer linear tangent kernel and its closed forms against dense
Jacobians, least squares and Monte Carlo over tasks, Spearman's correlation against
scipy, and the quick preset end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

import dynamics as td
from dynamics import low_rank
from experiments import rich_lazy_rank as exp
from kernels import low_rank as theory
from kernels.observables import centred_alignment

# ------------------------------------------------------------------- low-rank weights


def _singular_values(w):
    return np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)


@pytest.mark.parametrize("parametrization", ["ntk", "standard"])
@pytest.mark.parametrize("rank", [1, 3, 10])
def test_mlp_init_rank_has_the_rank_and_the_expected_norm(parametrization, rank):
    # float64: the singular values beyond the rank are float64 rounding of the product
    # U_r S_r V_r^T (~1e-15 relative to the top one; 1e-10 leaves room), and the norm is
    # exact to rounding (1e-12 relative).
    with jax.enable_x64(True):
        model = td.MLP(width=12, depth=2, activation="tanh", parametrization=parametrization,
                       sigma_w=1.3, init_rank=rank, init_rank_layer=1)
        x = jnp.ones((3, 10), jnp.float64)
        params = model.init(jax.random.PRNGKey(4), x)
        scale = model.layers(10)[1].scale.weight_std
        s = _singular_values(params[1]["w"])
        assert np.sum(s > 1e-10 * s[0]) == rank
        assert abs(np.linalg.norm(params[1]["w"]) / (scale * 12) - 1) < 1e-12
        # the other layers keep their full-rank Gaussian draws
        assert np.sum(_singular_values(params[0]["w"]) > 1e-10) == 10


def test_default_init_is_the_iid_gaussian_draw_unchanged():
    # init_rank = 0 draws exactly weight_std * normal(fold_in(key, l) split) as before the
    # option existed: bitwise the same arrays
    model = td.MLP(width=8, depth=1, parametrization="ntk", sigma_w=0.7)
    x = jnp.ones((2, 5))
    params = model.init(jax.random.PRNGKey(1), x)
    for layer in model.layers(5):
        k_w, _ = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(1), layer.index))
        expected = layer.scale.weight_std * jax.random.normal(
            k_w, (layer.fan_in, layer.fan_out), x.dtype)
        assert np.array_equal(params[layer.index]["w"], expected)


def test_full_rank_is_the_gaussian_draw_rescaled_to_the_norm():
    # rank = min(shape): the truncated SVD keeps everything, so the weight is the Gaussian
    # draw times norm / ||G||_F (float64 rounding, 1e-12)
    with jax.enable_x64(True):
        key = jax.random.PRNGKey(2)
        w = low_rank.low_rank_weight(key, (6, 9), 6, 5.0, dtype=jnp.float64)
        g = jax.random.normal(key, (6, 9), jnp.float64)
        assert np.max(np.abs(w - 5.0 * g / jnp.linalg.norm(g))) < 1e-12


def test_aligned_weight_spans_the_basis():
    # the column space of w (its top-r left singular vectors) is the basis' span: the
    # projectors agree to float64 rounding (the 1e-6 with room), the r singular
    # values are equal (norm / sqrt(r)) and the norm is exact
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        basis = np.linalg.qr(rng.standard_normal((20, 3)))[0]
        w = np.asarray(low_rank.low_rank_weight(jax.random.PRNGKey(0), (20, 15), 3, 2.0, basis,
                                                jnp.float64))
        u, s, _ = np.linalg.svd(w)
        assert np.max(np.abs(u[:, :3] @ u[:, :3].T - basis @ basis.T)) < 1e-6
        assert np.max(np.abs(s[:3] - 2.0 / np.sqrt(3))) < 1e-12 and s[3] < 1e-12


def test_task_directions_are_the_teachers_top_singular_vectors():
    # whitened inputs (X^T X = P I): X^T Y / P = B for y = x B, so the task directions are
    # the top left singular vectors of the teacher B itself (numpy SVD of B; float64
    # rounding, 1e-10)
    rng = np.random.default_rng(1)
    d, k, p = 12, 4, 48
    x = np.sqrt(p) * np.linalg.qr(rng.standard_normal((p, d)))[0]
    b = rng.standard_normal((d, k)) @ np.diag([5.0, 3.0, 2.0, 1.0])
    u = np.linalg.svd(b)[0][:, :2]
    got = low_rank.task_directions(x, x @ b, 2)
    assert np.max(np.abs(got @ got.T - u @ u.T)) < 1e-10
    assert np.allclose(np.linalg.norm(got, axis=0), 1.0, atol=1e-12)


def test_low_rank_init_replaces_one_layer_only():
    model = td.MLP(width=16, depth=1, activation="linear", bias=False)
    x = jnp.ones((2, 16))
    basis = np.eye(16)[:, :2]
    init = low_rank.LowRankInit(model, 0, 2, norm=3.0, basis=basis)
    params, own = init(jax.random.PRNGKey(5), x), model.init(jax.random.PRNGKey(5), x)
    assert np.array_equal(params[1]["w"], own[1]["w"])
    s = _singular_values(params[0]["w"])
    # float32 weights: the norm to 1e-6 relative, the rank-2 tail at float32 rounding
    assert abs(np.linalg.norm(params[0]["w"]) / 3.0 - 1) < 1e-6
    assert np.sum(s > 1e-5 * s[0]) == 2
    assert np.max(np.abs(np.asarray(params[0]["w"])[2:])) == 0.0  # spanned by e_1, e_2
    hash(init)  # part of the compiled program's key


@pytest.mark.parametrize("kwargs,match", [
    (dict(init_rank=-1), "init_rank must be an int >= 0"),
    (dict(init_rank=1.5), "init_rank must be an int >= 0"),
    (dict(init_rank=2, init_rank_layer=3), "init_rank_layer must be <= depth=1"),
])
def test_mlp_rejects_bad_rank_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        td.MLP(width=8, depth=1, **kwargs)


def test_rank_above_the_shape_is_refused():
    with pytest.raises(ValueError, match=r"init_rank must be <= min\(5, 8\) = 5"):
        td.MLP(width=8, depth=1, init_rank=6).init(jax.random.PRNGKey(0), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="basis must have orthonormal columns"):
        low_rank.LowRankInit(td.MLP(), 0, 2, basis=np.ones((4, 2)))


# ------------------------------------------------------------------- closed forms


def _two_layer(d=6, n=5, rank=2, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, rank)) @ rng.standard_normal((rank, n))
    a = rng.standard_normal(n)
    return w, a


def test_kernel_matrix_is_the_ntk_of_the_two_layer_linear_network():
    # f(x) = m a^T W^T x; the dense NTK sum_theta df/dtheta df/dtheta (jax.jacrev, float64)
    # equals m^2 x^T M x' to float64 rounding (1e-10 relative)
    w, a = _two_layer()
    x = np.random.default_rng(3).standard_normal((7, 6))
    m = 0.37
    with jax.enable_x64(True):
        def f(params):
            return m * (jnp.asarray(x) @ params[0]) @ params[1]
        jac = jax.jacrev(f)((jnp.asarray(w), jnp.asarray(a)))
        flat = np.concatenate([np.asarray(j).reshape(7, -1) for j in jac], axis=1)
    dense = flat @ flat.T
    closed = m**2 * x @ theory.kernel_matrix(w, a) @ x.T
    assert np.max(np.abs(dense - closed)) < 1e-10 * np.abs(closed).max()


def _whitened(p, d, rng):
    g = rng.standard_normal((p, d))
    return np.sqrt(p) * np.linalg.qr(g - g.mean(0))[0]


def test_alignment_equals_the_centred_alignment_on_whitened_inputs():
    # on centred, whitened inputs the centred kernel-target alignment of the NTK on the
    # training set (kernels.observables.centred_alignment, as the loop measures it) is
    # beta^T M beta / ||M||_F: float64 rounding, 1e-10
    rng = np.random.default_rng(4)
    w, a = _two_layer(seed=4)
    x = _whitened(24, 6, rng)
    beta = rng.standard_normal(6)
    k = x @ theory.kernel_matrix(w, a) @ x.T
    with jax.enable_x64(True):
        measured = float(centred_alignment(jnp.asarray(k), jnp.asarray((x @ beta)[:, None])))
    assert abs(measured - theory.alignment(w, a, beta)) < 1e-10


def test_expected_alignment_against_monte_carlo_over_tasks():
    # 40000 directions uniform on the sphere: the mean of alignment() lies within 4
    # standard errors of the closed form (a false failure has probability ~6e-5)
    rng = np.random.default_rng(5)
    d, n = 8, 10
    w, a = _two_layer(d, n, rank=3, seed=5)
    betas = rng.standard_normal((40000, d))
    m = theory.kernel_matrix(w, a)
    values = np.einsum("bi,ij,bj->b", betas, m, betas) / (
        np.linalg.norm(m) * np.sum(betas**2, 1))
    s = np.linalg.svd(w, compute_uv=False)
    closed = theory.expected_alignment(s, a @ a, d)
    assert abs(values.mean() - closed) < 4 * values.std() / np.sqrt(len(values))
    # the c = 0 limit with r equal singular values: sqrt(r) / d exactly
    for r in (1, 4, 8):
        assert abs(theory.expected_alignment(np.full(r, 2.0), 0.0, d) - np.sqrt(r) / d) < 1e-15


def test_lazy_weight_change_is_the_minimum_norm_least_squares_solution():
    # the minimum-norm dtheta with m J dtheta = X b on whitened inputs (numpy lstsq on the
    # dense Jacobian, float64): its norm equals sqrt(b^T M^{-1} b) / m, and each layer's
    # part its closed form, to 1e-9 relative (lstsq's rounding on a well-conditioned J)
    rng = np.random.default_rng(6)
    d, n, p, m = 6, 5, 30, 0.8
    w, a = _two_layer(d, n, rank=2, seed=6)
    x = _whitened(p, d, rng)
    b = rng.standard_normal(d)
    jac = np.concatenate([m * np.einsum("pi,j->pij", x, a).reshape(p, -1), m * x @ w], axis=1)
    dtheta = np.linalg.lstsq(jac, x @ b, rcond=None)[0]
    assert abs(np.linalg.norm(dtheta) / theory.lazy_weight_change(w, a, b, m) - 1) < 1e-9
    # the two layers' parts: the first d n entries are W's, the last n the readout's
    first, readout = theory.lazy_layer_changes(w, a, b, m)
    assert abs(np.linalg.norm(dtheta[: d * n]) / first - 1) < 1e-9
    assert abs(np.linalg.norm(dtheta[d * n:]) / readout - 1) < 1e-9


def test_expected_lazy_weight_change_against_monte_carlo_and_falls_with_rank():
    # Monte Carlo over 40000 task directions of squared radius 2, 4 standard errors; then
    # at a fixed norm with equal singular values, E||dtheta||^2 = (r^2/(S + r c) + (d - r)/c)
    # * |b|^2 / (m^2 d), strictly decreasing in r (the module doc's claim)
    rng = np.random.default_rng(7)
    d, n = 7, 9
    w, a = _two_layer(d, n, rank=3, seed=7)
    m_inv = np.linalg.inv(theory.kernel_matrix(w, a))
    b = rng.standard_normal((40000, d))
    b *= np.sqrt(2.0) / np.linalg.norm(b, axis=1, keepdims=True)
    values = np.einsum("bi,ij,bj->b", b, m_inv, b) / 0.5**2
    closed = theory.expected_lazy_weight_change_sq(np.linalg.svd(w, compute_uv=False), a @ a,
                                                   d, 2.0, 0.5)
    assert abs(values.mean() - closed) < 4 * values.std() / np.sqrt(len(values))
    total, c = 50.0, 3.0
    by_rank = [theory.expected_lazy_weight_change_sq(np.full(r, np.sqrt(total / r)), c, d)
               for r in range(1, d + 1)]
    formula = [(r**2 / (total + r * c) + (d - r) / c) / d for r in range(1, d + 1)]
    assert np.allclose(by_rank, formula, rtol=1e-13)
    assert np.all(np.diff(by_rank) < 0)


# ------------------------------------------------------------------- the claims' statistic


@pytest.mark.parametrize("seed", range(4))
def test_spearman_matches_scipy(seed):
    # with and without ties (integers drawn from a small range); float64 rounding, 1e-12
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, 12) if seed % 2 else rng.standard_normal(12)
    y = x + rng.standard_normal(12)
    assert abs(exp.spearman(x, y) - spearmanr(x, y).statistic) < 1e-12
    assert exp.spearman([1, 2, 3, 4], [9, 7, 5, 1]) == -1.0


def test_task_is_centred_and_whitened_and_the_layer_change_is_measured():
    # the reproduction's inputs satisfy the identities the closed forms use (float32
    # task arrays: 1e-5 relative), and LayerWeightChange is ||W - W0|| / ||W0||
    task, beta = exp.make_task(16)
    x = np.asarray(task.x_train, np.float64)
    assert np.max(np.abs(x.T @ x / len(x) - np.eye(16))) < 1e-5
    assert np.max(np.abs(x.mean(0))) < 1e-6
    assert np.max(np.abs(np.asarray(task.y_train)[:, 0] - x @ beta)) < 1e-5

    class Ctx:
        params = ({"w": jnp.full((2, 2), 3.0)},)
        params0 = ({"w": jnp.full((2, 2), 2.0)},)

    value = exp.LayerWeightChange(layer=0)(Ctx())["layer_weight_change"]
    assert abs(float(value) - 0.5) < 1e-7


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
    from experiments.common import execute

    summary = execute(exp, "quick", tmp_path, progress=False)
    failed = [c["name"] for c in summary["claims"] if not c["passed"]]
    assert not failed, failed
    assert (tmp_path / "figure.png").exists()


def test_dmft_refuses_a_low_rank_mlp():
    # the DMFT describes the i.i.d. Gaussian initialisation; a low-rank one is refused
    # before anything is solved
    from kernels.dmft.problem import make_problem

    model = td.MLP(width=8, depth=1, parametrization="mup", bias=False, init_rank=2)
    x, y = np.ones((3, 4)), np.ones(3)
    with pytest.raises(ValueError, match="init_rank=2"):
        make_problem(model, x, y, lr=0.1, steps=2)
