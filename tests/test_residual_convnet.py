"""ResidualMLP and ConvNet: infinite-width kernels against neural-tangents and closed forms,
wide empirical NTKs converging to them at rate width^-1/2, the parametrization's
learning-rate table, validation, and both models trained in sweeps with SGD and Adam,
with curvature and kernel observables checked against dense computations."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import dynamics as td
import kernels
from dynamics import curvature, losses
from dynamics.models import apply_scaled
from dynamics.models import convnet
from dynamics.models.convnet import ConvNet
from dynamics.models.residual import ResidualMLP

REFERENCE = json.loads((pathlib.Path(__file__).parent / "data" /
                        "nt_reference_arch.json").read_text())
MODELS = {"residual": ResidualMLP, "conv": ConvNet}


def _case_id(group, case):
    m = case["model"]
    exponent = f"-e{m['depth_exponent']}" if group == "residual" else ""
    return f"{group}-{m['parametrization']}-{m['activation']}-d{m['depth']}{exponent}"


CASES = [pytest.param(group, case, id=_case_id(group, case))
         for group in MODELS for case in REFERENCE[group]["cases"]]


@pytest.mark.parametrize("group,case", CASES)
def test_infinite_kernels_match_neural_tangents(group, case):
    """neural-tangents 0.6.5 (tests/data/make_nt_reference_arch.py): residual networks
    under ntk, standard and mup with the three depth rules, and SAME convolutions with
    global average pooling, relu and erf, depth 1-3, on x1 x x2 and x1 x x1."""
    with jax.enable_x64(True):
        cls = MODELS[group]
        fields = {k: v for k, v in case["model"].items() if k in cls.__dataclass_fields__}
        model = cls(**fields)
        x1, x2 = np.asarray(REFERENCE[group]["x1"]), np.asarray(REFERENCE[group]["x2"])
        for name, fn in (("nngp", kernels.nngp), ("ntk", kernels.ntk)):
            for got, want in ((fn(model, x1, x2), case[name]),
                              (fn(model, x1), case[name + "_11"])):
                want = np.asarray(want)
                assert np.shape(got) == want.shape
                # Both sides are float64 closed forms: measured <= 1e-15 relative to the
                # largest entry, but for relu's x1 x x1 NTK (4e-9: neural-tangents
                # stabilises arccos near the diagonal, where its derivative is infinite).
                # 1e-8 is 2.5x that measured worst case.
                err = np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want))
                assert err < 1e-8, (name, err)


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0])
def test_linear_residual_nngp_is_a_geometric_product(exponent):
    """Linear activation, no biases, NTK parametrization: each block multiplies the
    stream's covariance by ``1 + b_L^2 sigma_w^2`` (the branch adds an independent
    ``b_L^2 sigma_w^2 Sigma``), so ``nngp = sigma_w^4 (x.x'/D) (1 + b_L^2 sigma_w^2)^L``
    with ``b_L = branch_scale L^-exponent``; under exponent 1/2 it tends to
    ``sigma_w^4 (x.x'/D) exp(branch_scale^2 sigma_w^2)`` (Bordelon et al. 2023)."""
    with jax.enable_x64(True):
        x = np.random.default_rng(0).normal(size=(3, 5))
        sw, beta = 1.1, 0.7
        for depth in (1, 4, 64):
            model = ResidualMLP(width=8, depth=depth, activation="linear", bias=False,
                                sigma_w=sw, branch_scale=beta, depth_exponent=exponent)
            b2 = beta**2 * depth ** (-2 * exponent)
            want = sw**4 * (x @ x.T / 5) * (1 + b2 * sw**2) ** depth
            # a product of 64 float64 factors: round-off ~1e-14
            np.testing.assert_allclose(kernels.nngp(model, x), want, rtol=1e-12)
        if exponent == 0.5:  # (1 + c/L)^L = exp(c) (1 - c^2/(2L) + ...): 2% at L = 64
            limit = sw**4 * (x @ x.T / 5) * np.exp(beta**2 * sw**2)
            np.testing.assert_allclose(kernels.nngp(model, x), limit, rtol=0.02)


def test_pointwise_convolution_nngp_is_the_pooled_linear_kernel():
    """1x1 filters, linear activation, no biases: the network is linear in the pooled
    image, so ``nngp = sigma_w^(2(L+1)) (mean_p x_p) . (mean_p' x'_p') / C``."""
    with jax.enable_x64(True):
        x = np.random.default_rng(1).normal(size=(3, 4, 5, 2))
        sw, depth = 1.2, 2
        model = ConvNet(width=4, depth=depth, kernel_size=1, activation="linear",
                        bias=False, sigma_w=sw)
        pooled = x.mean(axis=(1, 2))
        want = sw ** (2 * (depth + 1)) * pooled @ pooled.T / 2
        # round-off of sums of 20 x 20 pixel pairs that cancel: relative to the largest entry
        np.testing.assert_allclose(kernels.nngp(model, x), want, rtol=0,
                                   atol=1e-12 * np.abs(want).max())


def _rms_errors(make, x, widths, seeds=32):
    """RMS over ``seeds`` networks of ``||K_emp - K_inf||_F / ||K_inf||_F`` per width."""
    out = {}
    for width in widths:
        model = make(width)
        f = lambda p, xx: apply_scaled(model, p, xx)  # noqa: E731
        keys = jax.random.split(jax.random.PRNGKey(1), seeds)
        params = jax.jit(jax.vmap(lambda k: model.init(k, x)))(keys)
        emp = jax.jit(jax.vmap(lambda p: kernels.empirical_ntk(
            f, p, x, trace=True, method="jacobian")))(params)
        inf = kernels.ntk(model, x)
        err = jnp.linalg.norm(emp - inf, axis=(1, 2)) / jnp.linalg.norm(inf)
        out[width] = float(jnp.sqrt(jnp.mean(err**2)))
    return out


@pytest.mark.slow  # ~16 s per model on 2 cores (compiles at three widths)
@pytest.mark.parametrize("name", ["residual", "conv"])
def test_empirical_ntk_converges_at_rate_one_over_sqrt_width(name):
    """The empirical NTK of one network fluctuates around the infinite-width kernel by
    O(1/sqrt(N)) (plus an O(1/N) bias): the fitted slope of log RMS error against
    log width is -1/2."""
    with jax.enable_x64(True):
        if name == "residual":
            make = lambda w: ResidualMLP(width=w, depth=3, activation="erf",  # noqa: E731
                                         sigma_w=1.3, sigma_b=0.2, output_scale=1.5)
            x, widths = jax.random.normal(jax.random.PRNGKey(0), (4, 6)), (32, 128, 512)
        else:
            make = lambda w: ConvNet(width=w, depth=2, activation="relu",  # noqa: E731
                                     sigma_w=1.3, sigma_b=0.2, output_scale=1.5)
            x, widths = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 2)), (16, 64, 256)
        errors = _rms_errors(make, x, widths)
        slope = np.polyfit(np.log(widths), np.log(list(errors.values())), 1)[0]
        # Measured over 4 independent draws of the 32 networks: slopes -0.45..-0.52
        # (residual) and -0.43..-0.59 (conv), spread ~0.07 from the RMS of 32 samples per
        # width; +-0.2 is ~3 of those spreads, and excludes -1 (an O(1/N) error) and 0.
        assert abs(slope + 0.5) < 0.2, (slope, errors)
        # measured 0.07-0.10 at the largest width: 0.15 leaves 50%
        assert errors[widths[-1]] < 0.15, errors


@pytest.mark.slow  # ~40 s (residual), 16 s (conv) on 2 cores: four seeds at two widths
@pytest.mark.parametrize("name", ["residual", "conv"])
def test_wide_centred_networks_train_like_their_infinite_ntk(name):
    """Centred wide networks under SGD (f_0 = 0) follow the kernel-regression dynamics of
    their infinite-width NTK (kernels.predict_infinite; Jacot et al. 2018, Lee et al.
    2019): the seed-averaged training loss approaches the prediction as width grows."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        if name == "residual":
            task = td.tasks.make("teacher_student_mlp", n_train=16, n_test=8,
                                 dim=5).astype("float64")
            model, widths = ResidualMLP(depth=2, activation="erf", center=True,
                                        sigma_b=0.2), [128, 2048]
        else:
            task = td.tasks.from_arrays(
                rng.normal(size=(12, 4, 4, 2)), rng.normal(size=(12, 1)),
                x_test=rng.normal(size=(4, 4, 4, 2)), y_test=rng.normal(size=(4, 1)),
                dtype="float64")
            model, widths = ConvNet(depth=1, activation="erf", center=True,
                                    sigma_b=0.2), [32, 512]
        spec = td.Spec(model, task, td.optimizers.sgd(0.5), steps=20, log_every=10)
        ds = td.sweep(spec, width=widths, seed=[0, 1, 2, 3])
        want = kernels.predict_infinite(spec, ensemble=False).train_loss.values
        err = {w: float(np.max(np.abs(ds.train_loss.sel(width=w).mean("seed").values - want))
                        / want[0]) for w in widths}
        # measured 8e-4 (residual, N = 2048) and 3e-4 (conv, N = 512) of the initial loss;
        # from the small to the large width (16x) the error fell 11x and 16x (an O(1/N)
        # bias of the seed mean; O(1/sqrt N) would give 4x): require 3e-3 and 4x
        assert err[widths[1]] < 3e-3, err
        assert err[widths[0]] > 4 * err[widths[1]], err


# -- the parametrization's table ----------------------------------------------------------------


def _table(parametrization, family, n, gamma0, depth):
    """The learning-rate multipliers of dynamics.parametrization's tables, per layer
    (input, ``depth`` hidden, readout) as ``(weight, bias)``, width ``N = n``."""
    if parametrization == "standard":
        return [(1.0, 1.0)] * (depth + 2)
    if family == "sgd":
        c = 1.0 if parametrization == "ntk" else gamma0**2 * n
        return [(c, c)] * (depth + 2)
    r = np.sqrt(n)
    ntk = [(1 / r, 1 / r)] + [(1 / n, 1 / r)] * depth + [(1 / r, 1.0)]
    if parametrization == "ntk":
        return ntk
    # mup: the ntk column times theta = gamma0 sqrt(N) (the abc-symmetry)
    return [(gamma0 * r * w, gamma0 * r * b) for w, b in ntk]


@pytest.mark.parametrize("parametrization", ["standard", "ntk", "mup"])
@pytest.mark.parametrize("family", ["sgd", "adam"])
def test_lr_multipliers_equal_the_parametrization_table(parametrization, family):
    """Residual blocks are hidden layers; convolutions are input/hidden layers whose width
    ratios are their channels (the filter's k^2 does not grow)."""
    n, gamma0 = 16, 0.5
    res = ResidualMLP(width=n, depth=3, parametrization=parametrization, gamma0=gamma0)
    conv = ConvNet(width=n, depth=3, parametrization=parametrization, gamma0=gamma0)
    for model, x, hidden in ((res, jnp.ones((2, 5)), 3), (conv, jnp.ones((2, 4, 4, 3)), 2)):
        params = model.init(jax.random.PRNGKey(0), x)
        got = model.lr_multipliers(params, family=family)
        want = _table(parametrization, family, n, gamma0, hidden)
        assert len(got) == len(want)
        for layer, (w, b) in zip(got, want):
            # the same float64 formulas: equal to round-off
            np.testing.assert_allclose([layer["w"], layer["b"]], [w, b], rtol=1e-12)
        # swept gamma0 reaches the multipliers
        if parametrization == "mup":
            half = model.lr_multipliers(params, {"gamma0": 2 * gamma0}, family=family)
            ratio = 4.0 if family == "sgd" else 2.0
            np.testing.assert_allclose(half[0]["w"], ratio * got[0]["w"], rtol=1e-12)


def test_roles_and_layer_shapes():
    res = ResidualMLP(width=6, depth=2, out_dim=3)
    p = res.init(jax.random.PRNGKey(0), jnp.ones((2, 5)))
    assert [q["w"].shape for q in p] == [(5, 6), (6, 6), (6, 6), (6, 3)]
    assert [r["w"] for r in res.roles(p)] == ["input", "hidden", "hidden", "readout"]
    acts = res.activations(p, jnp.ones((2, 5)))
    assert list(acts) == ["layer0", "layer1", "layer2", "layer3"]
    conv = ConvNet(width=6, depth=2, out_dim=3, kernel_size=5)
    q = conv.init(jax.random.PRNGKey(0), jnp.ones((2, 7, 6, 2)))
    assert [a["w"].shape for a in q] == [(5, 5, 2, 6), (5, 5, 6, 6), (6, 3)]
    assert [r["w"] for r in conv.roles(q)] == ["input", "hidden", "readout"]
    acts = conv.activations(q, jnp.ones((2, 7, 6, 2)))
    assert [a.shape for a in acts.values()] == [(2, 7, 6, 6), (2, 7, 6, 6), (2, 3)]
    # the init draws: standard deviations of the layer scales (ntk: N(0, 1) weights);
    # 25*6*6 = 900 draws: the sample std is within 4/sqrt(2*900) = 9% of 1
    assert abs(float(jnp.std(q[1]["w"])) - 1.0) < 0.09


def test_the_forward_pass_is_the_written_recursion():
    """ResidualMLP and ConvNet outputs written out by hand (numpy, float64)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(3, 4))
        res = ResidualMLP(width=5, depth=2, activation="tanh", sigma_w=1.2, sigma_b=0.3,
                          branch_scale=0.9, depth_exponent=1.0)
        p = res.init(jax.random.PRNGKey(0), jnp.asarray(x))
        w = [np.asarray(a["w"]) for a in p]
        b = [np.asarray(a["b"]) for a in p]
        m = [1.2 / np.sqrt(4), 1.2 / np.sqrt(5), 1.2 / np.sqrt(5), 1.2 / np.sqrt(5)]
        h = m[0] * x @ w[0] + 0.3 * b[0]
        for l in (1, 2):
            h = h + 0.9 / 2 * (m[l] * np.tanh(h) @ w[l] + 0.3 * b[l])
        want = m[3] * np.tanh(h) @ w[3] + 0.3 * b[3]
        np.testing.assert_allclose(res.apply(p, jnp.asarray(x)), want, rtol=1e-12)

        img = rng.normal(size=(2, 4, 3, 2))
        conv = ConvNet(width=3, depth=1, activation="tanh", sigma_w=1.2, sigma_b=0.3)
        q = conv.init(jax.random.PRNGKey(1), jnp.asarray(img))
        k, bias = np.asarray(q[0]["w"]), np.asarray(q[0]["b"])
        padded = np.pad(img, ((0, 0), (1, 1), (1, 1), (0, 0)))
        h = np.zeros((2, 4, 3, 3))
        for i in range(4):
            for j in range(3):
                h[:, i, j] = np.einsum("aijc,ijcd->ad", padded[:, i:i + 3, j:j + 3], k)
        h = 1.2 / np.sqrt(2 * 9) * h + 0.3 * bias
        want = (1.2 / np.sqrt(3) * np.tanh(h).mean(axis=(1, 2)) @ np.asarray(q[1]["w"])
                + 0.3 * np.asarray(q[1]["b"]))
        np.testing.assert_allclose(conv.apply(q, jnp.asarray(img)), want, rtol=1e-12)
        # the patch-matrix convolution is XLA's convolution primitive (float64 round-off)
        for k in (1, 3, 5):
            filters = jnp.asarray(rng.normal(size=(k, k, 2, 3)))
            lax = jax.lax.conv_general_dilated(jnp.asarray(img), filters, (1, 1), "SAME",
                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
            np.testing.assert_allclose(convnet.conv(jnp.asarray(img), filters), lax,
                                       rtol=0, atol=1e-13)


def test_validation_errors():
    with pytest.raises(ValueError, match="depth_exponent must be one of"):
        ResidualMLP(depth_exponent=0.3)
    with pytest.raises(ValueError, match="branch_scale must be > 0"):
        ResidualMLP(branch_scale=0.0)
    with pytest.raises(ValueError, match="depth must be a positive int"):
        ResidualMLP(depth=0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConvNet(kernel_size=2)
    with pytest.raises(ValueError, match="kernel_size must be a positive int"):
        ConvNet(kernel_size=0)
    with pytest.raises(ValueError, match="sigma_w must be > 0"):
        ConvNet(sigma_w=-1.0)
    with pytest.raises(ValueError, match="parametrization must be one of"):
        ConvNet(parametrization="mean_field")
    with pytest.raises(ValueError, match=r"images of shape \(batch, H, W, C\)"):
        ConvNet(width=2).init(jax.random.PRNGKey(0), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="integer tokens"):
        ResidualMLP(width=2).init(jax.random.PRNGKey(0), jnp.ones((3, 4), jnp.int32))
    with pytest.raises(ValueError, match=r"x1 must be images of shape"):
        kernels.ntk(ConvNet(width=2), np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"x2 must have images of shape \(4, 4, 2\)"):
        kernels.ntk(ConvNet(width=2), np.ones((3, 4, 4, 2)), np.ones((3, 4, 5, 2)))
    with pytest.raises(ValueError, match="x1 must be 2-D"):
        kernels.nngp(ResidualMLP(width=2), np.ones((3, 4, 4, 2)))
    spec = td.Spec(ResidualMLP(width=4), td.tasks.make("teacher_student_mlp", n_train=8,
                                                       n_test=4, dim=3), steps=2,
                   log_every=1)
    with pytest.raises(ValueError, match="depth_exponent must be one of"):
        td.sweep(spec, depth_exponent=[0.5, 2.0])


# -- in sweeps ----------------------------------------------------------------------------------


def _initial_loss(spec, x, y):
    params = td.init_params(spec, seed=0)
    loss = losses.get(spec.task.loss)
    return float(loss(spec.model.apply(params, jnp.asarray(x)), jnp.asarray(y)))


@pytest.mark.parametrize("optimizer", [td.optimizers.sgd(0.2), td.optimizers.adam(3e-3)],
                         ids=["sgd", "adam"])
@pytest.mark.parametrize("name", ["residual", "conv"])
def test_trains_in_a_sweep_over_width(name, optimizer):
    if name == "residual":
        task = td.tasks.make("teacher_student_mlp", n_train=32, n_test=8, dim=6)
        model = ResidualMLP(width=16, depth=2, activation="tanh", parametrization="mup",
                            gamma0=1.0)
    else:
        task = td.tasks.digits(n_train=32, n_test=8, shape="image")
        model = ConvNet(width=4, depth=1, out_dim=10, parametrization="ntk")
    spec = td.Spec(model, task, optimizer, steps=12, log_every=6)
    ds = td.sweep(spec, width=[4, 8])
    assert ds.train_loss.dims == ("width", "step")
    loss = ds.train_loss
    # logged initial loss = the loss of the model's own forward pass at seed 0's init
    # (float32 forward passes of a few hundred terms: 1e-5 relative)
    spec8 = td.Spec(dataclasses.replace(spec.model, width=8), task, optimizer, steps=12,
                    log_every=6)
    np.testing.assert_allclose(float(loss.sel(width=8).isel(step=0)),
                               _initial_loss(spec8, task.x_train, task.y_train), rtol=1e-5)
    # it trains at both widths
    assert bool((loss.isel(step=-1) < loss.isel(step=0)).all()), loss.values


def _small_conv_spec(observables):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 4, 4, 1)), rng.normal(size=(10, 1))
    task = td.tasks.from_arrays(x, y, dtype="float64")
    model = ConvNet(width=3, depth=1, activation="tanh", sigma_b=0.5)
    return td.Spec(model, task, td.optimizers.sgd(0.3), steps=6, log_every=3,
                   observables=observables), x, y


def test_sharpness_and_kernel_observables_of_a_convnet_in_a_sweep():
    """Lanczos sharpness against eigh of the dense Hessian, KernelObservables against the
    dense jacrev NTK, at the returned parameters of every run of a (seed, lr) sweep."""
    with jax.enable_x64(True):
        obs = (curvature.Sharpness(iterations=34),
               kernels.KernelObservables(probe_size=10, top_k=2))
        spec, x, y = _small_conv_spec(obs)
        ds, states = td.sweep(spec, seed=[0, 1], lr=[0.1, 0.3], return_state=True)
        assert ds.sharpness.dims == ("seed", "lr", "step")
        st = states[()]
        unravel = ravel_pytree(jax.tree.map(lambda a: a[0, 0], st.params))[1]
        xs, ys = jnp.asarray(x), jnp.asarray(y)
        hessian = jax.jit(jax.hessian(
            lambda v: losses.mse(spec.model.apply(unravel(v), xs), ys)))
        jacobian = jax.jit(jax.jacrev(lambda v: spec.model.apply(unravel(v), xs)[:, 0]))
        for i in range(2):
            for j in range(2):
                flat = ravel_pytree(jax.tree.map(lambda a: a[i, j], st.params))[0]
                flat0 = ravel_pytree(jax.tree.map(lambda a: a[i, j], st.params0))[0]
                assert flat.size == 34  # 9*3 + 3 + 3 + 1: iterations = the whole space
                top = np.linalg.eigvalsh(np.asarray(hessian(flat)))[-1]
                final = ds.isel(seed=i, lr=j, step=-1)
                # full Krylov space in float64: Lanczos equals eigh to rounding
                np.testing.assert_allclose(final.sharpness, top, rtol=1e-8)
                jt, j0 = np.asarray(jacobian(flat)), np.asarray(jacobian(flat0))
                k, k0 = jt @ jt.T, j0 @ j0.T
                lam = np.linalg.eigvalsh(k)[::-1]
                distance = 1 - np.sum(k * k0) / np.linalg.norm(k) / np.linalg.norm(k0)
                # float64 on both sides (the distance is a difference of O(1) numbers)
                np.testing.assert_allclose(final.ntk_eigenvalues, lam[:2], rtol=1e-10)
                np.testing.assert_allclose(final.kernel_distance, distance, rtol=1e-8,
                                           atol=1e-12)
        assert float(ds.kernel_distance.isel(step=-1).min()) > 1e-8  # training moved K
