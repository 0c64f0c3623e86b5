"""Tests for dynamics.flax_adapter (linen and nnx wrappers of the Model protocol)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

from dynamics.flax_adapter import FlaxModel, from_linen, from_nnx


class MLP(nn.Module):
    hidden: int = 16
    out: int = 3

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(self.hidden)(x))   # Dense_0
        return nn.Dense(self.out)(h)              # Dense_1


class Scalar(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)[:, 0]          # (batch,)


class WithBatchNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=True)(nn.Dense(4)(x))


def nnx_chain(rngs):
    return nnx.Sequential(nnx.Linear(3, 16, rngs=rngs), nnx.tanh, nnx.Linear(16, 2, rngs=rngs))


@pytest.fixture
def x():
    return jax.random.normal(jax.random.key(42), (8, 3), jnp.float32)


def leaves_equal(a, b):
    return all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ---------------------------------------------------------------- linen

def test_linen_init_is_module_init(x):
    module = MLP()
    key = jax.random.key(0)
    params = from_linen(module).init(key, x)
    ref = module.init(key, x)["params"]
    assert jax.tree.structure(params) == jax.tree.structure(ref)
    assert leaves_equal(params, ref)  # bitwise: same call, same key


def test_linen_apply_matches_hand_computation(x):
    model = from_linen(MLP())
    p = model.init(jax.random.key(0), x)
    d0, d1 = p["Dense_0"], p["Dense_1"]
    hand = jnp.tanh(x @ d0["kernel"] + d0["bias"]) @ d1["kernel"] + d1["bias"]
    out = model.apply(p, x)
    assert out.shape == (8, 3) and out.dtype == jnp.float32
    # float32 with O(1) values: only matmul accumulation order may differ, ~1e-7 per op
    np.testing.assert_allclose(out, hand, rtol=1e-6, atol=1e-6)


def test_linen_output_scale_multiplies_exactly(x):
    p = from_linen(MLP()).init(jax.random.key(0), x)
    base = from_linen(MLP()).apply(p, x)
    scaled = from_linen(MLP(), output_scale=0.37).apply(p, x)
    np.testing.assert_array_equal(scaled, jnp.float32(0.37) * base)  # the same single float32 multiply
    # hparams override output_scale, also as traced values under jit + vmap
    scales = jnp.array([0.5, 4.0], jnp.float32)
    swept = jax.jit(jax.vmap(lambda s: from_linen(MLP()).apply(p, x, {"output_scale": s})))(scales)
    # float32: jit fuses tanh/matmul differently from eager, ~1 ulp (1e-7 relative) apart
    np.testing.assert_allclose(swept, scales[:, None, None] * base, rtol=1e-6, atol=1e-6)
    assert not np.allclose(swept[0], swept[1], rtol=1e-2)  # the two scales really differ


def test_linen_grad_matches_direct(x):
    module = MLP()
    model = from_linen(module)
    p = model.init(jax.random.key(0), x)
    y = jnp.sin(x[:, :3])

    def mse(out):
        return jnp.mean((out - y) ** 2)

    g_adapter = jax.grad(lambda q: mse(model.apply(q, x)))(p)
    g_direct = jax.grad(lambda q: mse(module.apply({"params": q}, x)))(p)
    # bitwise: the adapter only adds a multiply by exactly 1.0 (forward and backward)
    assert leaves_equal(g_adapter, g_direct)
    assert any(np.any(np.asarray(l) != 0) for l in jax.tree.leaves(g_adapter))


def test_linen_1d_output_is_reshaped(x):
    model = from_linen(Scalar())
    p = model.init(jax.random.key(0), x)
    out = model.apply(p, x)
    assert out.shape == (8, 1)
    np.testing.assert_array_equal(out[:, 0], Scalar().apply({"params": p}, x))  # pure reshape
    model.validate_data(x, 1)


def test_protocol_helpers(x):
    model = from_linen(MLP(), output_scale=2.0, center=True, name="mlp")
    p = model.init(jax.random.key(0), x)
    assert model.hparams() == {"output_scale": 2.0}
    mult = model.lr_multipliers(p)
    assert jax.tree.structure(mult) == jax.tree.structure(p)
    assert all(m == 1.0 for m in jax.tree.leaves(mult))
    cfg = model.config()
    assert cfg == {"model": "flax.linen", "name": "mlp", "output_scale": 2.0, "center": True}
    json.dumps(cfg)
    assert from_nnx(nnx_chain).config()["model"] == "flax.nnx"
    assert from_nnx(nnx_chain).config()["name"] == "nnx_chain"
    # the loop passes all of a run's hyperparameters; the model reads only its own
    out = model.apply(p, x, {"output_scale": 3.0, "lr": 0.1})
    np.testing.assert_array_equal(out, 1.5 * model.apply(p, x))


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


def test_nnx_vmapped_init_and_apply(x):
    model = from_nnx(nnx_chain)
    keys = jax.random.split(jax.random.key(0), 4)
    ps = jax.vmap(lambda k: model.init(k, x))(keys)
    single = [model.init(k, x) for k in keys]
    for leaf, ref in zip(jax.tree.leaves(ps), jax.tree.leaves(single[0])):
        assert leaf.shape == (4,) + ref.shape
    kernels = ps["layers"][0]["kernel"]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(kernels[i], kernels[j])
    outs = jax.vmap(model.apply, in_axes=(0, None))(ps, x)
    assert outs.shape == (4, 8, 2)
    for i in range(4):
        assert leaves_equal(jax.tree.map(lambda a: a[i], ps), single[i])  # init vmap is bitwise
        # float32: batched vs unbatched matmul may reorder the 16-term sums, ~1e-7 relative
        np.testing.assert_allclose(outs[i], model.apply(single[i], x), rtol=1e-6, atol=1e-6)


def test_nnx_optax_step_lowers_loss(x):
    model = from_nnx(nnx_chain)
    p = model.init(jax.random.key(1), x)
    y = jnp.stack([jnp.sin(x[:, 0]), x[:, 1] * x[:, 2]], axis=1)

    def loss(q):
        return jnp.mean((model.apply(q, x) - y) ** 2)

    opt = optax.sgd(0.1)
    state = opt.init(p)

    @jax.jit
    def step(q, s):
        updates, s = opt.update(jax.grad(loss)(q), s, q)
        return optax.apply_updates(q, updates), s

    p2, _ = step(p, state)
    assert jax.tree.structure(p2) == jax.tree.structure(p)
    assert not leaves_equal(p2, p)
    assert loss(p2) < loss(p)


# ---------------------------------------------------------------- errors

def test_linen_batchnorm_rejected(x):
    model = from_linen(WithBatchNorm())
    with pytest.raises(ValueError, match="batch_stats"):
        model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="batch_stats"):
        model.validate_data(x, 4)


def test_nnx_non_param_state_rejected():
    with pytest.raises(ValueError, match="BatchStat"):
        from_nnx(lambda r: nnx.Sequential(nnx.Linear(3, 4, rngs=r), nnx.BatchNorm(4, rngs=r)))


def test_wrong_out_dim(x):
    for model in (from_linen(MLP()), from_nnx(nnx_chain)):
        out_dim = 3 if model.kind == "flax.linen" else 2
        model.validate_data(x, out_dim)  # the correct one passes
        with pytest.raises(ValueError) as err:
            model.validate_data(x, 5)
        assert str(out_dim) in str(err.value) and "5" in str(err.value)


def test_input_dim_mismatch(x):
    model = from_nnx(nnx_chain)  # first layer takes 3 features
    with pytest.raises(ValueError, match="cannot take inputs of shape"):
        model.validate_data(jnp.ones((8, 5)), 2)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan])
def test_output_scale_must_be_positive(scale):
    with pytest.raises(ValueError, match="output_scale must be > 0"):
        from_linen(MLP(), output_scale=scale)
    with pytest.raises(ValueError, match="output_scale must be > 0"):
        from_nnx(nnx_chain, output_scale=scale)
    assert isinstance(from_linen(MLP(), output_scale=1e-3), FlaxModel)
