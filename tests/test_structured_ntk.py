"""kernels.structured: the empirical NTK by structured derivatives (Novak, Sohl-Dickstein &
Schoenholz 2022) against the dense ``jax.jacrev`` J Jᵀ, on MLPs of every parametrization,
a linen CNN with a layer norm (the fallback path), tied weights; the cost model's choice;
and the in-loop observables, whose default (``auto``) now takes this method."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_kernels import dense_ntk

import dynamics as td
import kernels
from kernels import structured

# Float64 on both sides: each entry is a sum of at most a few thousand products of O(1)
# factors accumulated in a different order, so the two agree to ~1e-13 absolute on
# entries of size <= 100 (measured: at most 1.5e-14); 1e-10 leaves three decades.
ATOL = 1e-10


def ntk(f, params, x1, x2=None, **kw):
    """``kernels.empirical_ntk`` jitted (eager evaluation of the interpreter is slow)."""
    return jax.jit(lambda p, a, b: kernels.empirical_ntk(f, p, a, b, **kw))(params, x1, x2)


def jacrev_ntk(f, params, x1, x2):
    return jax.jit(lambda p, a, b: dense_ntk(f, p, a, b))(params, x1, x2)


def _inputs(shape1, shape2):
    return (jax.random.normal(jax.random.PRNGKey(0), shape1),
            jax.random.normal(jax.random.PRNGKey(1), shape2))


@pytest.mark.parametrize("depth,activation,parametrization,bias", [
    (0, "relu", "ntk", True),
    (1, "relu", "standard", True),
    (2, "tanh", "ntk", False),
    (3, "erf", "mup", True),
])
def test_mlp_equals_jacrev(depth, activation, parametrization, bias):
    """Every layer's weight is structured and its bias joins it, the parametrization's
    forward multipliers and the output scale come out in the cotangents."""
    with jax.enable_x64(True):
        model = td.MLP(width=16, depth=depth, out_dim=3, activation=activation,
                       parametrization=parametrization, bias=bias, sigma_b=0.4,
                       output_scale=1.7, gamma0=0.5)
        x1, x2 = _inputs((6, 5), (4, 5))
        params = model.init(jax.random.PRNGKey(2), x1)
        f = lambda p, x: td.models.apply_scaled(model, p, x)  # noqa: E731
        found = structured.analyse(f, params, x1)
        assert [layer.leaf for layer in found.layers] == \
            [i for i, path in enumerate(jax.tree_util.tree_leaves_with_path(params))
             if path[0][-1].key == "w"]
        want = jacrev_ntk(f, params, x1, x2)
        got = ntk(f, params, x1, x2, method="structured")
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
        got_trace = ntk(f, params, x1, x2, method="structured", trace=True)
        np.testing.assert_allclose(got_trace, jnp.trace(want, axis1=2, axis2=3) / 3, rtol=0,
                                   atol=ATOL)
        # every bias joins its weight's layer (the affine rule): nothing falls back
        assert found.fallback == () and all(
            (layer.bias is not None) == bias for layer in found.layers)
        # x2 = x1, blocked over data, with learning-rate multipliers that differ between
        # every weight and its bias
        mult = jax.tree.unflatten(jax.tree.structure(params),
                                  [0.5 + i for i in range(len(jax.tree.leaves(params)))])
        sym = ntk(f, params, x1, method="structured", batch_size=4, lr_multipliers=mult)
        ref = ntk(f, params, x1, method="jacobian", lr_multipliers=mult)
        np.testing.assert_allclose(sym, ref, rtol=0, atol=ATOL)


class CNN(nn.Module):
    """Strided, dilated and padded convolutions, a layer norm, a dense readout."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(3, (3, 3), strides=(2, 1))(x))
        x = nn.Conv(4, (2, 2), padding="VALID", kernel_dilation=(2, 1))(x)
        x = nn.LayerNorm()(x)
        return nn.Dense(2)(x.reshape(x.shape[0], -1))


def test_linen_cnn_with_layer_norm_equals_jacrev():
    with jax.enable_x64(True):
        model = td.from_linen(CNN, output_scale=0.8)
        x1, x2 = _inputs((4, 7, 6, 2), (3, 7, 6, 2))
        params = jax.tree.map(lambda a: a.astype(jnp.float64),
                              model.init(jax.random.PRNGKey(0), x1))
        f = lambda p, x: td.models.apply_scaled(model, p, x)  # noqa: E731
        found = structured.analyse(f, params, x1)
        names = [jax.tree_util.keystr(path) for path, _ in
                 jax.tree_util.tree_leaves_with_path(params)]
        assert sorted(names[layer.leaf] for layer in found.layers) == [
            "['Conv_0']['kernel']", "['Conv_1']['kernel']", "['Dense_0']['kernel']"]
        assert sorted(names[layer.bias] for layer in found.layers) == [
            "['Conv_0']['bias']", "['Conv_1']['bias']", "['Dense_0']['bias']"]
        assert {names[i] for i in found.fallback} == {"['LayerNorm_0']['scale']",
                                                       "['LayerNorm_0']['bias']"}
        want = jacrev_ntk(f, params, x1, x2)
        got = ntk(f, params, x1, x2, method="structured")
        np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_tied_and_unrecognised_parameters_fall_back():
    """A weight as the left operand, one shared over two positions and one inside a jitted
    call are structured; a
    weight used twice (tied), one scaled before its product and one inside a ``lax.scan``
    are not: they take the Jacobian path, exactly."""

    def f(p, x):
        h = (p["a_left"] @ x.T).T
        h = jnp.tanh(h @ p["tied"]) @ p["tied"].T
        h = jnp.sin(h @ (2.0 * p["scaled"]))
        h = jnp.cos(h.reshape(-1, 2, 3) @ p["pos"]).reshape(-1, 6)
        h = jax.lax.scan(lambda c, _: (jnp.tanh(c @ p["looped"]), None), h, None, length=2)[0]
        return jax.jit(jnp.matmul)(h, p["out"])  # a layer inside a jitted call

    with jax.enable_x64(True):
        shapes = {"a_left": (7, 5), "looped": (6, 6), "out": (6, 2), "pos": (3, 3),
                  "scaled": (7, 6), "tied": (7, 6)}
        keys = jax.random.split(jax.random.PRNGKey(3), len(shapes))
        params = {k: jax.random.normal(key, s) / 2 for key, (k, s) in zip(keys, shapes.items())}
        x1, x2 = _inputs((4, 5), (3, 5))
        found = structured.analyse(f, params, x1)
        assert [layer.leaf for layer in found.layers] == [0, 3, 2]  # sorted keys
        assert [layer.sizes for layer in found.layers] == [(1, 1, 5, 7), (1, 2, 3, 3),
                                                           (1, 1, 6, 2)]
        assert found.fallback == (1, 4, 5)
        got = ntk(f, params, x1, x2, method="structured")
        np.testing.assert_allclose(got, jacrev_ntk(f, params, x1, x2), rtol=0, atol=ATOL)


def test_float32_and_vmapped_over_runs():
    """float32, three runs under vmap, against the Jacobian method in float32: relative
    1e-5 (a few ulps of ~1e-7 on sums of a few hundred terms)."""
    model = td.MLP(width=32, depth=2, out_dim=4, activation="erf")
    x1, x2 = _inputs((8, 6), (5, 6))
    runs = jax.vmap(lambda k: model.init(k, x1))(jax.random.split(jax.random.PRNGKey(4), 3))
    f = lambda p, x: model.apply(p, x)  # noqa: E731
    got = jax.jit(jax.vmap(lambda p: kernels.empirical_ntk(f, p, x1, x2,
                                                           method="structured")))(runs)
    want = jax.jit(jax.vmap(lambda p: kernels.empirical_ntk(f, p, x1, x2,
                                                            method="jacobian")))(runs)
    assert got.dtype == jnp.float32 and got.shape == (3, 8, 5, 4, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def test_auto_picks_structured_when_cheapest():
    """Dense layers: the structured contraction n^2 O^2 (C + R) per layer undercuts the
    Jacobian's n^2 O^2 C R and the products' n^2 O [FP] (Novak et al. 2022, Table 1), so
    ``auto`` takes it; a model without a structured layer costs the Jacobian method plus
    nothing saved, and ``auto`` keeps the Jacobian or the products."""
    with jax.enable_x64(True):
        x = jnp.ones((8, 16))
        mlp = td.MLP(width=32, depth=2, out_dim=10)
        p = mlp.init(jax.random.PRNGKey(0), x)
        for trace in (False, True):
            cost = kernels.ntk_cost(lambda q, xx: mlp.apply(q, xx), p, x, trace=trace)
            assert cost["choice"] == "structured", cost
            assert cost["flops"]["structured"] < 0.5 * cost["flops"]["jacobian"], cost

        def elementwise(q, xx):  # every parameter falls back
            return jnp.tanh(xx * q["a"] + q["b"])

        q = {"a": jnp.ones(16), "b": jnp.zeros(16)}
        cost = kernels.ntk_cost(elementwise, q, x)
        assert cost["choice"] != "structured", cost


def test_kernel_observables_default_auto_unchanged_in_value():
    """KernelObservables' default is now ``auto`` (structured for the MLP): the sweep's
    values equal those of ``method="jacobian"`` (float64; the eigenvalues to round-off)."""
    task = td.tasks.make("teacher_student_mlp", n_train=16, n_test=6, dim=4,
                         out_dim=2).astype("float64")
    model = td.MLP(width=24, depth=2, out_dim=2, center=True, output_scale=1.7)
    out = {}
    for method in ("auto", "jacobian"):
        obs = kernels.KernelObservables(probe_size=10, top_k=3, **(
            {} if method == "auto" else {"method": method}))
        spec = td.Spec(model=model, task=task, steps=10, log_every=5,
                       observables=("loss", obs))
        out[method] = td.sweep(spec, seed=0, lr=[0.1, 0.6])
    assert kernels.KernelObservables().method == "auto"
    for name in ("kernel_distance", "kernel_alignment", "ntk_eigenvalues",
                 "ntk_effective_rank"):
        np.testing.assert_allclose(out["auto"][name], out["jacobian"][name], rtol=1e-9,
                                   atol=1e-12)
    assert float(out["auto"].kernel_distance.isel(step=-1).min()) > 1e-6
