"""The softmax-collapse reproduction: oracles for StableMax, the collapse observable and
the gradient-weight alignment, the transformer's task and in-loop probes (fast), and the
quick preset end to end (slow)."""

import json

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import dynamics as td
from dynamics import losses
from dynamics.numerical_stability import (GradientWeightAlignment, SoftmaxCollapse,
                                          gradient_weight_cosine, softmax_collapse,
                                          softmax_sum)
from experiments import cli
from experiments import softmax_collapse as sc

LOGITS = np.array([[2.5, -1.0, 0.0, -7.0, 0.3],
                   [-0.2, -3.0, 4.0, 1.0, -0.5],
                   [-2.0, -1.5, -4.0, -0.1, -9.0]])
LABELS = np.array([0, 2, 1])


def _s_numpy(x):
    return np.where(x >= 0, x + 1.0, 1.0 / (1.0 - np.minimum(x, 0.0)))


def test_stablemax_cross_entropy_matches_a_direct_numpy_computation():
    with jax.enable_x64(True):
        got = float(losses.stablemax_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS)))
    s = _s_numpy(LOGITS)
    probs = s / s.sum(axis=1, keepdims=True)
    want = -np.mean(np.log(probs[np.arange(3), LABELS]))
    # float64 both ways, a few operations: agreement to rounding (1e-13 is ~1e3 ulps)
    assert got == pytest.approx(want, rel=1e-13)
    # s is continuous at 0 with s(0) = 1 and decays like 1/|x|
    assert _s_numpy(np.array([0.0]))[0] == 1.0
    with jax.enable_x64(True):
        s_jax = np.asarray(losses.stablemax_s(jnp.array([-3.0, -1e-12, 0.0, 2.0])))
    np.testing.assert_allclose(s_jax, [0.25, 1.0, 1.0, 3.0], rtol=1e-11)


def test_stablemax_gradient_matches_its_closed_form():
    # d/dx_k [-log s(x_y) + log sum_j s(x_j)] = -delta_ky s'(x_y)/s(x_y) + s'(x_k)/sum s,
    # s'(x) = 1 for x >= 0 and 1/(1 - x)^2 for x < 0; the loss is the mean over rows (1/P)
    with jax.enable_x64(True):
        grad = np.asarray(jax.grad(losses.stablemax_cross_entropy)(
            jnp.asarray(LOGITS), jnp.asarray(LABELS)))
    s = _s_numpy(LOGITS)
    ds = np.where(LOGITS >= 0, 1.0, 1.0 / (1.0 - np.minimum(LOGITS, 0.0)) ** 2)
    want = ds / s.sum(axis=1, keepdims=True)
    rows = np.arange(3)
    want[rows, LABELS] -= ds[rows, LABELS] / s[rows, LABELS]
    want /= len(LABELS)
    # float64 closed form against autodiff: rounding only
    np.testing.assert_allclose(grad, want, rtol=1e-12, atol=1e-15)


def test_softmax_cross_entropy_of_log_stablemax_is_the_stablemax_loss():
    # how the experiment trains with StableMax (dynamics.losses doc): log-probabilities
    # are a fixed point of log_softmax, so the two losses agree to float32 rounding
    x, y = jnp.asarray(LOGITS, jnp.float32), jnp.asarray(LABELS)
    a = float(losses.cross_entropy(losses.log_stablemax(x), y))
    b = float(losses.stablemax_cross_entropy(x, y))
    assert a == pytest.approx(b, rel=1e-6)  # a few float32 ulps (eps 1.2e-7)
    model = sc.StableMaxMLP(width=8, depth=1, out_dim=5, parametrization="standard",
                            bias=False)
    xin = jax.random.normal(jax.random.key(0), (4, 6))
    params = model.init(jax.random.key(1), xin)
    logits = td.MLP(width=8, depth=1, out_dim=5, parametrization="standard",
                    bias=False).apply(params, xin)
    np.testing.assert_allclose(np.exp(np.asarray(model.apply(params, xin))).sum(-1), 1.0,
                               rtol=1e-6)  # probabilities, float32 rounding
    assert (np.argmax(model.apply(params, xin), -1) == np.argmax(logits, -1)).all()
    with pytest.raises(ValueError, match="output_scale=1"):
        sc.StableMaxMLP(width=8, out_dim=5, output_scale=2.0)


def _collapse_numpy(f, dtype):
    f = f.astype(dtype)
    z = f - f.max(axis=-1, keepdims=True)
    return np.exp(z).sum(axis=-1) == 1


def test_softmax_collapse_matches_a_numpy_float32_computation():
    k = 113
    rows = []
    for margin in (25.0, 40.0, 10.0, 5.0):  # every other logit `margin` below the max
        f = np.full(k, -margin)
        f[3] = 0.0
        rows.append(f + 7.0)  # a common shift changes nothing
    f = np.stack(rows)
    labels = np.array([3, 5, 3, 3])  # row 1 collapsed on the wrong class: loss not 0
    # exp(-25) (112 x 1.4e-11 = 1.6e-9) is far below half an ulp of 1 in float32 (6e-8),
    # whatever the summation order, but not in float64 (1.1e-16); exp(-10) = 4.5e-5 is not
    want32 = _collapse_numpy(f, np.float32)
    want64 = _collapse_numpy(f, np.float64)
    assert want32.tolist() == [True, True, False, False]
    assert want64.tolist() == [False, False, False, False]
    x, y = jnp.asarray(f, jnp.float32), jnp.asarray(labels)
    np.testing.assert_array_equal(np.asarray(softmax_sum(x)) == 1, want32)
    collapse, zero = softmax_collapse(x, y)
    assert float(collapse) == 0.5 and float(zero) == 0.25  # exact fractions of 4 rows
    with jax.enable_x64(True):
        collapse64, zero64 = softmax_collapse(jnp.asarray(f), jnp.asarray(labels))
        assert float(collapse64) == 0.0 and float(zero64) == 0.0
    # with a mask: only rows 0 and 2 count
    collapse_m, _ = softmax_collapse(x, losses.Masked(y, jnp.array([1, 0, 1, 0], bool)))
    assert float(collapse_m) == 0.5
    with pytest.raises(ValueError, match="dtype"):
        SoftmaxCollapse(dtype="int8")


def test_gradient_weight_cosine_matches_a_direct_cosine():
    rng = np.random.default_rng(0)
    theta = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    g = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    flat_t = np.concatenate([theta["a"].ravel(), theta["b"]])
    flat_g = np.concatenate([g["a"].ravel(), g["b"]])
    want = -flat_g @ flat_t / np.linalg.norm(flat_g) / np.linalg.norm(flat_t)
    with jax.enable_x64(True):
        got = float(gradient_weight_cosine(jax.tree.map(jnp.asarray, g),
                                           jax.tree.map(jnp.asarray, theta)))
        # pure naive loss minimisation: g = -c theta has cosine 1
        ones = float(gradient_weight_cosine(jax.tree.map(lambda t: -2.5 * jnp.asarray(t),
                                                         theta),
                                            jax.tree.map(jnp.asarray, theta)))
    assert got == pytest.approx(want, rel=1e-12)  # float64, rounding only
    assert ones == pytest.approx(1.0, rel=1e-12)


def test_observables_in_a_sweep_equal_the_direct_computation():
    task = td.tasks.modular_arithmetic(7, train_fraction=0.6, seed=0)
    model = td.MLP(width=16, depth=2, out_dim=7, parametrization="standard", bias=False,
                   sigma_w=6.0)  # large logits at init: most margins exceed 17
    spec = td.Spec(model, task, td.optimizers.adam(1e-3), steps=2, log_every=2,
                   observables=("loss", SoftmaxCollapse(), GradientWeightAlignment()))
    ds, states = td.sweep(spec, seed=[0], return_state=True, progress=False)
    params = jax.tree.map(lambda a: a[0], states[()].params)
    x, y = jnp.asarray(task.x_train), jnp.asarray(task.y_train)
    f = model.apply(params, x)
    grad = jax.grad(lambda p: losses.cross_entropy(model.apply(p, x), y))(params)
    collapse, zero = softmax_collapse(f, y)
    f_np = np.asarray(f)
    want = np.mean(_collapse_numpy(f_np, np.float32))
    last = ds.isel(seed=0, step=-1)
    # the case is not trivial: some rows collapse, fewer with zero loss (wrong arg-max)
    assert 0.2 < float(collapse) < 1.0 and 0.0 < float(zero) < float(collapse)
    # the same float32 program, inside and outside the loop: equal up to a few rounding
    # flips of borderline rows (each 1/P of the fraction) and float32 cosine rounding
    assert float(last.softmax_collapse) == pytest.approx(float(collapse), abs=2 / len(y))
    assert float(collapse) == pytest.approx(want, abs=2 / len(y))
    assert float(last.zero_loss_fraction) == pytest.approx(float(zero), abs=2 / len(y))
    assert float(last.gradient_weight_cosine) == pytest.approx(
        float(gradient_weight_cosine(grad, params)), abs=1e-4)
    assert ds.softmax_collapse.attrs["long_name"] == "softmax collapse fraction"


def test_aligned_window_is_between_fit_and_collapse():
    import xarray as xr

    run = xr.Dataset({"train_accuracy": ("step", [0.5, 1.0, 1.0, 1.0, 1.0]),
                      "softmax_collapse": ("step", [0.0, 0.0, 0.1, 0.7, 0.9]),
                      "gradient_weight_cosine": ("step", [0.1, 0.8, 0.6, -1.0, -1.0])},
                     coords={"step": [0, 1, 2, 3, 4]})
    assert sc._aligned_window_cosine(run) == pytest.approx(0.7)  # median of 0.8, 0.6


def test_token_task_is_the_onehot_task_as_answer_masked_sequences():
    # the transformer's task (modular_arithmetic(encoding="tokens")) against the MLP's on
    # the same seed: the same pairs in the same order (the same split), as sequences
    # (a, b, =) whose answer (a + b) mod p is the target of the last position only
    p = 7
    onehot = td.tasks.modular_arithmetic(p, train_fraction=0.4, seed=0)
    tokens = td.tasks.modular_arithmetic(p, train_fraction=0.4, seed=0, encoding="tokens")
    for split in ("train", "test"):
        x_oh, y_oh = getattr(onehot, f"x_{split}"), getattr(onehot, f"y_{split}")
        x, y = getattr(tokens, f"x_{split}"), getattr(tokens, f"y_{split}")
        mask = getattr(tokens, f"mask_{split}")
        a, b = np.argmax(x_oh[:, :p], 1), np.argmax(x_oh[:, p:], 1)
        np.testing.assert_array_equal(x, np.stack([a, b, np.full_like(a, p)], 1))
        np.testing.assert_array_equal(y[:, -1], (a + b) % p)
        np.testing.assert_array_equal(y[:, -1], y_oh)
        np.testing.assert_array_equal(mask, np.tile([False, False, True], (len(a), 1)))
    assert tokens.n_classes == p + 1  # the vocabulary: 0..p-1 and "="


TINY_TRANSFORMER = dict(p=5, train_fraction=0.6, width=8, depth=1, heads=2, lr=0.01,
                        steps=2, log_every=1, sharpness_every=2, kernel_every=2,
                        probe_size=6)


@pytest.mark.slow  # compiling the transformer loop with its probes takes about 80 s
def test_transformer_probes_equal_dense_computations():
    # the transformer run's in-loop sharpness, empirical NTK and coordinate check, at
    # steps 0 and 2 of a tiny run, against jax.hessian + eigh, jax.jacrev and the model's
    # activations evaluated outside the loop
    spec = sc.make_transformer_spec(**TINY_TRANSFORMER)
    ds, states = td.sweep(spec, seed=[0], return_state=True, progress=False)
    model, task = spec.model, spec.task
    params0 = td.init_params(spec, seed=0)
    params = jax.tree.map(lambda a: a[0], states[()].params)
    x, y = jnp.asarray(task.x_train), losses.Masked(jnp.asarray(task.y_train),
                                                    jnp.asarray(task.mask_train))
    probe = x[:TINY_TRANSFORMER["probe_size"]]
    mask = jnp.asarray(task.mask_train[:TINY_TRANSFORMER["probe_size"]])
    run = ds.isel(seed=0)
    flat, unravel = jax.flatten_util.ravel_pytree(params0)

    def loss(theta):
        return losses.cross_entropy(model.apply(unravel(theta), x), y)

    def top_ntk(prm):
        def f(p):
            out = model.apply(p, probe) * mask[..., None]
            return out.reshape(-1)
        jac = jax.jacrev(lambda t: f(unravel(t)))(jax.flatten_util.ravel_pytree(prm)[0])
        n = probe.shape[0]
        jac = jac.reshape(n, -1, jac.shape[-1])
        k = jnp.einsum("iap,jap->ij", jac, jac) / jac.shape[1]  # mean over T x O outputs
        return np.linalg.eigvalsh(np.asarray(k, np.float64))[::-1]

    for step, prm in ((0, params0), (2, params)):
        theta = jax.flatten_util.ravel_pytree(prm)[0]
        h = np.asarray(jax.hessian(loss)(theta), np.float64)
        top = np.linalg.eigvalsh((h + h.T) / 2)[-1]
        r = run.sel(step=step)
        # 20 Lanczos steps on a float32 Hessian of a few hundred parameters: the top
        # eigenvalue to float32 accumulated rounding, well within 1e-3 relative
        assert float(r.sharpness) == pytest.approx(top, rel=1e-3)
        # the traced NTK's top eigenvalues: structured derivatives (the "auto" choice)
        # against the dense Jacobian, float32 rounding of sums over ~1e3 parameters
        np.testing.assert_allclose(r.ntk_eigenvalues.values, top_ntk(prm)[:4], rtol=1e-3)
        acts = model.activations(prm, probe)
        acts0 = model.activations(params0, probe)
        want = [float(jnp.mean(jnp.abs(acts[m] - acts0[m]))) for m in run.module.values]
        np.testing.assert_allclose(r.activation_change_l1.values, want, rtol=1e-4,
                                   atol=1e-6)  # float32 rounding of a mean of |differences|
    assert float(run.kernel_distance.sel(step=0)) == pytest.approx(0.0, abs=1e-6)
    assert float(run.kernel_distance.sel(step=2)) > 1e-6  # it moved: the check can fail
    assert list(run.module.values)[-1] == "logits"
    assert np.isnan(float(run.sharpness.sel(step=1)))  # the stride: measured at 0 and 2


def test_transformer_claims_read_a_synthetic_run():
    import xarray as xr

    config = dict(TINY_TRANSFORMER, steps=4, log_every=1, sharpness_every=2, kernel_every=2)
    nan = np.nan
    t = xr.Dataset(
        {"train_accuracy": ("step", [0.1, 0.9, 1.0, 1.0, 1.0]),
         "test_accuracy": ("step", [0.02, 0.05, 0.04, 0.03, 0.03]),
         "softmax_collapse": ("step", [0.0, 0.0, 0.1, 0.6, 0.7]),
         "sharpness": ("step", [10.0, nan, 0.1, nan, 0.001]),
         "kernel_distance": ("step", [0.0, nan, 0.4, nan, 0.45]),
         "kernel_alignment": ("step", [0.3, nan, 0.5, nan, 0.5]),
         "ntk_eigenvalues": (("step", "ntk_index"), [[1.0], [nan], [2.0], [nan], [7.0]]),
         "activation_change_l1": (("step", "module"), [[0.0], [1.0], [2.0], [3.0], [4.0]])},
        coords={"step": np.arange(5)}).expand_dims(seed=[0])
    t = t.assign_attrs(transformer=json.dumps(config))
    claims = {c.name: c for c in sc.transformer_claims(t)}
    assert claims["transformer_softmax_collapses"].measured == pytest.approx(0.7)
    assert claims["transformer_sharpness_falls"].measured == pytest.approx(1e-4)
    # between step 2 (first fitted kernel point) and step 4 (largest collapse)
    assert claims["transformer_ntk_grows"].measured == pytest.approx(3.5)
    assert claims["transformer_ntk_keeps_its_shape"].measured == pytest.approx(0.05)
    assert claims["transformer_theory_observables_finite"].measured == 0
    assert all(c.passed for c in claims.values())
    broken = t.copy()
    broken["sharpness"] = broken.sharpness.where(broken.step != 2, nan)
    assert sc.transformer_claims(broken)[-1].measured == 1  # a missing measurement counts


def test_transformer_settings_are_validated():
    with pytest.raises(ValueError, match="sharpness_every"):
        sc.make_transformer_spec(**dict(TINY_TRANSFORMER, log_every=2, sharpness_every=3))
    with pytest.raises(ValueError, match="transformer must be"):
        sc.run(**dict(sc.PRESETS["quick"], transformer=dict(p=5)))


@pytest.mark.slow
def test_quick_preset_runs_through_the_command_line(tmp_path):
    code = cli.main(["run", "softmax-collapse", "--preset", "quick", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert code == 0 and summary["passed"], summary["claims"]
    names = {c["name"] for c in summary["claims"]}
    # StableMax needs the full preset's 12,000 steps: quick leaves it out
    assert names == {"float32_softmax_collapses", "collapsed_examples_have_zero_loss",
                     "float32_test_accuracy_stalls", "float64_delays_collapse",
                     "orthogonal_generalises", "gradient_aligns_with_weights",
                     "no_divergence", "transformer_fits_training_set",
                     "transformer_softmax_collapses", "transformer_test_accuracy_stalls",
                     "transformer_sharpness_falls", "transformer_ntk_grows",
                     "transformer_ntk_keeps_its_shape",
                     "transformer_theory_observables_finite"}
    assert (tmp_path / "figure.png").stat().st_size > 10_000
