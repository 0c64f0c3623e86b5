"""kernels: empirical NTK against jacrev, infinite-width kernels against neural-tangents and
closed forms, Monte Carlo over wide networks, kernel-regression dynamics against
eigen-decays, dense matrix exponentials and simulated linear / linearised networks, and
the in-loop observables against a dense computation at the returned parameters."""

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import dynamics as td
import kernels
from kernels import activation_duals

DATA = pathlib.Path(__file__).parent / "data"


def dense_ntk(f, params, x1, x2):
    """``J(x1) J(x2)^T`` from ``jax.jacrev`` of the whole batch, ``(n1, n2, O, O)``."""

    def jac(x):
        leaves = jax.tree.leaves(jax.jacrev(f)(params, x))
        n, o = leaves[0].shape[:2]
        return jnp.concatenate([leaf.reshape(n * o, -1) for leaf in leaves], 1), n, o

    j1, n1, o = jac(x1)
    j2, n2, _ = jac(x2)
    return (j1 @ j2.T).reshape(n1, o, n2, o).transpose(0, 2, 1, 3)


# -- empirical NTK ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["jacobian", "ntvp", "auto"])
@pytest.mark.parametrize("batch_size", [None, 3])
def test_empirical_ntk_equals_jacrev(method, batch_size):
    with jax.enable_x64(True):
        model = td.MLP(width=12, depth=2, out_dim=3, activation="tanh", sigma_b=0.4)
        x1 = jax.random.normal(jax.random.PRNGKey(0), (7, 5))
        x2 = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
        params = model.init(jax.random.PRNGKey(2), x1)
        f = lambda p, x: model.apply(p, x)  # noqa: E731
        want = dense_ntk(f, params, x1, x2)
        got = kernels.empirical_ntk(f, params, x1, x2, method=method, batch_size=batch_size)
        got_trace = kernels.empirical_ntk(f, params, x1, x2, method=method, trace=True,
                                          batch_size=batch_size)
        # float64 sums of a few hundred products of O(1) terms: last-bit differences only.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
        np.testing.assert_allclose(got_trace, jnp.trace(want, axis1=2, axis2=3) / 3,
                                   rtol=0, atol=1e-10)
        sym = kernels.empirical_ntk(f, params, x1, method=method, batch_size=batch_size)
        np.testing.assert_allclose(sym, dense_ntk(f, params, x1, x1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("method", ["jacobian", "ntvp"])
def test_empirical_ntk_flax_model_vmapped_and_weighted(method):
    """A user's flax model (dynamics.from_linen), vmapped over three runs, with per-leaf
    learning-rate multipliers: each run equals its own dense J C J^T."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(jnp.sin(nn.Dense(6)(x)))

    with jax.enable_x64(True):
        model = td.from_linen(Net(), output_scale=1.5)
        x = jax.random.normal(jax.random.PRNGKey(0), (5, 3))
        keys = jax.random.split(jax.random.PRNGKey(1), 3)
        runs = jax.vmap(lambda k: model.init(k, x))(keys)
        runs = jax.tree.map(lambda a: a.astype(jnp.float64), runs)  # flax draws float32
        mult = jax.tree.map(lambda _: 1.0, runs)
        mult["Dense_0"]["kernel"] = 3.0  # one leaf weighted
        f = lambda p, xx: model.apply(p, xx)  # noqa: E731
        got = jax.vmap(lambda p: kernels.empirical_ntk(f, p, x, method=method,
                                                       lr_multipliers=mult))(runs)
        for r in range(3):
            p = jax.tree.map(lambda a: a[r], runs)
            scaled = jax.tree.map(lambda a, m: a / jnp.sqrt(m), p, mult)
            g = lambda q, xx: f(jax.tree.map(lambda a, m: a * jnp.sqrt(m), q, mult), xx)  # noqa
            # J_g = J_f C^{1/2}: the weighted kernel is the plain kernel of g at scaled params
            np.testing.assert_allclose(got[r], dense_ntk(g, scaled, x, x), rtol=0, atol=1e-10)


def test_cost_model_picks_the_cheaper_method():
    """Novak et al. (2022), Table 1: the contraction term n^2 O^2 P of the Jacobian method
    beats NTK-vector products' n^2 O [FP] once O P > [FP]: for a dense net ([FP] ~ 2P)
    the Jacobian wins with one output or with the trace, NTK-vector products with 16
    outputs and the full output block. Structured derivatives (Sec. 3.3) undercut both on a
    dense network, so ``auto`` takes them (tests/test_structured_ntk.py)."""
    with jax.enable_x64(True):
        x = jnp.ones((8, 16))
        for out_dim, trace, choice in ((1, False, "jacobian"), (16, False, "ntvp"),
                                       (16, True, "jacobian")):
            mlp = td.MLP(width=32, depth=1, out_dim=out_dim)
            p = mlp.init(jax.random.PRNGKey(0), x)
            cost = kernels.ntk_cost(lambda q, xx: mlp.apply(q, xx), p, x, trace=trace)
            flops = cost["flops"]
            assert min(("jacobian", "ntvp"), key=flops.get) == choice, cost
            assert cost["choice"] == "structured", cost


# -- infinite width ------------------------------------------------------------------------------


def unit_pair(dim=8):
    """Two inputs with ||x||^2 = D (so x . x / D = 1) at correlation 0.5."""
    e = np.eye(dim)
    return np.sqrt(dim) * np.stack([e[0], 0.5 * e[0] + np.sqrt(0.75) * e[1]])


def test_relu_spot_values():
    """One hidden relu layer, sigma_w^2 = 1, sigma_b = 0, inputs with x.x/D = 1 and
    correlation 0.5 (theta = pi/3): NNGP = (sin t + (pi - t) cos t) / (2 pi) = 0.304499,
    NTK = NNGP + 0.5 (pi - t) / (2 pi) = 0.471166 (no factor 2 of He scaling; inputs enter
    as x.x'/D)."""
    with jax.enable_x64(True):
        m = td.MLP(width=10, depth=1, activation="relu", sigma_w=1.0, bias=False)
        x = unit_pair()
        # the quoted values have 6 decimals: agreement to half a unit of the last one
        assert abs(float(kernels.nngp(m, x)[0, 1]) - 0.304499) < 5e-7
        assert abs(float(kernels.ntk(m, x)[0, 1]) - 0.471166) < 5e-7
        # and exactly the arc-cosine closed form
        t = np.pi / 3
        nngp = (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
        np.testing.assert_allclose(kernels.ntk(m, x)[0, 1], nngp + 0.5 * (np.pi - t) / (2 * np.pi),
                                   rtol=1e-14)


def _reference_model(case):
    m = case["model"]
    act = m["activation"]
    override = {"abrelu": lambda: activation_duals.abrelu(act["a"], act["b"]),
                "leaky_relu": lambda: activation_duals.leaky_relu(act["slope"])}
    dual = override[act["name"]]() if act["name"] in override else None
    model = td.MLP(width=m["width"], depth=m["depth"],
                   activation="relu" if dual is not None else act["name"],
                   parametrization=m["parametrization"], sigma_w=m["sigma_w"],
                   sigma_b=m["sigma_b"] if m["bias"] else 0.0, bias=m["bias"],
                   output_scale=m["output_scale"], gamma0=m["gamma0"])
    return model, dual


REFERENCE = json.loads((DATA / "nt_reference.json").read_text())


def _marked(case):
    """Depth-2 cases by default (every parametrization and activation, with biases); the
    other depths in the slow run."""
    return case if case["model"]["depth"] == 2 else pytest.param(case, marks=pytest.mark.slow)


@pytest.mark.parametrize("case", [_marked(c) for c in REFERENCE["cases"]], ids=lambda c: "{}-{}-d{}".format(
    c["model"]["parametrization"], c["model"]["activation"]["name"], c["model"]["depth"]))
def test_infinite_kernels_match_neural_tangents(case):
    """neural-tangents 0.6.5 values (tests/data/make_nt_reference.py) for every
    parametrization, activation, depth 0-3, with and without biases."""
    with jax.enable_x64(True):
        model, dual = _reference_model(case)
        x1, x2 = np.asarray(REFERENCE["x1"]), np.asarray(REFERENCE["x2"])
        for name, fn in (("nngp", kernels.nngp), ("ntk", kernels.ntk)):
            for got, want in ((fn(model, x1, x2, activation=dual), case[name]),
                              (fn(model, x1, activation=dual), case[name + "_11"])):
                want = np.asarray(want)
                # 1e-6 relative to the largest entry, the tolerance. Closed forms
                # agree to ~1e-9 (neural-tangents stabilises arccos); gelu is Gauss-Hermite
                # quadrature against neural-tangents' closed form, measured 6e-7.
                err = np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want))
                assert err < 1e-6, (name, err)


def test_quadrature_matches_closed_forms():
    """Gauss-Hermite duals (degree 96) against the erf closed form: machine precision
    for variances <= 1, 1e-7 for variances up to 4 (measured 3e-8); relu, with its kink,
    converges only algebraically (measured 2e-3 relative)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        for qmax, tol in ((1.0, 1e-13), (4.0, 1e-7)):
            q1, q2 = rng.uniform(0.1, qmax, 30), rng.uniform(0.1, qmax, 30)
            c = rng.uniform(-1, 1, 30) * np.sqrt(q1 * q2)
            quad = activation_duals.quadrature(jax.scipy.special.erf)(q1, q2, c)
            exact = activation_duals.get("erf")(q1, q2, c)
            for a, b in zip(quad, exact):
                assert np.max(np.abs(a - b)) / np.max(np.abs(b)) < tol
        quad = activation_duals.quadrature(jax.nn.relu)(q1, q2, c)
        exact = activation_duals.get("relu")(q1, q2, c)
        assert 1e-6 < np.max(np.abs(quad[0] - exact[0])) / np.max(exact[0]) < 1e-2


@pytest.mark.parametrize("parametrization,depth", [
    ("ntk", 1),
    pytest.param("standard", 2, marks=pytest.mark.slow),
    pytest.param("mup", 2, marks=pytest.mark.slow),
    pytest.param("ntk", 2, marks=pytest.mark.slow),
])
def test_monte_carlo_over_wide_networks_converges(parametrization, depth):
    """Empirical NTK and last-layer NNGP averaged over seeds approach the infinite-width
    kernels, with an error that falls with width (fluctuations ~ 1/sqrt(N))."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(0), (4, 6))
        errors = {}
        for width in (64, 2048):
            model = td.MLP(width=width, depth=depth, activation="erf", sigma_w=1.3, sigma_b=0.2,
                           output_scale=1.5, parametrization=parametrization, gamma0=0.5)
            f = lambda p, xx: td.models.apply_scaled(model, p, xx)  # noqa: E731
            keys = jax.random.split(jax.random.PRNGKey(1), 8)
            params = jax.vmap(lambda k: model.init(k, x))(keys)
            ke = jax.vmap(lambda p: kernels.empirical_ntk(f, p, x, trace=True))(params).mean(0)
            kn = jax.vmap(lambda p: kernels.mlp_empirical_nngp(model, p, x))(params).mean(0)
            ki, ni = kernels.ntk(model, x), kernels.nngp(model, x)
            errors[width] = (float(jnp.linalg.norm(ke - ki) / jnp.linalg.norm(ki)),
                             float(jnp.linalg.norm(kn - ni) / jnp.linalg.norm(ni)))
        # At N = 2048 the mean over 8 nets has relative error ~ 1/sqrt(8 N) ~ 1%, plus an
        # O(1/N) bias: 3% leaves a safety factor ~3. From N = 64 to 2048 (32x) the error
        # falls by ~sqrt(32) ~ 5.7; requiring 2.5x tolerates seed noise.
        for i in (0, 1):
            assert errors[2048][i] < 0.03, errors
            assert errors[64][i] > 2.5 * errors[2048][i], errors


def test_kernel_validation_errors():
    m = td.MLP(width=4)
    with pytest.raises(ValueError, match="x2 must have 3 features"):
        kernels.ntk(m, np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="model must be a dynamics.MLP"):
        kernels.nngp(object(), np.ones((2, 3)))
    with pytest.raises(ValueError, match="activation must be"):
        kernels.nngp(m, np.ones((2, 3)), activation="swish")
    with pytest.raises(ValueError, match="method must be one of"):
        kernels.empirical_ntk(lambda p, x: x, {}, np.ones((2, 3)), method="dense")
    with pytest.raises(ValueError, match="batch_size must be"):
        kernels.empirical_ntk(lambda p, x: x, {}, np.ones((2, 3)), batch_size=0)
    with pytest.raises(ValueError, match="KernelObservables.top_k must be <= probe_size"):
        kernels.KernelObservables(probe_size=4, top_k=5)
    with pytest.raises(ValueError, match="KernelObservables.split"):
        kernels.KernelObservables(split="val")
    with pytest.raises(ValueError, match="method must be one of"):
        kernels.predict(np.eye(2), np.ones(2), lr=0.1, steps=[0], method="euler")


# -- dynamics in function space -----------------------------------------------------------------


def test_train_residual_decays_on_each_eigenvector():
    """r(t) = f - y projected on eigenvector v_i of K decays as exp(-(2/P) lr lambda_i s)
    under gradient flow and as (1 - (2 lr/P) lambda_i)^s under GD (the 2/P of the MSE)."""
    rng = np.random.default_rng(0)
    p = 12
    a = rng.normal(size=(p, p))
    k = a @ a.T / p + 0.01 * np.eye(p)
    y = rng.normal(size=(p, 2))
    f0 = rng.normal(size=(p, 2)) * 0.3
    lr, steps = 0.2, np.array([0, 1, 5, 40, 200])
    lam, v = np.linalg.eigh(k)
    r0 = v.T @ (f0 - y)
    for method, decay in (("flow", lambda s: np.exp(-2 * lr * lam * s / p)),
                          ("gd", lambda s: (1 - 2 * lr * lam / p) ** s)):
        ds = kernels.predict(k, y, lr=lr, steps=steps, method=method, f0_train=f0)
        for i, s in enumerate(steps):
            r = v.T @ (ds.train_outputs.values[i] - y)
            # float64 eigen-decomposition of a 12 x 12 matrix: round-off ~1e-14
            np.testing.assert_allclose(r, decay(s)[:, None] * r0, rtol=0, atol=1e-12)


def test_test_predictions_and_ensemble_against_matrix_exponentials():
    """Test outputs and the ensemble mean and covariance (Lee et al. 2019, eq. 15-16)
    from dense expm / inverses instead of the eigen-decomposition."""
    rng = np.random.default_rng(1)
    p, q = 8, 5
    z = rng.normal(size=(p + q, 6))
    theta = z @ z.T / 6 + 0.05 * np.eye(p + q)
    w = np.tanh(z) @ np.tanh(z).T / 6 + 0.05 * np.eye(p + q)
    y = rng.normal(size=(p, 1))
    lr, s = 0.3, 7
    eta = 2 * lr / p
    tx, txx = theta[:p, :p], theta[p:, :p]
    a_train = np.eye(p) - scipy.linalg.expm(-eta * tx * s)
    a_test = txx @ np.linalg.solve(tx, a_train)
    ds = kernels.predict(tx, y, lr=lr, steps=[s], method="flow", ntk_test_train=txx,
                         nngp_train=w[:p, :p], nngp_test_train=w[p:, :p],
                         nngp_test=w[p:, p:])
    # well-conditioned 13 x 13 problems in float64: agreement to 1e-10
    np.testing.assert_allclose(ds.test_outputs.values[0], a_test @ y, atol=1e-10)
    np.testing.assert_allclose(ds.train_outputs.values[0], a_train @ y, atol=1e-10)
    kxx, kx, kt = w[:p, :p], w[p:, :p], w[p:, p:]
    cov = kt - a_test @ kx.T - kx @ a_test.T + a_test @ kxx @ a_test.T
    np.testing.assert_allclose(ds.test_output_variance.values[0], np.diag(cov), atol=1e-10)
    cov_train = kxx - a_train @ kxx - kxx @ a_train.T + a_train @ kxx @ a_train.T
    want_loss = (np.sum((a_train @ y - y) ** 2) + np.trace(cov_train)) / p
    np.testing.assert_allclose(ds.train_loss.values[0], want_loss, rtol=1e-10)
    # at step 0 the ensemble is the prior: mean 0, variance the NNGP diagonal
    ds0 = kernels.predict(tx, y, lr=lr, steps=[0], nngp_train=kxx)
    np.testing.assert_allclose(ds0.train_output_variance.values[0], np.diag(kxx), atol=1e-12)


@pytest.fixture(scope="module")
def small_task():
    return td.tasks.make("teacher_student_mlp", n_train=16, n_test=6, dim=4,
                         out_dim=2).astype("float64")


def test_predict_gd_equals_a_sweep_of_a_linear_model(small_task):
    """A depth-0 MLP is linear in its parameters: predict_linearized's GD is its
    dynamics.sweep, for every step and two learning rates."""
    model = td.MLP(depth=0, out_dim=2, sigma_b=0.3, output_scale=1.3)
    spec = td.Spec(model=model, task=small_task, steps=30, log_every=10,
                   observables=("loss",))
    ds = td.sweep(spec, seed=2, lr=[0.05, 0.4])
    for lr in (0.05, 0.4):
        pred = kernels.predict_linearized(spec, seed=2, hparams={"lr": lr})
        sim = ds.sel(lr=lr)
        # float64 throughout: the two sides differ by round-off only
        np.testing.assert_allclose(pred.train_loss, sim.train_loss, rtol=1e-10)
        np.testing.assert_allclose(pred.test_loss, sim.test_loss, rtol=1e-10)


@pytest.mark.slow  # heavier (a compile per width); CI runs it
def test_predict_gd_equals_a_simulated_linearised_network(small_task):
    """The wide linearised tanh network, trained by dynamics.sweep in parameter space
    (kernels.Linearized), equals predict_linearized in function space; centred mup run
    too (learning-rate multipliers gamma0^2 N)."""
    for model in (td.MLP(width=64, depth=2, activation="tanh", out_dim=2, output_scale=2.0),
                  td.MLP(width=64, depth=1, out_dim=2, center=True, parametrization="mup",
                         gamma0=0.5)):
        spec = td.Spec(model=model, task=small_task, steps=30, log_every=10,
                       observables=("loss",), optimizer=td.Optimizer(lr=0.05))
        sim = td.sweep(td.Spec(model=kernels.Linearized(model), task=small_task, steps=30,
                               log_every=10, observables=("loss",),
                               optimizer=td.Optimizer(lr=0.05)), seed=1)
        pred = kernels.predict_linearized(spec, seed=1)
        # float64; 30 steps of round-off on O(1) losses
        np.testing.assert_allclose(pred.train_loss, sim.train_loss, rtol=1e-9)
        np.testing.assert_allclose(pred.test_loss, sim.test_loss, rtol=1e-9)


# -- observables in the loop ---------------------------------------------------------------------


def test_kernel_observables_in_a_sweep_equal_dense_computation(small_task):
    obs = kernels.KernelObservables(probe_size=10, top_k=3, every=10)
    model = td.MLP(width=24, depth=1, out_dim=2, center=True, output_scale=1.7)
    spec = td.Spec(model=model, task=small_task, steps=20, log_every=5,
                   observables=("loss", obs))
    ds, states = td.sweep(spec, seed=[0, 1], lr=[0.1, 0.6], return_state=True)
    assert ds.ntk_eigenvalues.dims == ("seed", "lr", "step", "ntk_index")
    assert np.isnan(ds.kernel_distance.sel(step=5)).all()  # every=10 steps: log point 1 skipped
    st = states[()]
    with jax.enable_x64(True):
        _check_against_dense(ds, st, model, small_task)
    # training moved the kernel (else the distance test could not fail)
    assert float(ds.kernel_distance.isel(step=-1).min()) > 1e-6


def _check_against_dense(ds, st, model, small_task):
    x = jnp.asarray(small_task.x_train[:10])
    y = np.asarray(small_task.y_train[:10])
    for i in range(2):
        for j in range(2):
            p = jax.tree.map(lambda a: a[i, j], st.params)
            p0 = jax.tree.map(lambda a: a[i, j], st.params0)
            # the trained outputs alpha g (centering does not change the Jacobian)
            f = lambda q, xx: td.models.apply_scaled(model, q, xx)  # noqa: E731
            k = np.asarray(dense_ntk(f, p, x, x)).trace(axis1=2, axis2=3) / 2
            k0 = np.asarray(dense_ntk(f, p0, x, x)).trace(axis1=2, axis2=3) / 2
            lam = np.linalg.eigvalsh(k)[::-1]
            h = np.eye(10) - 1 / 10
            kc, yc = h @ k @ h, h @ y @ y.T @ h
            pr = lam / lam.sum()
            want = {
                "kernel_distance": 1 - np.sum(k * k0) / np.linalg.norm(k) / np.linalg.norm(k0),
                "kernel_alignment": np.sum(kc * yc) / np.linalg.norm(kc) / np.linalg.norm(yc),
                "ntk_effective_rank": np.exp(-np.sum(pr * np.log(pr))),
            }
            final = ds.isel(seed=i, lr=j, step=-1)
            for name, value in want.items():
                # float64 on both sides; the distance is a difference of O(1) numbers
                np.testing.assert_allclose(final[name], value, rtol=1e-8, atol=1e-12)
            np.testing.assert_allclose(final.ntk_eigenvalues, lam[:3], rtol=1e-10)


# -- the notebook ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_ntk_quick(tmp_path):
    from experiments import cli

    out = tmp_path / "bench.json"
    assert cli.main(["bench", "ntk", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["ours"]) == {"jacobian", "ntvp", "structured", "auto"}
    # float32 blocks, sums of a few thousand products: round-off ~1e-6 of the largest entry
    for method, entry in result["ours"].items():
        assert entry["max_abs_diff_over_max_vs_jacobian"] < 1e-5, (method, entry)
    assert result["observables_overhead"]["ratio_with_over_without"] > 0
