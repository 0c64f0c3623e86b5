"""Tests for dynamics.models.flax_adapter: linen and nnx models, their fields as sweep axes,
batch statistics and dropout, and the one place where the output scale is applied."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import dynamics as td
from dynamics.models import FlaxModel, from_linen, from_nnx, outputs


class MLP(nn.Module):
    hidden: int = 16
    out: int = 3

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(self.hidden)(x))   # Dense_0
        return nn.Dense(self.out)(h)              # Dense_1


class Scaled(nn.Module):
    """A float field used as a multiplier: a swept (traced) value."""
    width: int = 8
    gain: float = 1.0

    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(self.gain * jnp.tanh(nn.Dense(self.width)(x)))


class Scalar(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)[:, 0]          # (batch,)


class BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(nn.Dense(8)(x))
        return nn.Dense(2)(jnp.tanh(h))


class DropoutNet(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        h = nn.Dropout(0.5, deterministic=deterministic)(jnp.tanh(nn.Dense(32)(x)))
        return nn.Dense(2)(h)


class NnxNet(nnx.Module):
    def __init__(self, width=16, *, rngs):
        self.l1 = nnx.Linear(3, width, rngs=rngs)
        self.bn = nnx.BatchNorm(width, momentum=0.5, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.l2 = nnx.Linear(width, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(self.drop(jnp.tanh(self.bn(self.l1(x)))))


def nnx_chain(rngs):
    return nnx.Sequential(nnx.Linear(3, 16, rngs=rngs), nnx.tanh, nnx.Linear(16, 2, rngs=rngs))


@pytest.fixture
def x():
    return jax.random.normal(jax.random.key(42), (8, 3), jnp.float32)


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(u, v) for u, v in zip(la, lb))


def task_for(out_dim, n=24, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = np.tanh(x @ rng.standard_normal((d, out_dim))).astype(np.float32)
    return td.tasks.from_arrays(x, y, x[:8], y[:8])


# ---------------------------------------------------------------- linen

def test_linen_init_is_module_init(x):
    module = MLP()
    key = jax.random.key(0)
    params = from_linen(module).init(key, x)
    ref = module.init(key, x)["params"]
    assert leaves_equal(params, ref)  # bitwise: the "params" stream is the key itself
    # a class with fields is the same module
    assert leaves_equal(from_linen(MLP, hidden=16, out=3).init(key, x), ref)


def test_linen_apply_matches_hand_computation(x):
    model = from_linen(MLP())
    p = model.init(jax.random.key(0), x)
    d0, d1 = p["Dense_0"], p["Dense_1"]
    hand = jnp.tanh(x @ d0["kernel"] + d0["bias"]) @ d1["kernel"] + d1["bias"]
    out = model.apply(p, x)
    assert out.shape == (8, 3) and out.dtype == jnp.float32
    # float32 with O(1) values: only matmul accumulation order may differ, ~1e-7 per op
    np.testing.assert_allclose(out, hand, rtol=1e-6, atol=1e-6)


def test_output_scale_and_centering_are_applied_in_one_place(x):
    model = from_linen(MLP(), output_scale=0.37)
    p = model.init(jax.random.key(0), x)
    g = model.apply(p, x)  # the module's outputs as they are, never scaled
    np.testing.assert_array_equal(g, MLP().apply({"params": p}, x))
    np.testing.assert_array_equal(outputs(g, None, {"output_scale": 0.37}), jnp.float32(0.37) * g)
    np.testing.assert_array_equal(outputs(g, g, {"output_scale": 5.0}), np.zeros_like(g))
    # td.models.apply_scaled uses the model's own output scale by default
    np.testing.assert_array_equal(td.models.apply_scaled(model, p, x), jnp.float32(0.37) * g)


def test_linen_1d_output_is_reshaped(x):
    model = from_linen(Scalar())
    p = model.init(jax.random.key(0), x)
    out = model.apply(p, x)
    assert out.shape == (8, 1)
    np.testing.assert_array_equal(out[:, 0], Scalar().apply({"params": p}, x))  # pure reshape


def test_fields_int_static_float_swept(x):
    model = from_linen(Scaled, width=8, gain=1.0, output_scale=2.0, name="scaled")
    assert model.hparams() == {"output_scale": 2.0, "gain": 1.0}
    assert model.static_fields() == {"width": 8}
    assert model.config() == {"model": "flax.linen", "name": "scaled",
                              "fields": {"gain": 1.0, "width": 8}, "output_scale": 2.0,
                              "center": False}
    json.dumps(model.config())
    wider = model.with_static("width", 12)
    assert wider.init(jax.random.key(0), x)["Dense_1"]["kernel"].shape == (3, 12)  # built second
    assert wider == from_linen(Scaled, width=12, gain=1.0, output_scale=2.0, name="scaled")
    assert hash(wider) == hash(from_linen(Scaled, width=12, gain=1.0, output_scale=2.0,
                                          name="scaled"))
    # a float field is traced: the gain reaches the module inside jit + vmap
    p = model.init(jax.random.key(0), x)
    gains = jnp.array([0.5, 2.0], jnp.float32)
    swept = jax.jit(jax.vmap(lambda g: model.apply(p, x, {"gain": g})))(gains)
    for i, g in enumerate([0.5, 2.0]):
        direct = Scaled(width=8, gain=g).apply({"params": p}, x)
        np.testing.assert_allclose(swept[i], direct, rtol=1e-6, atol=1e-6)  # jit vs eager
    assert not np.allclose(swept[0], swept[1], rtol=1e-2)
    with pytest.raises(ValueError, match="not a static field"):
        model.with_static("gain", 3.0)


def test_linen_grad_matches_direct(x):
    module = MLP()
    model = from_linen(module)
    p = model.init(jax.random.key(0), x)
    y = jnp.sin(x[:, :3])

    def mse(out):
        return jnp.mean((out - y) ** 2)

    g_adapter = jax.grad(lambda q: mse(model.apply(q, x)))(p)
    g_direct = jax.grad(lambda q: mse(module.apply({"params": q}, x)))(p)
    assert leaves_equal(g_adapter, g_direct)  # bitwise: the same call
    assert any(np.any(np.asarray(l) != 0) for l in jax.tree.leaves(g_adapter))


def test_batch_norm_state_is_carried_and_evaluated_with_running_statistics(x):
    model = from_linen(BatchNormNet)
    assert model.train_arg == "train" and model.stochastic
    params, state = model.init_variables(jax.random.key(0), x)
    assert set(state) == {"batch_stats"}
    out, new = model.apply_train(params, x, state=state)
    ref_out, ref_new = BatchNormNet().apply({"params": params, **state}, x, train=True,
                                            mutable=["batch_stats"])
    np.testing.assert_array_equal(out, ref_out)
    assert leaves_equal(new, ref_new)
    # momentum 0.5: the running mean moves halfway to the batch mean of the dense layer
    h = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    np.testing.assert_allclose(new["batch_stats"]["BatchNorm_0"]["mean"], 0.5 * h.mean(0),
                               rtol=1e-5, atol=1e-6)  # float32 means of 8 values
    evaluated = model.apply(params, x, state=new)
    np.testing.assert_array_equal(
        evaluated, BatchNormNet().apply({"params": params, **new}, x, train=False))


def test_dropout_key_and_mode(x):
    model = from_linen(DropoutNet)
    assert model.train_arg == "deterministic"
    p = model.init(jax.random.key(0), x)
    a = model.apply(p, x, train=True, key=jax.random.key(1))
    b = model.apply(p, x, train=True, key=jax.random.key(1))
    c = model.apply(p, x, train=True, key=jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(model.apply(p, x), DropoutNet().apply({"params": p}, x))


# ---------------------------------------------------------------- nnx

def test_nnx_apply_matches_direct_module(x):
    model = from_nnx(nnx_chain)
    key = jax.random.key(7)
    p = model.init(key, x)
    direct = nnx_chain(nnx.Rngs(key))
    graphdef, state = nnx.split(direct, nnx.Param)
    ref = nnx.merge(graphdef, state)(x)
    assert isinstance(p, dict)
    assert leaves_equal(p, nnx.to_pure_dict(state))  # bitwise: same factory, same key
    np.testing.assert_array_equal(model.apply(p, x), ref)  # same params, same ops
    # float32: jit may fuse tanh/matmul differently from eager, ~1 ulp (1e-7 relative)
    np.testing.assert_allclose(jax.jit(model.apply)(p, x), ref, rtol=1e-6, atol=1e-6)
    assert not model.stochastic


def test_nnx_vmapped_init_and_apply(x):
    model = from_nnx(nnx_chain)
    keys = jax.random.split(jax.random.key(0), 4)
    ps = jax.vmap(lambda k: model.init(k, x))(keys)
    single = [model.init(k, x) for k in keys]
    outs = jax.vmap(model.apply, in_axes=(0, None))(ps, x)
    assert outs.shape == (4, 8, 2)
    for i in range(4):
        assert leaves_equal(jax.tree.map(lambda a: a[i], ps), single[i])  # init vmap is bitwise
        # float32: batched vs unbatched matmul may reorder the 16-term sums, ~1e-7 relative
        np.testing.assert_allclose(outs[i], model.apply(single[i], x), rtol=1e-6, atol=1e-6)


def test_nnx_batch_norm_and_dropout(x):
    model = from_nnx(NnxNet, width=6)
    assert model.static_fields() == {"width": 6} and model.stochastic
    params, state = model.init_variables(jax.random.key(0), x)
    assert params["l1"]["kernel"].shape == (3, 6)
    assert set(state["bn"]) == {"mean", "var"}
    t1, s1 = model.apply_train(params, x, state=state, key=jax.random.key(1))
    t2, _ = model.apply_train(params, x, state=state, key=jax.random.key(1))
    t3, _ = model.apply_train(params, x, state=state, key=jax.random.key(2))
    np.testing.assert_array_equal(t1, t2)  # the key decides the dropout mask
    assert not np.allclose(t1, t3)
    h = x @ params["l1"]["kernel"] + params["l1"]["bias"]
    # momentum 0.5: halfway from the initial mean 0 to the batch mean (float32, 8 rows)
    np.testing.assert_allclose(s1["bn"]["mean"], 0.5 * h.mean(0), rtol=1e-5, atol=1e-6)
    # evaluation: running statistics, no dropout; equal to the module in eval mode
    direct = NnxNet(6, rngs=nnx.Rngs(0))
    graph, p_state, rest = nnx.split(direct, nnx.Param, ...)
    nnx.replace_by_pure_dict(p_state, params)
    nnx.replace_by_pure_dict(rest, {**nnx.to_pure_dict(rest), **s1})
    direct = nnx.merge(graph, p_state, rest)
    direct.eval()
    np.testing.assert_allclose(model.apply(params, x, state=s1), direct(x), rtol=1e-6,
                               atol=1e-6)  # float32, same ops


def test_nnx_optax_step_lowers_loss(x):
    model = from_nnx(nnx_chain)
    p = model.init(jax.random.key(1), x)
    y = jnp.stack([jnp.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)

    def loss(q):
        return jnp.mean((model.apply(q, x) - y) ** 2)

    opt = optax.sgd(0.1)
    state = opt.init(p)
    updates, _ = opt.update(jax.grad(loss)(p), state, p)
    p2 = optax.apply_updates(p, updates)
    assert loss(p2) < loss(p)


# ---------------------------------------------------------------- in a spec

def test_wrong_out_dim_and_input_shape_are_refused_before_compiling():
    with pytest.raises(ValueError, match=r"outputs of shape \(3,\).*\(2,\)"):
        td.Spec(from_linen(MLP()), task_for(2))
    with pytest.raises(ValueError, match="cannot take the task's inputs of shape"):
        td.Spec(from_nnx(nnx_chain), td.tasks.from_arrays(np.ones((8, 5)), np.ones((8, 2))))
    td.Spec(from_nnx(nnx_chain), task_for(2))  # the right shapes pass


def test_float64_spec_gives_float64_flax_parameters():
    task = task_for(3)
    for model in (from_linen(MLP()), from_nnx(NnxNet, width=4)):
        spec = td.Spec(model if model.kind == "flax.linen" else model,
                       task if model.kind == "flax.linen" else task_for(2), dtype="float64")
        params = td.init_params(spec, seed=0)
        assert {np.asarray(a).dtype for a in jax.tree.leaves(params)} == {np.dtype("float64")}


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_output_scale_must_be_positive(scale):
    with pytest.raises(ValueError, match="output_scale must be a finite real number > 0"):
        from_linen(MLP(), output_scale=scale)
    with pytest.raises(ValueError, match="output_scale must be a finite real number > 0"):
        from_nnx(nnx_chain, output_scale=scale)
    assert isinstance(from_linen(MLP(), output_scale=1e-3), FlaxModel)


def test_bad_fields_and_factories():
    with pytest.raises(ValueError, match="need a factory"):
        from_linen(MLP(), hidden=4)
    with pytest.raises(ValueError, match="field hidden must be an int, float, str or bool"):
        from_linen(MLP, hidden=[4])
    with pytest.raises(ValueError, match="train_arg must be one of"):
        from_linen(MLP, train_arg="mode")
