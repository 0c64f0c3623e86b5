"""Oracles of the neural-collapse reproduction (Dang et al. 2023): the root of the paper's
scalar equation, the closed-form minimiser against a grid search, the classic two-layer
closed form, the gradient of the regularised objective (JAX, float64) and a dense float64
optimisation; the MLP's readout-only bias against hand-written products and the
infinite-width NNGP; the NeuralCollapse observable against numpy; the quick preset end to
end."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import minimize

import dynamics as td
from dynamics.observables_collapse import NeuralCollapse, nc1
from experiments import neural_collapse as exp
from kernels import neural_collapse as nc
from kernels.infinite import nngp

# ------------------------------------------------------------------- the scalar equation


@pytest.mark.parametrize("depth", [1, 2, 3, 6, 9])
@pytest.mark.parametrize("fraction", [1e-4, 0.1, 0.5, 0.99])
def test_largest_root_solves_the_equation_past_the_peak(depth, fraction):
    # rhs a fraction of the left side's maximum (at x^M = (M-1)/(M+1)); the root solves
    # M x^{M-1}/(x^M+1)^2 = rhs to float64 rounding of the left side (a few eps relative;
    # 1e-12 leaves room for its conditioning near the peak), lies past the peak (the
    # larger root) and the left side is decreasing there.
    peak = ((depth - 1) / (depth + 1)) ** (1 / depth)
    top = depth * peak ** (depth - 1) / (peak**depth + 1) ** 2
    rhs = fraction * top
    x = nc.largest_root(rhs, depth)
    left = depth * x ** (depth - 1) / (x**depth + 1) ** 2
    assert abs(left / rhs - 1) < 1e-12
    assert x > peak
    above = depth * (1.01 * x) ** (depth - 1) / ((1.01 * x) ** depth + 1) ** 2
    assert above < left
    assert np.isnan(nc.largest_root(1.01 * top, depth))


@pytest.mark.parametrize("depth", [1, 2, 3, 6])
@pytest.mark.parametrize("lam", [5e-4, 5e-3, 2e-2])
def test_mode_singular_values_are_the_global_minimum_of_the_mode_objective(depth, lam):
    # g(s) on a fine grid (2e5 points over [0, 2 s_max]): the grid's minimiser lies within
    # one grid step of s from the root solve (or the root solve returns 0 where the grid's
    # minimum is at 0: the collapsed, "minority" modes at the larger decays), and the grid
    # never goes below g(s) by more than float64 rounding.
    counts = np.array([200, 100, 50, 20, 5])
    n = int(counts.sum())
    s = nc.mode_singular_values(counts, n, lam, [lam] * depth)
    grid = np.linspace(0, 2 * max(s.max(), 1.0), 200_001)
    for k, n_k in enumerate(counts):
        g = nc.mode_objective(grid, n_k, n, lam, [lam] * depth)
        best = grid[np.argmin(g)]
        assert abs(best - s[k]) <= 1.5 * (grid[1] - grid[0])
        assert g.min() >= nc.mode_objective(s[k], n_k, n, lam, [lam] * depth) - 1e-15


def test_larger_decays_collapse_the_minority_classes_first():
    # at lambda = 2e-2 and M = 3 (module doc's minority collapse) the smallest classes get
    # s = 0 while the largest keep a positive s; s is nondecreasing in n_k
    counts = np.array([200, 100, 50, 20, 5])
    s = nc.mode_singular_values(counts, int(counts.sum()), 2e-2, [2e-2] * 3)
    assert s[0] > 0 and s[-1] == 0
    assert np.all(np.diff(s) <= 0)


@pytest.mark.parametrize("lam_w,lam_h", [(5e-4, 5e-4), (1e-3, 2e-4)])
def test_one_layer_matches_the_classic_unconstrained_features_closed_form(lam_w, lam_h):
    # M = 1, bias-free, balanced: the two-layer UFM's minimiser, written out by hand
    # without the scalar equation: each class's problem min_{w, h} n/(2N) (w h - 1)^2 +
    # lambda_W w^2 / 2 + n lambda_H h^2 / 2 is solved by w^2 = sqrt(n lambda_H /
    # lambda_W) - N lambda_H (balanced: lambda_W w^2 = n lambda_H h^2, then the ridge
    # condition), with output w h = 1 - N sqrt(lambda_W lambda_H / n) on the class
    # mean (the two-layer closed form of the MSE unconstrained features model, as in
    # Zhou et al. 2022, "On the optimization landscape of neural collapse under MSE
    # loss"): closed forms both, so 1e-12.
    n, k = 100, 4
    form = nc.closed_form((n,) * k, lam_h, [lam_w])
    out = 1 - k * n * np.sqrt(lam_w * lam_h / n)
    np.testing.assert_allclose(np.diag(form.class_mean_outputs), out, rtol=1e-12)
    gram = (np.sqrt(n * lam_h / lam_w) - k * n * lam_h) * np.eye(k)
    np.testing.assert_allclose(form.classifier_gram, gram, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_balanced_limit_of_the_imbalanced_formula(depth):
    # equal counts: the imbalanced diag(s_k^{2M}) is s^{2M} I (the orthogonal frame), and
    # counts (n, n, n, n + 1) are within O(1/n) of it (continuity of the root in n_k);
    # with the bias the same s gives s^{2M} (I - 1 1^T / K), the simplex ETF, and the bias
    # is the class frequencies 1/K.
    n, k, lam = 100, 4, 5e-4
    form = nc.closed_form((n,) * k, lam, [lam] * depth)
    s = form.class_singular_values
    assert np.ptp(s) < 1e-12 * s[0]
    np.testing.assert_allclose(form.classifier_gram, s[0] ** (2 * depth) * np.eye(k),
                               rtol=1e-12, atol=1e-14)
    near = nc.closed_form((n, n, n, n + 1), lam, [lam] * depth)
    assert nc.relative_error(near.classifier_gram, form.classifier_gram) < 1 / n
    biased = nc.closed_form((n,) * k, lam, [lam] * depth, bias=True)
    assert nc.normalized_distance(biased.classifier_gram, nc.simplex_etf(k)) < 1e-12
    np.testing.assert_allclose(biased.classifier_gram,
                               s[0] ** (2 * depth) * nc.simplex_etf(k), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(biased.bias_vector, 1 / k, rtol=1e-12)


# -------------------------------------------------------- the minimiser is a minimiser


CASES = [((6, 4, 2), False, [0.02, 0.02], 0.02),
         ((5, 3, 2), False, [0.01, 0.03, 0.02], 0.015),   # unequal layer decays
         ((4, 4, 4), True, [0.02, 0.02], 0.02),
         ((6, 3, 3), True, [0.02], 0.01)]


def _objective(flat, shapes, y, lam_h, lam_ws, bias, xp):
    parts, i = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        parts.append(flat[i:i + size].reshape(shape))
        i += size
    h, ws = parts[0], parts[1:len(lam_ws) + 1]
    b = parts[-1] if bias else xp.zeros(y.shape[0])
    return nc.objective(h, ws, b, y, lam_h, lam_ws, xp=xp)


@pytest.mark.parametrize("counts,bias,lam_ws,lam_h", CASES)
def test_closed_form_is_a_stationary_point_of_the_regularised_objective(
        counts, bias, lam_ws, lam_h, x64):
    # grad F at the closed-form minimiser, by JAX in float64: zero up to rounding of
    # O(1) quantities (1e-8, the bound; observed ~1e-16)
    form = nc.closed_form(counts, lam_h, lam_ws, bias=bias)
    width = 5
    h, ws, b = nc.minimiser(form, width)
    y = nc.one_hot(counts)
    shapes = [h.shape] + [w.shape for w in ws] + ([b.shape] if bias else [])
    flat = np.concatenate([a.ravel() for a in [h, *ws] + ([b] if bias else [])])
    f = lambda v: _objective(v, shapes, jnp.asarray(y), lam_h, lam_ws, bias, jnp)  # noqa
    grad = jax.grad(f)(jnp.asarray(flat))
    assert float(jnp.max(jnp.abs(grad))) < 1e-8
    assert float(f(jnp.asarray(flat))) == pytest.approx(form.objective, rel=1e-12)
    assert np.all(form.layer_singular_values[:len(counts) - bias] > 0)


@pytest.mark.parametrize("counts,bias,lam_ws,lam_h", CASES)
def test_dense_optimisation_reaches_the_closed_form(counts, bias, lam_ws, lam_h):
    # L-BFGS in float64 on the full objective (width 5 >= K) from 4 random starts: the
    # best reaches F* to 1e-9 relative (it never goes below it: F* is the global
    # minimum) and its W W^T, W = W_M...W_1, class-mean Gram and outputs on the class
    # means (W Hbar + b) equal the closed forms to
    # 1e-4 relative (gradient tolerance 1e-12; the minimisers form a manifold, the hidden
    # rotations, on which these invariants are constant, and across it F grows
    # quadratically, so their error is ~ sqrt of the objective's, ~1e-6 at most).
    form = nc.closed_form(counts, lam_h, lam_ws, bias=bias)
    y = nc.one_hot(counts)
    k, n = y.shape
    width = 5
    shapes = [(width, n)] + [(width, width)] * (len(lam_ws) - 1) + [(k, width)]
    shapes += [(k,)] if bias else []
    size = sum(int(np.prod(s)) for s in shapes)
    f = jax.jit(jax.value_and_grad(
        lambda v: _objective(v, shapes, jnp.asarray(y), lam_h, lam_ws, bias, jnp)))
    best = None
    with jax.enable_x64(True):
        for seed in range(4):
            v0 = np.random.default_rng(seed).normal(0, 0.5, size)
            res = minimize(lambda v: tuple(np.asarray(a, np.float64) for a in f(v)), v0,
                           jac=True, method="L-BFGS-B",
                           options=dict(maxiter=20000, gtol=1e-12, ftol=1e-16))
            if best is None or res.fun < best.fun:
                best = res
    assert best.fun >= form.objective * (1 - 1e-12)
    assert best.fun == pytest.approx(form.objective, rel=1e-9)
    parts, i = [], 0
    for s in shapes:
        parts.append(best.x[i:i + int(np.prod(s))].reshape(s))
        i += int(np.prod(s))
    w = parts[len(lam_ws)]
    for p in reversed(parts[1:len(lam_ws)]):
        w = w @ p
    means = parts[0] @ y.T / np.asarray(counts)
    b = parts[-1] if bias else np.zeros(k)
    assert nc.relative_error(w @ w.T, form.classifier_gram) < 1e-4
    assert nc.relative_error(means.T @ means, form.feature_gram) < 1e-4
    assert nc.relative_error((w @ means + b[:, None]).T, form.class_mean_outputs) < 1e-4


# ------------------------------------------------------------------ engine additions


def test_readout_bias_gives_the_readout_alone_a_bias():
    model = td.MLP(width=6, depth=2, out_dim=3, activation="linear",
                   parametrization="standard", bias=False, readout_bias=True,
                   sigma_b=0.5)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 4))
    params = model.init(jax.random.PRNGKey(0), x)
    assert [sorted(p) for p in params] == [["w"], ["w"], ["b", "w"]]
    assert [model.has_bias(i) for i in range(3)] == [False, False, True]
    assert "sigma_b" in model.hparams()
    assert model.roles(params)[2] == {"w": "readout", "b": "bias"}
    # standard parametrization: multipliers 1, so g = x W0 W1 W2 + b exactly (float32
    # matmuls in another association order: 1e-5 relative)
    want = x @ params[0]["w"] @ params[1]["w"] @ params[2]["w"] + params[2]["b"]
    np.testing.assert_allclose(model.apply(params, x), want, rtol=1e-5, atol=1e-6)
    assert float(jnp.std(params[2]["b"])) > 0   # drawn with sigma_b


def test_readout_bias_adds_its_variance_to_the_infinite_nngp_once(x64):
    # the readout bias b ~ N(0, sigma_b^2) adds sigma_b^2 to every entry of the NNGP
    # (standard parametrization: bias multiplier 1), and nothing through the hidden layers
    # (they have none): exact in float64 (1e-12)
    x = np.random.default_rng(0).normal(size=(5, 3))
    kw = dict(width=8, depth=2, out_dim=1, activation="relu", parametrization="standard",
              bias=False, sigma_b=0.7)
    k0 = nngp(td.MLP(**kw), x)
    k1 = nngp(td.MLP(**kw, readout_bias=True), x)
    np.testing.assert_allclose(np.asarray(k1 - k0), 0.7**2, rtol=1e-12)


def _numpy_nc1(h, labels, k):
    means = np.stack([h[labels == c].mean(0) for c in range(k)])
    mu = h.mean(0)
    centred = h - means[labels]
    sigma_w = centred.T @ centred / len(h)
    sigma_b = (means - mu).T @ (means - mu) / k
    return np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / k, means


def test_nc1_equals_the_trace_with_the_pseudo_inverse_of_sigma_b(x64):
    # the d x K pseudo-inverse form equals the paper's tr(Sigma_W Sigma_B^+)/K (d = 6 >
    # K - 1 = 2, so Sigma_B is singular and the pseudo-inverse matters): float64, 1e-10
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), [5, 3, 4])
    h = rng.normal(size=(12, 6)) + 3 * rng.normal(size=(3, 6))[labels]
    want, _ = _numpy_nc1(h, labels, 3)
    got = nc1(jnp.asarray(h), jax.nn.one_hot(labels, 3, dtype=jnp.float64))
    assert float(got) == pytest.approx(want, rel=1e-10)
    collapsed = rng.normal(size=(3, 6))[labels]
    assert float(nc1(jnp.asarray(collapsed), jax.nn.one_hot(labels, 3))) < 1e-20


def test_the_observables_in_a_run_against_numpy(x64):
    # a short run of the experiment's model (imbalanced, M = 2, width 5, 12 examples):
    # the logged nc1, Grams and objective of the last step recomputed by numpy from the
    # final parameters (float64 runs: 1e-9)
    counts = (6, 4, 2)
    spec = exp.make_spec("imbalanced", counts, 5, 2, 0.01, 0.01, 0.1, 0.9, 40, 20)
    spec = td.Spec(spec.model, spec.task.astype("float64"), spec.optimizer, steps=40,
                   log_every=20, observables=spec.observables)
    ds, states = td.sweep(spec, seed=[0], return_state=True)
    params = jax.tree.map(lambda a: np.asarray(a)[0], states[()].params)
    last = ds.isel(step=-1, seed=0)
    labels = np.repeat(np.arange(3), counts)
    h = params[0]["w"]                                          # H^T, (N, d)
    want_nc1, means = _numpy_nc1(h, labels, 3)
    assert float(last.nc1) == pytest.approx(want_nc1, rel=1e-9)
    np.testing.assert_allclose(last.feature_gram, means @ means.T, rtol=1e-9)
    centred = means - h.mean(0)
    np.testing.assert_allclose(last.centered_feature_gram, centred @ centred.T, rtol=1e-9,
                               atol=1e-14)
    w = (params[1]["w"] @ params[2]["w"]).T                     # W = W_2 W_1, (K, d)
    np.testing.assert_allclose(last.classifier_gram, w @ w.T, rtol=1e-9)
    np.testing.assert_allclose(last.readout_gram, params[2]["w"].T @ params[2]["w"],
                               rtol=1e-9)
    y = nc.one_hot(counts)
    f = nc.objective(h.T, [params[1]["w"].T, params[2]["w"].T], np.zeros(3), y, 0.01,
                     [0.01, 0.01])
    assert float(last.objective) == pytest.approx(f, rel=1e-9)
    np.testing.assert_allclose(last.class_mean_outputs, (w @ means.T).T, rtol=1e-9)


def test_neural_collapse_refuses_an_unknown_layer():
    spec = exp.make_spec("balanced", (3, 3), 4, 1, 0.01, 0.01, 0.1, 0.9, 10, 10)
    with pytest.raises(ValueError, match="features must be one of"):
        td.Spec(spec.model, spec.task, spec.optimizer, steps=10, log_every=10,
                observables=(NeuralCollapse(features="layer7"),))


def test_neural_collapse_refuses_a_model_without_the_mlp_readout_leaf():
    # a Transformer's parameters are a dict of named blocks, not a tuple of layers ending
    # in a {"w": (d_in, K)} leaf: refused when the Spec binds it, before compiling
    task = td.tasks.modular_arithmetic(p=5, train_fraction=0.6, encoding="tokens")
    model = td.Transformer(vocab_size=6, width=8, heads=2, depth=1)
    with pytest.raises(ValueError, match="NeuralCollapse reads the readout"):
        td.Spec(model, task, td.optimizers.sgd(0.1), steps=2, log_every=1,
                observables=(NeuralCollapse(),))


@pytest.mark.parametrize("coupling", ["l2", "decoupled", "independent"])
def test_weight_decay_scales_decay_each_leaf_at_its_own_rate(coupling, x64):
    # one plain-SGD step, lr 0.1, weight decay 0.3, scales (2, 0.5) on the two layers'
    # weights (the auto mask leaves the bias alone): theta - lr g - r c theta with r =
    # lr lambda for l2 and decoupled (the same for SGD) and lambda for independent; float64
    # arithmetic of the same few operations: 1e-14
    model = td.MLP(width=3, depth=1, out_dim=2, activation="linear",
                   parametrization="standard", bias=True)
    x = np.random.default_rng(0).normal(size=(5, 4))
    y = np.random.default_rng(1).normal(size=(5, 2))
    task = td.tasks.from_arrays(x, y, dtype="float64")
    scales = ({"w": 2.0, "b": 1.0}, {"w": 0.5, "b": 1.0})
    opt = td.optimizers.sgd(lr=0.1, weight_decay=0.3, weight_decay_coupling=coupling,
                            weight_decay_scales=scales)
    spec = td.Spec(model, task, opt, steps=1, log_every=1, observables=("loss",))
    _, states = td.sweep(spec, seed=[0], return_state=True)
    p0 = jax.tree.map(lambda a: np.asarray(a)[0], states[()].params0)
    p1 = jax.tree.map(lambda a: np.asarray(a)[0], states[()].params)

    def loss(p):
        return jnp.mean(jnp.sum((model.apply(p, jnp.asarray(x)) - y) ** 2, -1))

    g = jax.grad(loss)(p0)
    rate = 0.3 if coupling == "independent" else 0.1 * 0.3
    for layer in range(2):
        for name in ("w", "b"):
            decay = rate * scales[layer][name] if name == "w" else 0.0
            want = p0[layer][name] - 0.1 * g[layer][name] - decay * p0[layer][name]
            np.testing.assert_allclose(p1[layer][name], want, rtol=1e-14, atol=1e-15)


def test_weight_decay_scales_are_checked():
    with pytest.raises(ValueError, match="weight_decay_scales must be a pytree of reals"):
        td.optimizers.sgd(lr=0.1, weight_decay=0.1, weight_decay_scales=({"w": -1.0},))
    with pytest.raises(ValueError, match="apply to traindyn's weight decay"):
        td.optimizers.from_optax(optax.sgd, lr=0.1, weight_decay_scales=({"w": 1.0},))


def test_unequal_feature_and_layer_decays_reach_their_closed_form(x64):
    # lambda_H = 4 lambda_W through weight_decay_scales: plain GD (float64, 12 examples,
    # M = 2, width 5, heavy ball) reaches the closed form's objective to 1e-6 relative and
    # its W W^T to 1e-3: the slowest direction, the decay of what the fit does not see,
    # contracts by about lr 2 lambda_W / (1 - momentum) = 0.5 * 0.02 / 0.1 = 0.1 per step,
    # so 3000 steps leave nothing of the initial gap but float64 rounding; the bounds are
    # loose so that they test the closed form (a wrong lambda_H moves F by O(1)) and not
    # the optimiser
    counts = (6, 4, 2)
    lam_w, lam_h = 0.01, 0.04
    spec = exp.make_spec("imbalanced", counts, 5, 2, lam_w, lam_h, 1.0, 0.9, 3000, 3000)
    spec = td.Spec(spec.model, spec.task.astype("float64"), spec.optimizer, steps=3000,
                   log_every=3000, observables=spec.observables)
    last = td.sweep(spec, seed=[0]).isel(step=-1, seed=0)
    form = nc.closed_form(counts, lam_h, [lam_w, lam_w])
    assert float(last.objective) == pytest.approx(form.objective, rel=1e-6)
    assert nc.relative_error(last.classifier_gram.values, form.classifier_gram) < 1e-3


@pytest.mark.slow
def test_quick_preset_end_to_end():
    ds = exp.run(**exp.PRESETS["quick"])
    claims = exp.check(ds)
    failed = [(c.name, c.measured, c.target) for c in claims if not c.passed]
    assert not failed, failed
