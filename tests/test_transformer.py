"""``dynamics.models.transformer.Transformer`` and the instability observables against
oracles: a dense NumPy forward pass written from the module doc (loops over heads and
positions, the multipliers of the parametrization table written out, not read from
``role_scale``), the causal mask as bitwise invariance to future tokens, ``logsumexp`` of
the outputs, the learning-rate table in closed form in the width ratio ``r``, parameter
counts in closed form, and inside sweeps: the training loss falls, and the curvature and
kernel observables equal a dense Hessian and a dense Jacobian on (batch, T, vocab)
outputs with a position mask."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import dynamics as td
from dynamics.curvature import Sharpness
from dynamics.models.transformer import LAYER_NORM_EPS, Transformer
from dynamics.observables_transformer import (AttentionLogits, LogPartition,
                                              log_partition_statistics)
from kernels.observables import KernelObservables

V, T = 7, 5


def tokens(n=3, t=T, seed=0, vocab=V):
    return np.random.default_rng(seed).integers(0, vocab, (n, t)).astype(np.int32)


def randomised(params, seed=1, scale=0.5):
    """Every leaf replaced by fresh normals N(0, scale^2), so that every parameter,
    LayerNorm gains and biases included, changes the outputs."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [scale * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)]
    return jax.tree.unflatten(tree, new)


# -- the oracle: a dense forward pass written from the module doc ------------------------------


def multipliers(model: Transformer, sigma_w, sigma_b):
    """The forward multipliers of the module doc's table, written out per parametrization:
    ``(embedding, hidden(fan_in), bias, norm_gain, readout, attention_scale)``."""
    D, D0, d = model.width, model.base_width, model.head_dim
    d0 = D0 // model.heads
    if model.parametrization == "standard":
        return dict(emb=1.0, hidden=lambda n: 1.0, bias=1.0, gain=1.0, readout=1.0,
                    tau=1 / math.sqrt(d))
    if model.parametrization == "ntk":
        return dict(emb=sigma_w, hidden=lambda n: sigma_w / math.sqrt(n), bias=sigma_b,
                    gain=1.0, readout=sigma_w / math.sqrt(D), tau=1 / math.sqrt(d))
    return dict(emb=1.0, hidden=lambda n: 1.0, bias=1.0, gain=1.0, readout=D0 / D,
                tau=math.sqrt(d0) / d)


def reference(model: Transformer, params, x, sigma_w=1.0, sigma_b=0.1):
    """``(g, [attention logits s (batch, heads, T, T) per block])`` in NumPy float64, by
    loops over examples, heads and positions."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    m = multipliers(model, sigma_w, sigma_b)
    bias = model.bias
    D, H, d = model.width, model.heads, model.head_dim
    n, t = x.shape

    def ln(a, q):
        mu = a.mean(-1, keepdims=True)
        var = ((a - mu) ** 2).mean(-1, keepdims=True)
        out = (a - mu) / np.sqrt(var + LAYER_NORM_EPS) * (m["gain"] * q["gain"])
        return out + m["bias"] * q["bias"] if bias else out

    def lin(a, q):
        out = m["hidden"](q["w"].shape[0]) * (a @ q["w"])
        return out + m["bias"] * q["b"] if bias else out

    def gelu(z):
        return 0.5 * z * (1 + scipy.special.erf(z / math.sqrt(2)))

    h = m["emb"] * p["embedding"]["tokens"][x] + m["emb"] * p["embedding"]["positions"][:t]
    all_logits = []
    for blk in p["blocks"]:
        att = blk["attention"]
        a = ln(h, blk["norm1"])
        q, k, v = (lin(a, att[name]).reshape(n, t, H, d) for name in ("query", "key", "value"))
        if model.qk_layernorm:
            q, k = ln(q, att["query_norm"]), ln(k, att["key_norm"])
        s = np.zeros((n, H, t, t))
        o = np.zeros((n, t, H, d))
        for b in range(n):
            for head in range(H):
                for i in range(t):
                    for j in range(t):
                        s[b, head, i, j] = m["tau"] * q[b, i, head] @ k[b, j, head]
                    w = np.exp(s[b, head, i, : i + 1] - s[b, head, i, : i + 1].max())
                    w /= w.sum()
                    o[b, i, head] = w @ v[b, : i + 1, head]
        all_logits.append(s)
        h = h + lin(o.reshape(n, t, D), att["out"])
        mlp = blk["mlp"]
        h = h + lin(gelu(lin(ln(h, blk["norm2"]), mlp["hidden"])), mlp["out"])
    z = ln(h, p["final_norm"])
    if model.tied_embeddings:
        g = m["readout"] * z @ p["embedding"]["tokens"].T
    else:
        g = m["readout"] * z @ p["readout"]["w"]
    if bias:
        g = g + m["bias"] * p["readout"]["b"]
    return g, all_logits


CASES = [
    dict(parametrization="standard"),
    dict(parametrization="ntk", qk_layernorm=True),
    dict(parametrization="mup", base_width=4, qk_layernorm=True),
    dict(parametrization="mup", base_width=4, tied_embeddings=True, depth=2),
    dict(parametrization="ntk", tied_embeddings=True, bias=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_forward_equals_a_dense_numpy_reference(case):
    with jax.enable_x64(True):
        kw = dict(vocab_size=V, width=8, heads=2, depth=1, base_width=8, mlp_ratio=2)
        model = Transformer(**{**kw, **case})
        x = tokens()
        sigma_w, sigma_b = 1.3, 0.4
        hp = {"sigma_w": sigma_w, "sigma_b": sigma_b}
        params = randomised(model.init(jax.random.key(0), x, hp))
        assert jax.tree.leaves(params)[0].dtype == jnp.float64
        want, want_logits = reference(model, params, x, sigma_w, sigma_b)
        got = model.apply(params, x, hp)
        # float64: the same sums in another order, relative 1e-12 of O(1) values
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        got_logits = model.attention_logits(params, x, hp)
        for a, b in zip(got_logits, want_logits):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        # the largest causal |s_ts| per block, directly
        allowed = np.tril(np.ones((T, T), bool))
        direct = [np.abs(s[..., allowed]).max() for s in want_logits]
        np.testing.assert_allclose(model.max_attention_logits(params, x, hp), direct,
                                   rtol=1e-12)
        # the coordinate-check hook: forward order, the last is the raw output
        acts = model.activations(params, x, hp)
        names = ["embedding"] + [f"block{l}.{part}" for l in range(model.depth)
                                 for part in ("attention", "mlp_hidden", "mlp", "residual")]
        assert list(acts) == names + ["logits"]
        np.testing.assert_array_equal(acts["logits"], got)


def test_one_block_in_float32_equals_the_reference():
    model = Transformer(vocab_size=V, width=8, heads=2, depth=1, parametrization="mup",
                        base_width=4, qk_layernorm=True)
    x = tokens()
    params = randomised(model.init(jax.random.key(0), x))
    assert jax.tree.leaves(params)[0].dtype == jnp.float32
    want, _ = reference(model, params, x)
    # float32 rounding through LayerNorms, softmax and 4 matmuls of 8-32 terms: 1e-6
    # relative to outputs of size ~1
    np.testing.assert_allclose(model.apply(params, x), want, rtol=1e-5, atol=1e-6)


def test_the_largest_attention_logit_counts_only_allowed_positions():
    model = Transformer(vocab_size=V, width=8, heads=2, depth=2)
    x = tokens(n=2)
    allowed = np.tril(np.ones((T, T), bool))
    masked_larger = 0
    for seed in range(10):
        params = randomised(model.init(jax.random.key(0), x), seed=seed)
        logits = [np.asarray(s) for s in model.attention_logits(params, x)]
        direct = [np.abs(s[..., allowed]).max() for s in logits]
        # the same float32 values, reduced in another order: equal
        np.testing.assert_array_equal(model.max_attention_logits(params, x), direct)
        masked_larger += sum(np.abs(s).max() > m for s, m in zip(logits, direct))
    # the mask mattered: in some blocks a disallowed entry (s > t) was the largest
    assert masked_larger > 0


@pytest.mark.parametrize("qk_layernorm", [False, True])
def test_the_causal_mask_future_tokens_leave_earlier_outputs_bitwise_unchanged(qk_layernorm):
    model = Transformer(vocab_size=V, width=8, heads=2, depth=2, qk_layernorm=qk_layernorm)
    x = tokens(n=4, t=6)
    params = model.init(jax.random.key(0), x)
    apply = jax.jit(model.activations)
    before = apply(params, x)
    for cut in (1, 3, 5):
        y = x.copy()
        y[:, cut:] = (x[:, cut:] + 1 + np.arange(6 - cut)) % V
        after = apply(params, y)
        for name, a in before.items():
            assert np.array_equal(np.asarray(a)[:, :cut], np.asarray(after[name])[:, :cut]), name
        # and the future does change (the test can fail)
        assert not np.allclose(np.asarray(before["logits"])[:, cut:],
                               np.asarray(after["logits"])[:, cut:])
        # a prefix alone (fewer positions than the learned ones) gives the same outputs;
        # other shapes, so float32 matmuls may round differently: 1e-6 relative
        np.testing.assert_allclose(model.apply(params, x[:, :cut]),
                                   np.asarray(before["logits"])[:, :cut], rtol=1e-5,
                                   atol=1e-6)


# -- parametrization -------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_mup_at_the_base_width_is_standard(tied):
    x = tokens()
    kw = dict(vocab_size=V, width=16, heads=4, base_width=16, qk_layernorm=True,
              tied_embeddings=tied)
    sp, mup = Transformer(**kw), Transformer(parametrization="mup", **kw)
    p_sp, p_mup = sp.init(jax.random.key(3), x), mup.init(jax.random.key(3), x)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p_sp),
                                                    jax.tree.leaves(p_mup)))
    np.testing.assert_array_equal(sp.apply(p_sp, x), mup.apply(p_mup, x))
    assert sp.attention_scale() == mup.attention_scale() == 1 / math.sqrt(4)
    for family in ("sgd", "adam"):
        assert set(jax.tree.leaves(mup.lr_multipliers(p_mup, family=family))) == {1.0}
    # away from the base width they differ
    wide = dataclasses.replace(mup, width=32)
    assert wide.attention_scale() == math.sqrt(4) / 8  # sqrt(d_0) / d, d_0 = 4, d = 8
    assert Transformer(**{**kw, "width": 32}).attention_scale() == 1 / math.sqrt(8)


def one_adam_step_changes(parametrization, width, x, y, lr=1e-3):
    """RMS change of every ``activations`` entry after one Adam step on the cross-entropy,
    written by hand: Adam's first update is ``-lr c g / (|g| + eps)`` (its bias-corrected
    moments are ``g`` and ``g^2``), ``c`` the model's Adam learning-rate multipliers."""
    model = Transformer(vocab_size=V, width=width, heads=4, depth=2, base_width=32,
                        parametrization=parametrization)
    params = model.init(jax.random.key(0), x)

    def loss(p):
        logp = jax.nn.log_softmax(model.apply(p, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[..., None], -1))

    grads = jax.grad(loss)(params)
    mults = model.lr_multipliers(params, family="adam")
    new = jax.tree.map(lambda p, g, c: p - lr * c * g / (jnp.abs(g) + 1e-8), params, grads,
                       mults)
    before, after = model.activations(params, x), model.activations(new, x)
    return {k: float(jnp.sqrt(jnp.mean(jnp.square(after[k] - before[k])))) for k in before}


@pytest.mark.slow
def test_coordinate_check_after_one_adam_step():
    """Yang et al. 2022 (Tensor Programs V, Sec. 3 and Fig. 5, the coordinate check): under
    ``mup`` the change of every block's output and of the logits after an Adam step is
    width-independent; under ``standard`` it grows like the width (an entrywise update of
    size ``lr`` summed over ``fan_in`` aligned terms). Measured between widths 32 and 256
    (r = 8): slopes d log(RMS change) / d log(width) measured -0.19..0.05 (mup) and
    0.79..1.41 (standard, the logits the steepest); allowed: |slope| < 0.3 and > 0.6, the
    predicted 0 and 1 within finite-width corrections at width 32 of O(1/sqrt(32)) ~ 20%
    of a quantity (0.3 in slope is a factor 1.9 over r = 8). The embedding's change is
    an lr-sized step in both."""
    x, y = tokens(n=16, t=8, seed=0), tokens(n=16, t=8, seed=1)
    for parametrization in ("standard", "mup"):
        small, large = (one_adam_step_changes(parametrization, w, x, y) for w in (32, 256))
        for name in small:
            if name == "embedding":
                continue
            slope = math.log(large[name] / small[name]) / math.log(8)
            if parametrization == "mup":
                assert abs(slope) < 0.3, (name, slope)
            else:
                assert slope > 0.6, (name, slope)


def expected_lr(parametrization, family, path, r):
    """Yang et al. 2022 Tables 3 and 8 (mup, microsoft/mup's form) and the ntk column of
    ``role_scale``, written as closed forms in the width ratio ``r = D / D_0`` (every
    width dimension grows by ``r``; the vocabulary, positions and the readout's outputs do
    not)."""
    readout_bias = path == "readout.b"
    if path.endswith((".w",)) and path != "readout.w":
        kind = "hidden"
    elif path == "readout.w":
        kind = "readout"
    elif path.startswith("embedding"):
        kind = "embedding"
    else:
        kind = "vector"  # biases, norm gains and norm biases: one width dimension
    if parametrization == "standard":
        return 1.0
    if parametrization == "ntk":
        if family == "sgd":
            return 1.0
        # 1 / sqrt(r_in r_out)
        return {"hidden": 1 / r, "readout": r ** -0.5, "embedding": r ** -0.5,
                "vector": 1.0 if readout_bias else r ** -0.5}[kind]
    if family == "sgd":
        return {"hidden": 1.0, "readout": r, "embedding": r,
                "vector": 1.0 if readout_bias else r}[kind]
    return {"hidden": 1 / r, "readout": 1.0, "embedding": 1.0, "vector": 1.0}[kind]


@pytest.mark.parametrize("parametrization", ["standard", "ntk", "mup"])
@pytest.mark.parametrize("family", ["sgd", "adam"])
def test_lr_multipliers_follow_the_table(parametrization, family):
    r = 4
    model = Transformer(vocab_size=V, width=8 * r, heads=2, base_width=8, depth=2,
                        qk_layernorm=True, parametrization=parametrization)
    params = model.init(jax.random.key(0), tokens())
    mults = model.lr_multipliers(params, family=family)
    paths = jax.tree.leaves(model.parameters(T))
    assert len(paths) == len(jax.tree.leaves(mults)) == len(jax.tree.leaves(params))
    for p, got in zip(paths, jax.tree.leaves(mults)):
        assert got == pytest.approx(expected_lr(parametrization, family, p.path, r),
                                    rel=1e-12), p.path
    roles = dict(zip((p.path for p in paths), jax.tree.leaves(model.roles(params))))
    assert roles["embedding.tokens"] == roles["embedding.positions"] == "embedding"
    assert roles["blocks.1.attention.query.w"] == roles["blocks.0.mlp.out.w"] == "hidden"
    assert roles["readout.w"] == "readout" and roles["readout.b"] == "bias"
    assert roles["blocks.0.norm1.gain"] == roles["blocks.0.attention.key_norm.gain"] == "norm"
    assert roles["final_norm.bias"] == "bias"


def test_mup_initial_scales_and_zero_readout():
    D, D0 = 64, 16
    x = tokens()
    model = Transformer(vocab_size=V, width=D, base_width=D0, heads=4, depth=1,
                        parametrization="mup", sigma_w=1.5)
    params = model.init(jax.random.key(0), x)
    # sample standard deviations of n normals: standard error sigma / sqrt(2n); 5 errors
    for leaf, std in ((params["blocks"][0]["mlp"]["out"]["w"], 1.5 / math.sqrt(4 * D)),
                      (params["readout"]["w"], 1.5 / math.sqrt(D0)),
                      (params["embedding"]["tokens"], 1.5)):
        assert abs(float(np.std(leaf)) - std) < 5 * std / math.sqrt(2 * leaf.size)
    assert np.all(params["blocks"][0]["norm1"]["gain"] == 1)
    zero = dataclasses.replace(model, zero_readout=True)
    pz = zero.init(jax.random.key(0), x)
    assert np.all(pz["readout"]["w"] == 0)
    assert np.array_equal(pz["readout"]["b"], params["readout"]["b"])  # only w is zero
    assert float(np.abs(zero.apply(pz, x) - pz["readout"]["b"]).max()) == 0.0


def test_tied_and_untied_parameter_counts():
    D, r, L, depth = 16, 4, T, 3
    count = {}
    for tied in (False, True):
        model = Transformer(vocab_size=V, width=D, heads=4, depth=depth, mlp_ratio=r,
                            tied_embeddings=tied)
        params = model.init(jax.random.key(0), tokens())
        count[tied] = sum(a.size for a in jax.tree.leaves(params))
    per_block = (4 * (D * D + D)          # query, key, value, out
                 + (D * r * D + r * D)    # mlp hidden
                 + (r * D * D + D)        # mlp out
                 + 2 * 2 * D)             # two LayerNorms, gain and bias
    untied = V * D + L * D + depth * per_block + 2 * D + (D * V + V)
    assert count[False] == untied
    assert count[False] - count[True] == D * V


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, match", [
    (dict(width=10, heads=4), r"heads must divide width=10, got heads=4"),
    (dict(base_width=6, heads=4), r"heads must divide base_width=6"),
    (dict(parametrization="mu"), r"parametrization must be one of"),
    (dict(tied_embeddings=True, zero_readout=True), r"zero_readout must be False"),
    (dict(sigma_w=0.0), r"sigma_w must be > 0, got 0.0"),
    (dict(sigma_b=-1.0), r"sigma_b must be >= 0"),
    (dict(depth=-1), r"depth must be an int >= 0, got -1"),
    (dict(qk_layernorm=1), r"qk_layernorm must be True or False"),
])
def test_bad_fields_name_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        Transformer(vocab_size=V, **{"width": 16, "heads": 4, **kw})


def test_bad_inputs_are_refused():
    model = Transformer(vocab_size=V, width=8, heads=2, depth=1, max_len=4)
    x = tokens(t=4)
    params = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, vocab_size=7\), got 7"):
        model.init(jax.random.key(0), np.full((2, 3), V, np.int32))
    with pytest.raises(ValueError, match=r"got -1"):
        model.apply(params, np.full((2, 3), -1, np.int32))
    with pytest.raises(ValueError, match=r"must be integer tokens, got dtype float32"):
        model.init(jax.random.key(0), x.astype(np.float32))
    with pytest.raises(ValueError, match=r"T=5 positions, more than max_len=4"):
        model.apply(params, tokens(t=5))
    with pytest.raises(ValueError, match=r"shape \(batch, T\)"):
        model.apply(params, x[0])
    # traced tokens cannot be checked: out-of-range ones embed as NaN (never a clipped or
    # wrapped row), which reaches that example's outputs (through the attention's 0 * NaN
    # values at masked positions) and no other example's
    bad = jnp.asarray(tokens(n=3, t=4)).at[0, 2].set(V).at[1, 1].set(-1)
    out = np.asarray(jax.jit(model.apply)(params, bad))
    assert np.isnan(out[0, 2:]).all() and np.isnan(out[1, 1:]).all()
    assert np.isfinite(out[2]).all()
    with pytest.raises(ValueError, match=r"must be integer tokens"):
        td.Spec(model, td.tasks.digits(n_train=16, n_test=8), steps=1, log_every=1)


# -- instability observables ---------------------------------------------------------------


def test_log_partition_statistics_against_numpy():
    rng = np.random.default_rng(0)
    logits = 3 * rng.standard_normal((4, 3, 6))
    mask = rng.random((4, 3)) < 0.5
    mask[0, 0] = True
    log_z = np.log(np.exp(logits).sum(-1))
    with jax.enable_x64(True):
        got = log_partition_statistics(jnp.asarray(logits), jnp.asarray(mask))
        full = log_partition_statistics(jnp.asarray(logits))
    # float64: the same sums in another order
    np.testing.assert_allclose(got["log_z_mean"], log_z[mask].mean(), rtol=1e-12)
    np.testing.assert_allclose(got["log_z_max"], log_z[mask].max(), rtol=1e-12)
    np.testing.assert_allclose(got["z_loss"], (log_z[mask] ** 2).mean(), rtol=1e-12)
    np.testing.assert_allclose(full["log_z_mean"], log_z.mean(), rtol=1e-12)
    assert got["log_z_max"] != full["log_z_max"] or log_z[mask].max() == log_z.max()


@pytest.fixture(scope="module")
def modular():
    return td.tasks.modular_arithmetic(p=5, train_fraction=0.6, encoding="tokens")


def test_trains_in_a_width_sweep_with_the_instability_observables(modular):
    task = modular
    model = Transformer(vocab_size=task.out_dim, width=8, heads=2, depth=1, base_width=8,
                        parametrization="mup", qk_layernorm=False, output_scale=2.0)
    spec = td.Spec(model, task, td.optimizers.adam(2e-2), steps=30, log_every=15,
                   observables=["loss", AttentionLogits(), LogPartition()])
    ds, states = td.sweep(spec, seed=range(2), width=[8, 16], sigma_w=[1.0, 1.5],
                          return_state=True)
    assert ds.train_loss.dims == ("seed", "width", "sigma_w", "step")
    assert ds.max_attention_logit.dims == ("seed", "width", "sigma_w", "step", "block")
    loss = ds.train_loss
    # 30 Adam steps on 15 examples: the answer's cross-entropy at least halves
    assert (loss.isel(step=-1) < 0.5 * loss.isel(step=0)).all(), loss.values
    x, answer = task.x_train, task.mask_train
    hp = {"sigma_w": 1.5}  # a swept (traced) value
    for width in (8, 16):
        m = dataclasses.replace(model, width=width)
        at = dict(width=width, seed=1, sigma_w=1.5)
        for step, which in ((0, "params0"), (-1, "params")):
            # seed 1, sigma_w 1.5, initial or final
            params = jax.tree.map(lambda a: a[1, 1], getattr(states[(width,)], which))
            g = np.asarray(m.apply(params, x, hp), np.float64)
            log_z = scipy.special.logsumexp(2.0 * g, axis=-1)  # output_scale 2
            now = ds.sel(**at).isel(step=step)
            # float32 logits, float64 reduction here: ~1e-6 relative
            np.testing.assert_allclose(now.log_z_mean, log_z[answer].mean(), rtol=1e-5)
            np.testing.assert_allclose(now.log_z_max, log_z[answer].max(), rtol=1e-5)
            np.testing.assert_allclose(now.z_loss, (log_z[answer] ** 2).mean(), rtol=1e-5)
            np.testing.assert_allclose(now.max_attention_logit,
                                       m.max_attention_logits(params, x, hp), rtol=1e-5)


@pytest.mark.slow
def test_a_depth_sweep_pads_the_missing_blocks(modular):
    task = modular
    model = Transformer(vocab_size=task.out_dim, width=8, heads=2, depth=1)
    spec = td.Spec(model, task, td.optimizers.adam(1e-2), steps=1, log_every=1,
                   observables=["loss", AttentionLogits()])
    ds = td.sweep(spec, depth=[1, 2])
    logit = ds.max_attention_logit.isel(step=0)
    assert logit.dims == ("depth", "block") and list(ds.block.values) == [0, 1]
    assert np.isnan(logit.sel(depth=1, block=1)) and np.isfinite(logit.sel(depth=2)).all()
    # each tensor is drawn from its own path's key: block 0 starts the same at any depth
    assert logit.sel(depth=1, block=0) == logit.sel(depth=2, block=0)
    assert ds.block.attrs["long_name"] == "transformer block"
    assert ds.max_attention_logit.attrs["definition"].startswith("max |s_ts| per block")


def test_attention_logits_needs_attention():
    task = td.tasks.digits(n_train=16, n_test=8)
    with pytest.raises(ValueError, match=r"AttentionLogits needs a model with attention"):
        td.Spec(td.MLP(width=8, out_dim=10), task, steps=1, log_every=1,
                observables=[AttentionLogits()])
    with pytest.raises(ValueError, match=r"probe_size must be None or an int >= 1"):
        LogPartition(probe_size=0)


# -- curvature and kernels on (batch, T, vocab) outputs with a position mask -----------------


def test_sharpness_and_the_empirical_ntk_on_masked_sequence_outputs(modular):
    task = modular
    model = Transformer(vocab_size=task.out_dim, width=4, heads=2, depth=1, base_width=4,
                        mlp_ratio=1)  # 210 parameters: a dense Hessian is cheap
    n_probe = 6
    spec = td.Spec(model, task, td.optimizers.adam(1e-2), steps=2, log_every=2,
                   observables=[Sharpness(iterations=30),
                                KernelObservables(probe_size=n_probe, top_k=3)])
    ds = td.sweep(spec, seed=[0])
    params = td.init_params(spec, seed=0)
    x, y, mask = task.x_train, task.y_train, task.mask_train
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def loss(theta):
        g = model.apply(unravel(theta), x)
        logp = jax.nn.log_softmax(g, -1)
        nll = -jnp.take_along_axis(logp, y[..., None], -1)[..., 0]
        return jnp.sum(nll * mask) / jnp.sum(mask)

    hessian = np.asarray(jax.jit(jax.hessian(loss))(flat), np.float64)
    top = np.linalg.eigvalsh((hessian + hessian.T) / 2)[-1]
    # 30 Lanczos steps in float32 against a dense float32 Hessian: the top eigenvalue
    # converges to float32 rounding of sums over ~200 parameters (measured 3e-7)
    np.testing.assert_allclose(ds.sharpness.isel(step=0).item(), top, rtol=1e-5)

    # the traced NTK over positions and outputs, positions outside the loss masked out
    rows = np.arange(n_probe)

    def outputs(theta, m):
        g = model.apply(unravel(theta), x[rows])
        return (g * m[..., None]).reshape(n_probe, -1)

    def kernel(m):
        jac = np.asarray(jax.jit(jax.jacrev(outputs))(flat, m), np.float64)  # (n, T V, P)
        return np.einsum("iap,jap->ij", jac, jac) / (x.shape[1] * task.out_dim)  # mean

    k = kernel(mask[rows].astype(np.float32))
    eig = np.linalg.eigvalsh(k)[::-1]
    # the mask matters (else this test could not see it ignored): unmasked, the top
    # eigenvalue is another
    assert abs(np.linalg.eigvalsh(kernel(np.ones((n_probe, 3), np.float32)))[-1] / eig[0]
               - 1) > 0.1
    # float32 kernels of ~200-term sums: entries off by ~1e-6 relative to the largest,
    # so every eigenvalue by ~1e-6 of the top one (Weyl); 1e-5 of it allowed
    np.testing.assert_allclose(ds.ntk_eigenvalues.isel(step=0).squeeze(), eig[:3], rtol=0,
                               atol=1e-5 * eig[0])
    yy = (np.eye(task.out_dim)[y[rows]] * mask[rows][..., None]).reshape(n_probe, -1)
    h = np.eye(n_probe) - 1.0 / n_probe
    kc, yc = h @ k @ h, h @ yy @ yy.T @ h
    align = np.sum(kc * yc) / (np.linalg.norm(kc) * np.linalg.norm(yc))
    np.testing.assert_allclose(ds.kernel_alignment.isel(step=0).item(), align, rtol=1e-4)
