"""kernels.dmft against its oracles: the closed form of a two-layer linear network on
whitened data (exact discrete recursion and its gradient-flow ODE), the NTK dynamics of
kernels.predict as gamma0 -> 0 (at the rate gamma0^2), the deep-linear closed form
against the Monte Carlo solver with the identity, the order-parameter observable against
a dense empirical NTK, and finite networks converging to the DMFT as the width grows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynamics as td
import kernels
from kernels import dmft


def whitened(p=8, d=4, b_star=1.5, seed=1):
    """``X^T X / P = I`` and ``y = X b* e``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((p, d)))
    e = rng.standard_normal(d)
    e /= np.linalg.norm(e)
    x = np.sqrt(p) * q
    return x, x @ (b_star * e)


def mup(depth=1, activation="tanh", gamma0=1.0, width=64, **kw):
    return td.MLP(width=width, depth=depth, activation=activation, parametrization="mup",
                  bias=False, gamma0=gamma0, **kw)


def small_data(p=6, d=5, q=3, seed=0):
    rng = np.random.default_rng(seed)
    x, xt = rng.standard_normal((p, d)), rng.standard_normal((q, d))
    target = lambda a: np.tanh(a[:, 0] + 0.5 * a[:, 1])
    return x, target(x), xt, target(xt)


def lazy_prediction(model, x, y, xt, yt, lr, steps):
    """kernels.predict with the infinite, learning-rate-weighted NTK (float64)."""
    with jax.enable_x64(True):
        k = np.asarray(kernels.ntk(model, x, None, lr_weighted=True))
        kt = np.asarray(kernels.ntk(model, xt, x, lr_weighted=True))
    return kernels.predict(k, y, lr=lr, steps=np.arange(steps + 1), ntk_test_train=kt,
                           y_test=yt)


# -- closed forms -------------------------------------------------------------------------


@pytest.mark.parametrize("gamma0", [0.5, 1.0])
def test_deep_linear_equals_the_whitened_two_layer_recursion(gamma0):
    """Exact discrete GD of the infinite two-layer linear network: the solver's algebraic
    fixed point and the scalar recursion are the same numbers; float64, iterated to
    tol=1e-12, so 1e-9 of the initial loss is rounding, not modelling."""
    x, y = whitened()
    model = mup(activation="linear", gamma0=gamma0, sigma_w=1.2)
    ds = dmft.solve(model, x, y, lr=0.1, steps=20, solver="deep_linear", tol=1e-12)
    _, loss = dmft.two_layer_linear_whitened(1.5, gamma=gamma0, sigma=1.2, dim=4, lr=0.1,
                                             steps=20)
    assert ds.attrs["converged"] == 1
    assert np.max(np.abs(ds.train_loss.values - loss)) <= 1e-9 * loss[0]
    # feature learning is not negligible here: the loss differs from gamma0 -> 0 by > 1%
    lazy = dmft.solve(model, x, y, lr=0.1, steps=20, hparams={"gamma0": 0.0})
    assert np.max(np.abs(lazy.train_loss.values - loss)) >= 1e-2 * loss[0]


def test_gradient_flow_converges_at_first_order_to_the_scalar_ode():
    """method='flow' is GD with lr/substeps: its error against the ODE (RK4, converged)
    halves when substeps doubles (first order: ratio 2 +- 0.3)."""
    x, y = whitened(p=4, d=2)
    model = mup(activation="linear", gamma0=1.0)
    _, ode = dmft.two_layer_linear_whitened(1.5, gamma=1.0, sigma=1.0, dim=2, lr=0.1,
                                            steps=10, method="flow")
    errors = []
    for sub in (4, 8):
        ds = dmft.solve(model, x, y, lr=0.1, steps=10, method="flow", substeps=sub,
                        tol=1e-12)
        errors.append(np.max(np.abs(ds.train_loss.values - ode)) / ode[0])
    assert errors[1] < 0.05
    assert 1.7 <= errors[0] / errors[1] <= 2.3


def test_two_layer_sampled_processes_match_the_closed_form():
    """The sampled two-layer solver (identity activation, S = 40000) against the exact
    recursion: a Monte Carlo error of order S^{-1/2} = 0.005 of the loss; 0.03 is six of
    those. Its own error estimate (halved samples) is of the same order."""
    x, y = whitened()
    model = mup(activation="linear", gamma0=1.0, sigma_w=1.2)
    ds = dmft.solve(model, x, y, lr=0.1, steps=20, solver="two_layer", samples=40000)
    _, loss = dmft.two_layer_linear_whitened(1.5, gamma=1.0, sigma=1.2, dim=4, lr=0.1,
                                             steps=20)
    gap = np.max(np.abs(ds.train_loss.values - loss)) / loss[0]
    assert gap <= 0.03
    assert 0 < ds.attrs["mc_error_loss"] <= 0.03


# -- gamma0 -> 0: the NTK dynamics of kernels.predict ------------------------------------


def test_gamma0_zero_is_kernel_regression_with_the_infinite_ntk():
    """gamma0 = 0: static kernels from the dual activations and NTK dynamics; equal to
    kernels.predict with kernels.ntk(lr_weighted=True) up to the quadrature of tanh's
    dual (1e-8)."""
    x, y, xt, yt = small_data()
    model = mup(depth=2, gamma0=1.0)
    ds = dmft.solve(model, x, y, lr=0.5, steps=20, x_test=xt, y_test=yt,
                    hparams={"gamma0": 0.0})
    ref = lazy_prediction(model, x, y, xt, yt, 0.5, 20)
    assert ds.attrs["solver"] == "lazy"
    for name in ("train_outputs", "test_outputs", "train_loss", "test_loss"):
        np.testing.assert_allclose(ds[name].values, ref[name].values, rtol=0, atol=1e-8)
    with jax.enable_x64(True):
        k = np.asarray(kernels.ntk(model, x, None, lr_weighted=True))
    np.testing.assert_allclose(ds.ntk.values[0], k, rtol=1e-8)


def test_small_gamma0_approaches_ntk_dynamics_at_rate_gamma0_squared():
    """Deep linear (no sampling): the gap to kernels.predict is O(gamma0^2) (the kernels
    move at second order; Bordelon & Pehlevan 2022, Sec. 4), so halving gamma0 divides it
    by 4 (+-15%), and at gamma0 = 0.01 it is below 1e-3 of the outputs."""
    x, y, xt, yt = small_data()
    model = mup(depth=2, activation="linear")
    ref = lazy_prediction(model, x, y, xt, yt, 0.3, 15)
    gaps = []
    for g in (0.02, 0.01):
        ds = dmft.solve(model, x, y, lr=0.3, steps=15, x_test=xt, y_test=yt,
                        hparams={"gamma0": g}, tol=1e-13)
        gaps.append(max(np.max(np.abs(ds[n].values - ref[n].values))
                        for n in ("train_outputs", "test_outputs")))
    scale = np.max(np.abs(ref.train_outputs.values))
    assert gaps[1] <= 1e-3 * scale
    assert 3.4 <= gaps[0] / gaps[1] <= 4.6


def test_small_gamma0_two_layer_tanh_equals_ntk_dynamics_within_sampling():
    """Two-layer tanh, gamma0 = 1e-3 (feature learning ~1e-6): the sampled solver equals
    kernels.predict up to the Monte Carlo error of its kernels, ~S^{-1/2} = 0.005 relative
    (S = 40000); 0.02 of the outputs' scale is four of those."""
    x, y, xt, yt = small_data()
    model = mup(depth=1, gamma0=1e-3)
    ds = dmft.solve(model, x, y, lr=0.5, steps=30, x_test=xt, y_test=yt, samples=40000)
    ref = lazy_prediction(model, x, y, xt, yt, 0.5, 30)
    scale = np.max(np.abs(ref.train_outputs.values))
    for name in ("train_outputs", "test_outputs"):
        assert np.max(np.abs(ds[name].values - ref[name].values)) <= 0.02 * scale


# -- Monte Carlo against the closed form ----------------------------------------------------


def test_monte_carlo_with_the_identity_equals_the_deep_linear_closed_form():
    """Depth 2, gamma0 = 0.75, S = 2000: the alternating Monte Carlo solver converges, and
    its loss and feature kernels equal the algebraic solution to Monte Carlo accuracy
    (S^{-1/2} = 0.022: the loss within 0.03 relative, the kernels' largest entry error
    within 0.12 of their scale, about 3 standard errors of sqrt(2/S) over 32 entries)."""
    x, y, _, _ = small_data(p=4)
    model = mup(depth=2, activation="linear", gamma0=0.75)
    exact = dmft.solve(model, x, y, lr=0.3, steps=12, tol=1e-10)
    mc = dmft.solve(model, x, y, lr=0.3, steps=12, solver="monte_carlo", samples=2000,
                    batch=100)
    assert exact.attrs["converged"] == 1 and mc.attrs["converged"] == 1
    loss_gap = np.max(np.abs(mc.train_loss.values - exact.train_loss.values))
    assert loss_gap <= 0.03 * exact.train_loss.values[0]
    phi = exact.feature_kernel.values
    assert np.max(np.abs(mc.feature_kernel.values - phi)) <= 0.12 * np.max(np.abs(phi))
    assert 0 < mc.attrs["mc_error_loss"] <= 0.03
    # and the kernels did move: the final feature kernel differs from the initial by > 5%
    assert np.max(np.abs(phi[-1] - phi[0])) >= 0.05 * np.max(np.abs(phi))


def test_monte_carlo_default_tolerance_is_far_below_its_sampling_error():
    """The default ``tol`` of ``monte_carlo`` (``1e-2 S^{-1/2}``, ``solve.default_tol``)
    stops the iteration where what is left to the fixed point (against ``tol=1e-11``, the
    same noise) is at most 5% of the sampling error (the gap to the solution with
    another noise seed; measured: 1.0% at most, for the NTK): five times the measured
    share, and it fails if the iteration stops at the sampling error's own scale; and it
    takes fewer iterations than ``tol=1e-6`` (26 against 30)."""
    x, y, _, _ = small_data()
    model = mup(depth=3)
    kw = dict(lr=0.3, steps=12, solver="monte_carlo", samples=400, batch=100, mc_error=False)
    default = dmft.solve(model, x, y, **kw)
    tight = dmft.solve(model, x, y, tol=1e-11, **kw)
    old = dmft.solve(model, x, y, tol=1e-6, **kw)
    other = dmft.solve(model, x, y, tol=1e-11, **{**kw, "seed": 1})
    assert default.attrs["converged"] == 1 and tight.attrs["converged"] == 1
    assert default.attrs["change"] < 1e-2 / np.sqrt(400)
    for name in ("train_loss", "feature_kernel", "ntk"):
        ref = tight[name].values
        left = np.max(np.abs(default[name].values - ref))
        sampling = np.max(np.abs(other[name].values - ref))
        assert left <= 0.05 * sampling, name
    assert default.attrs["iterations"] < old.attrs["iterations"]


# -- the finite network's order parameters --------------------------------------------------


def test_order_parameters_ntk_equals_the_dense_lr_weighted_empirical_ntk():
    """OrderParameters' ntk = sigma^2 sum G^{l+1} Phi^l equals jacrev J J^T times the mup
    learning-rate multiplier gamma0^2 N (and alpha^2 through f): the same sum, float64,
    1e-10 relative."""
    with jax.enable_x64(True):
        x, y, _, _ = small_data()
        model = mup(depth=2, width=32, gamma0=0.7, sigma_w=1.3, output_scale=1.5)
        params = model.init(jax.random.PRNGKey(0), jnp.asarray(x))
        hp = model.hparams()
        obs = dmft.OrderParameters(activation="tanh", depth=2)

        class Ctx:
            pass

        ctx = Ctx()
        ctx.params, ctx.hparams = params, hp
        ctx.data = {"x_train": jnp.asarray(x)}
        out = obs(ctx)
        dense = kernels.empirical_ntk(lambda p, a: td.models.apply_scaled(model, p, a, hp),
                                      params, jnp.asarray(x), method="jacobian", trace=True)
        dense = dense * hp["gamma0"] ** 2 * model.width
        np.testing.assert_allclose(out["ntk"], dense, rtol=1e-10)
        assert out["feature_kernel"].shape == (2, 6, 6)


def _convergence(widths, seeds):
    x, y, _, _ = small_data()
    task = td.tasks.from_arrays(x.astype(np.float32), y.astype(np.float32))
    model = mup(depth=1, gamma0=1.0, width=128, center=True)
    spec = td.Spec(model, task, td.optimizers.sgd(0.5), steps=30, log_every=5,
                   observables=("loss", dmft.OrderParameters(activation="tanh", depth=1)))
    theory = dmft.solve_spec(spec, samples=200000)
    net = td.sweep(spec, seed=list(range(seeds)), width=list(widths))
    loss_gap = np.sqrt(((net.train_loss - theory.train_loss) ** 2).mean("seed")).max("step")
    final = net.feature_kernel.isel(step=-1) - theory.feature_kernel.isel(step=-1)
    phi_gap = np.sqrt((final**2).sum(["layer", "train_example", "train_example_2"])
                      .mean("seed"))
    return theory, net, loss_gap.values, phi_gap.values


def test_finite_networks_approach_the_dmft():
    """Two-layer tanh, gamma0 = 1, centred: from width 128 to 2048 the RMS gap over seeds
    in the loss trajectory and in the final Phi falls like N^{-1/2} (a factor 4 expected;
    asserted >= 2.5, fluctuations of 6 seeds included)."""
    _, _, loss_gap, phi_gap = _convergence((128, 2048), 6)
    assert loss_gap[0] / loss_gap[1] >= 2.5
    assert phi_gap[0] / phi_gap[1] >= 2.5


@pytest.mark.slow  # six widths, a compile each
def test_finite_networks_converge_to_the_dmft_at_rate_one_over_sqrt_width():
    """Widths 128..4096, 16 seeds: fitted log-log slopes of the RMS gaps (loss trajectory
    and final Phi) are -1/2 +- 0.2 (theory: O(N^{-1/2}) fluctuations, Bordelon & Pehlevan
    2023; an RMS over 16 seeds has a relative standard error of ~18%, which puts the
    slope's standard error near 0.06 over six widths: 0.2 is about 3 of them; measured
    with 8 seeds: -0.66 for the loss, -0.48 for Phi), and at N >= 1024 the DMFT lies within
    two standard deviations of the seeds' spread around their mean at every logged step
    (the mean's bias is O(1/N), its spread O(N^{-1/2})."""
    widths = (128, 256, 512, 1024, 2048, 4096)
    theory, net, loss_gap, phi_gap = _convergence(widths, 16)
    for gap in (loss_gap, phi_gap):
        slope = np.polyfit(np.log(widths), np.log(gap), 1)[0]
        assert -0.7 <= slope <= -0.3, slope
    for w in widths[3:]:
        runs = net.train_loss.sel(width=w)
        spread = runs.std("seed").values[1:]
        off = np.abs(runs.mean("seed").values - theory.train_loss.values)[1:]
        assert np.all(off <= 2 * spread), (w, off / spread)


# -- the Dataset and the inputs -------------------------------------------------------------


def test_dataset_lines_up_with_the_sweep():
    x, y, xt, yt = small_data()
    task = td.tasks.from_arrays(x.astype(np.float32), y.astype(np.float32),
                                xt.astype(np.float32), yt.astype(np.float32))
    spec = td.Spec(mup(depth=1, gamma0=0.5, center=True), task, td.optimizers.sgd(0.5),
                   steps=20, log_every=5)
    ds = dmft.solve_spec(spec, samples=1000)
    net = td.sweep(spec, seed=[0])
    np.testing.assert_array_equal(ds.step.values, net.step.values)
    assert set(ds.data_vars) >= {"train_loss", "test_loss", "train_outputs", "test_outputs",
                                 "feature_kernel", "gradient_kernel", "ntk"}
    assert ds.feature_kernel.dims == ("step", "layer", "train_example", "train_example_2")
    # f(0) = 0 exactly; the targets are the task's float32 ones (7 digits)
    assert float(ds.train_loss[0]) == pytest.approx(float(np.mean(y**2)), rel=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(model=td.MLP(width=8, parametrization="ntk", bias=False)), "parametrization"),
    (dict(model=td.MLP(width=8, parametrization="mup", sigma_b=0.1)), "sigma_b"),
    (dict(model=td.MLP(width=8, parametrization="mup", bias=False, out_dim=2)), "out_dim"),
    (dict(model=td.MLP(width=8, depth=0, parametrization="mup", bias=False)), "depth"),
    (dict(lr=-0.1), "lr"),
    (dict(solver="exact"), "solver"),
    (dict(solver="deep_linear"), "activation='linear'"),
    (dict(model=mup(depth=2), solver="two_layer"), "depth=1"),
    (dict(samples=1), "samples"),
    (dict(method="euler"), "method"),
    (dict(method="gd", substeps=2), "substeps"),
    (dict(y_train=np.zeros(5)), "y_train"),
    (dict(x_test=np.zeros((2, 3))), "x_test"),
    (dict(damping=0.0), "damping"),
    (dict(tol=0.0), "tol"),
    (dict(tol="1e-6"), "tol"),
    (dict(warm_start={"phi": np.zeros(3)}, solver="monte_carlo"), "warm_start"),
])
def test_bad_inputs_are_refused_with_the_field_named(kwargs, match):
    x, y, _, _ = small_data()
    args = dict(model=mup(depth=1), x_train=x, y_train=y, lr=0.1, steps=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        dmft.solve(args.pop("model"), args.pop("x_train"), args.pop("y_train"), **args)


def test_spec_must_be_full_batch_gd_on_the_mse():
    x, y, _, _ = small_data()
    task = td.tasks.from_arrays(x.astype(np.float32), y.astype(np.float32))
    spec = td.Spec(mup(), task, td.optimizers.sgd(0.1), steps=4, log_every=2, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        dmft.solve_spec(spec)


# -- the Monte Carlo responses: causal blocked substitution against dense jacfwd ---------


@pytest.mark.parametrize("block", [1, 3, 7])
@pytest.mark.parametrize("kinds", [("u", "r"), ("r",), ("u",)])
def test_causal_responses_equal_dense_jacfwd(block, kinds):
    """The recursive forward substitution (kernels.dmft.deep) and jax.jacfwd through the
    per-sample scan compute the same Jacobian sums d g/d u, d phi/d r, in another order:
    float64, random memory kernels with non-causal entries (which both must ignore), 7 steps
    cut into blocks of 1 (7 leaves, three levels of halving), 3 (the last one short) and 7
    steps (no recursion); 1e-12 relative is round-off (measured: 2e-16)."""
    from kernels.dmft import deep

    with jax.enable_x64(True):
        t1, n, samples = 7, 3, 5
        ng = t1 * n
        rng = np.random.default_rng(0)
        mh, mz = (jnp.asarray(0.3 * rng.standard_normal((ng, ng)) / np.sqrt(ng))
                  for _ in range(2))
        u, r = (jnp.asarray(rng.standard_normal((samples, ng))) for _ in range(2))
        solve_one = deep._sample_solver("tanh", t1, n)

        def fields(u_, r_):
            return solve_one(u_.reshape(t1, n), r_.reshape(t1, n), mh.reshape(t1, n, ng),
                             mz.reshape(t1, n, ng))

        _, _, h, z = jax.vmap(fields)(u, r)
        new = deep._causal_response_sums(h.T, z.T, mh, mz, kinds, activation="tanh",
                                         t1=t1, n=n, block=block)
        old = deep._jacfwd_response_sums(fields, u, r, kinds, jnp.ones(samples))
        # with the samples weighted (0: padding), as the chunks of the solver are
        w = jnp.asarray([1.0, 0.0, 0.5, 2.0, 0.0])
        new_w = deep._causal_response_sums(h.T, z.T, mh, mz, kinds, activation="tanh",
                                           t1=t1, n=n, block=block, weights=w)
        old_w = deep._jacfwd_response_sums(fields, u, r, kinds, w)
        for kind in kinds:
            for mine, theirs in ((new, old), (new_w, old_w)):
                ref = np.asarray(theirs[kind])
                assert np.max(np.abs(ref)) > 0.1  # the responses are not trivially zero
                gap = np.max(np.abs(np.asarray(mine[kind]) - ref)) / np.max(np.abs(ref))
                assert gap <= 1e-12, (kind, gap)
        # a window's horizon at step 4: the blocks that start before it are solved (the
        # same rows), the later ones left at zero
        cut = deep._causal_response_sums(h.T, z.T, mh, mz, kinds, activation="tanh",
                                         t1=t1, n=n, block=block, horizon=jnp.asarray(4))
        solved = -(-4 // block) * block * n  # rows of the blocks that start before 4
        for kind in kinds:  # the same sums, compiled another way (the cond): round-off
            np.testing.assert_allclose(np.asarray(cut[kind])[:solved],
                                       np.asarray(new[kind])[:solved], rtol=0, atol=1e-14)
            assert not np.any(np.asarray(cut[kind])[solved:])


def test_monte_carlo_iteration_equals_its_jacfwd_reference():
    """One whole Monte Carlo iteration (depth 3: every kind of response, d phi/d rho and
    the division by gamma) with the causal responses and with dense jacfwd, from a state
    with non-zero responses: the same state to 1e-12 relative (round-off)."""
    from kernels.dmft import deep
    from kernels.dmft.problem import make_problem

    with jax.enable_x64(True):
        x, y, _, _ = small_data(p=4)
        p = make_problem(mup(depth=3, gamma0=0.8), x, y, lr=0.3, steps=6, log_every=1,
                         x_test=None, y_test=None, method="gd", substeps=1, hparams=None)
        dt = jnp.float64
        noise = deep.make_noise(jax.random.PRNGKey(0), p, 37, dt)  # 3 chunks, 11 padded
        args, kw = deep.iteration_arguments(p, dt, solver="monte_carlo", damping=1.0,
                                            batch=16)
        args = (*args, p.steps + 1)
        state, _ = deep.iterate(deep.initial_state(p, dt), noise, *args, **kw)
        new, _ = deep.iterate(state, noise, *args, **kw)
        old, _ = deep.iterate(state, noise, *args, responses="jacfwd", **kw)
        assert float(jnp.max(jnp.abs(state["a"]))) > 0.01
        for key in new:
            ref = np.asarray(old[key])
            gap = np.max(np.abs(np.asarray(new[key]) - ref)) / np.max(np.abs(ref))
            assert gap <= 1e-12, (key, gap)


def test_window_sizes_round_horizons_up_to_the_quantum():
    """T = 100, P = 10, windows of 4 steps: grids of 20, 40, 60, 80 steps and the whole 101
    (100 would leave one step out: less than half a multiple)."""
    from kernels.dmft import deep

    bounds = [int(np.ceil(101 * (w + 1) / 26)) for w in range(26)]
    sizes = deep.window_sizes(101, 10, bounds)
    assert sizes == [20] * 5 + [40] * 5 + [60] * 5 + [80] * 5 + [101] * 6
    assert all(s >= h for s, h in zip(sizes, bounds))
    assert deep.window_sizes(13, 6, [4, 8, 12, 13]) == [13] * 4  # small grids: one size


@pytest.mark.parametrize("solver", ["deep_linear", "monte_carlo"])
def test_windows_solved_on_their_own_grids_reach_the_whole_problems_fixed_point(solver):
    """Depth 3, T = 8, four windows each solved on its own grid (3, 5, 7, then all 9
    steps, ``quantum_points`` one step's points) against the same windows on the whole
    grid, both to 1e-11: the same fixed point (the same noise for the Monte Carlo
    solver). 1e-8 relative leaves room for the iteration's last change (1e-11 times the
    contraction's inverse gap) and for the drives' jitter, which depends on the largest
    variance of the grid (1e-12 relative, ``causal_root``)."""
    from kernels.dmft import deep
    from kernels.dmft.problem import make_problem

    with jax.enable_x64(True):
        x, y, _, _ = small_data(p=4)
        act = "linear" if solver == "deep_linear" else "tanh"
        p = make_problem(mup(depth=3, activation=act, gamma0=0.8), x, y, lr=0.3, steps=8,
                         log_every=1, x_test=None, y_test=None, method="gd", substeps=1,
                         hparams=None)
        dt = jnp.float64
        noise = (deep.make_noise(jax.random.PRNGKey(0), p, 64, dt)
                 if solver == "monte_carlo" else None)
        kw = dict(solver=solver, dtype=dt, damping=1.0, tol=1e-11, max_iter=400, batch=32)
        own, info = deep.run(p, deep.initial_state(p, dt), noise, windows=4,
                             quantum_points=p.n, **kw)
        whole, info1 = deep.run(p, deep.initial_state(p, dt), noise, windows=4,
                                quantum_points=10**9, **kw)
        assert info["sizes"] == [3, 5, 7, 9] and info1["sizes"] == [9] * 4
        assert info["converged"] and info1["converged"]
        for key in ("phi", "g", "a", "b", "f"):
            ref = np.asarray(whole[key])
            gap = np.max(np.abs(np.asarray(own[key]) - ref)) / np.max(np.abs(ref))
            assert gap <= 1e-8, (key, gap)


def test_an_iteration_on_a_windows_own_grid_is_the_leading_block_of_the_whole_one():
    """Causality, which makes a window's own grid exact: one Monte Carlo iteration (depth
    3, T = 8, training stopped at the horizon 4) on the first 5 steps equals the first 5
    steps of the same iteration on all 9, from a state with non-zero responses. Within
    1e-6 relative: the drives' jitter scales with the grid's largest variance
    (``causal_root``), and the nearly singular Cholesky factors of the drives turn that
    into gaps up to 5e-8 (measured; 1.4e-10 with one absolute jitter on both grids),
    where the noise of other grid points gives 0.03-0.6."""
    from kernels.dmft import deep
    from kernels.dmft.problem import make_problem

    with jax.enable_x64(True):
        x, y, _, _ = small_data(p=4)
        p = make_problem(mup(depth=3, gamma0=0.8), x, y, lr=0.3, steps=8, log_every=1,
                         x_test=None, y_test=None, method="gd", substeps=1, hparams=None)
        dt = jnp.float64
        noise = deep.make_noise(jax.random.PRNGKey(0), p, 48, dt)
        args, kw = deep.iteration_arguments(p, dt, solver="monte_carlo", damping=1.0,
                                            batch=16)
        state, _ = deep.iterate(deep.initial_state(p, dt), noise, *args, 9, **kw)
        assert float(jnp.max(jnp.abs(state["a"]))) > 0.01
        whole, _ = deep.iterate(state, noise, *args, 4, **kw)
        own, _ = deep.iterate(deep._truncate(state, 5, p.n), deep._truncate(noise, 5, p.n),
                              *args, 4, **{**kw, "t1": 5})
        lead = deep._truncate(whole, 5, p.n)
        for key in own:
            ref = np.asarray(lead[key])
            gap = np.max(np.abs(np.asarray(own[key]) - ref)) / np.max(np.abs(ref))
            assert gap <= 1e-6, (key, gap)
