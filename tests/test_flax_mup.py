"""Tests for dynamics.models.flax_mup: muP for a user's flax model, its width dimensions
inferred from shapes. Oracles: microsoft/mup 1.0.0's own multipliers for the same layers
(tests/data/mup_reference.json, made by tests/data/make_mup_reference.py), the role table of
dynamics.parametrization written by hand for the MLP, hand-written forward passes, and the
first Adam step, whose entries are ``lr * multiplier`` in closed form."""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import dynamics as td
from dynamics import parametrization
from dynamics.models.flax_mup import MuPModel, with_mup

REFERENCE = json.loads(
    (pathlib.Path(__file__).parent / "data" / "mup_reference.json").read_text())
D_IN, K_OUT = REFERENCE["mlp"]["d_in"], REFERENCE["mlp"]["k_out"]
BASE = REFERENCE["base_width"]


class MLP(nn.Module):
    """The reference's MLP: input D -> N, hidden N -> N, readout N -> K."""
    width: int = 64
    out: int = K_OUT

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(self.width)(x))        # Dense_0
        h = jnp.tanh(nn.Dense(self.width)(h))        # Dense_1
        return nn.Dense(self.out)(h)                 # Dense_2, the readout


def mup_attention(query, key, value, **kw):
    """muP's 1/d logits: flax's dot_product_attention divides by sqrt(d) once more."""
    return nn.dot_product_attention(query / jnp.sqrt(query.shape[-1]), key, value, **kw)


class GPT(nn.Module):
    """The reference's GPT-like block in flax (attention kernels are 3-D DenseGeneral)."""
    width: int = 64
    vocab: int = REFERENCE["gpt"]["vocab"]
    heads: int = REFERENCE["gpt"]["heads"]
    positions: int = REFERENCE["gpt"]["positions"]

    @nn.compact
    def __call__(self, tokens):
        t = tokens.shape[-1]
        # an embedding of O(1) entries at every width (PyTorch's nn.Embedding; flax's
        # default Embed init has variance 1/width, which muP's rules do not assume)
        h = nn.Embed(self.vocab, self.width, embedding_init=nn.initializers.normal(1.0),
                     name="embed")(tokens)
        h = h + self.param("positions", nn.initializers.normal(0.02),
                           (self.positions, self.width))[:t]
        h = h + nn.MultiHeadDotProductAttention(
            self.heads, attention_fn=mup_attention, name="attn")(
            nn.LayerNorm(name="ln1")(h), mask=nn.make_causal_mask(tokens))
        up = nn.Dense(4 * self.width, name="up")(nn.LayerNorm(name="ln2")(h))
        h = h + nn.Dense(self.width, name="down")(nn.gelu(up))
        return nn.Dense(self.vocab, name="lm_head")(nn.LayerNorm(name="ln_f")(h))


def x_mlp(n=8, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, D_IN), jnp.float32)


def tokens(n=4, seed=0):
    t = REFERENCE["gpt"]["positions"]
    return jax.random.randint(jax.random.key(seed), (n, t), 0, REFERENCE["gpt"]["vocab"])


@functools.lru_cache(maxsize=None)
def mup_mlp(width, zero_readout=False):
    return with_mup(td.from_linen(MLP, width=width), x_mlp(), base=dict(width=BASE),
                    readout="Dense_2", zero_readout=zero_readout)


# flax path -> the reference's torch name (torch weights are (fan_out, fan_in))
MLP_NAMES = {"Dense_0/kernel": "input.weight", "Dense_0/bias": "input.bias",
             "Dense_1/kernel": "hidden.weight", "Dense_1/bias": "hidden.bias",
             "Dense_2/kernel": "readout.weight", "Dense_2/bias": "readout.bias"}
GPT_NAMES = {"embed/embedding": "embed.weight", "positions": "positions",
             "ln1/scale": "ln1.weight", "ln1/bias": "ln1.bias",
             "ln2/scale": "ln2.weight", "ln2/bias": "ln2.bias",
             "ln_f/scale": "ln_f.weight", "ln_f/bias": "ln_f.bias",
             "up/kernel": "up.weight", "up/bias": "up.bias",
             "down/kernel": "down.weight", "down/bias": "down.bias",
             "lm_head/kernel": "lm_head.weight", "lm_head/bias": "lm_head.bias",
             **{f"attn/{a}/{p}": b + (".weight" if p == "kernel" else ".bias")
                for a, b in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))
                for p in ("kernel", "bias")}}


def compare_with_reference(model, names, reference):
    table = model.table()
    assert set(table) == set(names)
    for path, name in names.items():
        s, ref = table[path], reference[name]
        # the ratios of small ints in float64 on both sides: equal to rounding
        np.testing.assert_allclose(s.lr_sgd, ref["sgd_lr"], rtol=1e-12, err_msg=path)
        np.testing.assert_allclose(s.lr_adam, ref["adam_lr"], rtol=1e-12, err_msg=path)
        assert (s.role == "hidden") == (ref["ninf"] == 2), path
        assert (s.role == "fixed") == (ref["ninf"] == 0), path
        if "output_multiplier" in ref:
            assert s.role == "readout"
            np.testing.assert_allclose(s.multiplier, ref["output_multiplier"], rtol=1e-12)
        else:
            assert s.multiplier == 1.0, path
        if name.endswith("weight") and ref["init_rescale"] is not None:
            # mup's factor is a float32 entrywise ratio: 1e-6 relative
            np.testing.assert_allclose(s.init_factor, ref["init_rescale"], rtol=1e-6,
                                       err_msg=path)


# ---------------------------------------------------------------- the reference

@pytest.mark.parametrize("width", [64, 128, 256])
def test_mlp_multipliers_equal_microsoft_mup(width):
    compare_with_reference(mup_mlp(width), MLP_NAMES, REFERENCE["mlp"]["widths"][str(width)])


@pytest.mark.parametrize("width", [64, 256])
def test_gpt_block_multipliers_equal_microsoft_mup(width):
    model = with_mup(td.from_linen(GPT, width=width), tokens(), base=dict(width=BASE),
                     readout="lm_head")
    ref = REFERENCE["gpt"]["widths"][str(width)]
    compare_with_reference(model, GPT_NAMES, ref)
    table = model.table()
    # 3-D attention kernels (width, heads, head_dim) and (heads, head_dim, width): matrix-like
    assert table["attn/query/kernel"].base_shape == (BASE, None, BASE // 4)
    assert table["attn/out/kernel"].base_shape == (None, BASE // 4, BASE)
    assert {table[p].role for p in ("embed/embedding", "ln1/scale", "attn/query/bias")} == {
        "embedding", "norm", "bias"}


def test_role_scale_directly_equals_microsoft_mup():
    """parametrization.role_scale("mup", ...) with the MLP's roles and fans, written by hand
    (the flax inference plays no part), equals mup's MuSGD / MuAdam / MuReadout."""
    for width in (64, 128, 256):
        ref = REFERENCE["mlp"]["widths"][str(width)]
        rows = {"input.weight": ("input", D_IN, width, None, BASE),
                "input.bias": ("bias", 1, width, None, BASE),
                "hidden.weight": ("hidden", width, width, BASE, BASE),
                "hidden.bias": ("bias", 1, width, None, BASE),
                "readout.weight": ("readout", width, K_OUT, BASE, None),
                "readout.bias": ("fixed", 1, K_OUT, None, None)}
        for name, (role, n_in, n_out, b_in, b_out) in rows.items():
            kw = dict(fan_in=n_in, fan_out=n_out, base_fan_in=b_in, base_fan_out=b_out)
            sgd = parametrization.role_scale("mup", role, family="sgd", **kw)
            adam = parametrization.role_scale("mup", role, family="adam", **kw)
            # ratios of small ints, float64: equal to rounding
            np.testing.assert_allclose(sgd.lr_multiplier, ref[name]["sgd_lr"], rtol=1e-12)
            np.testing.assert_allclose(adam.lr_multiplier, ref[name]["adam_lr"], rtol=1e-12)
            expected = ref[name].get("output_multiplier", 1.0)
            np.testing.assert_allclose(sgd.multiplier, expected, rtol=1e-12)
            if role == "readout":
                # mup's readout std after rescaling: torch's U(-1/sqrt(b), 1/sqrt(b)) =
                # 1/sqrt(3 b) at the base fan-in b, whatever the width; role_scale gives
                # sigma/sqrt(b). Empirical std of 3 x width draws: < 10% at 4 sigma
                np.testing.assert_allclose(ref[name]["init_std"] * np.sqrt(3), sgd.init_std,
                                           rtol=0.1)


# ---------------------------------------------------------------- the MLP by hand

def test_mlp_table_is_the_hand_written_role_table():
    width = 256
    r = width / BASE
    table = mup_mlp(width).table()
    expected = {  # role, (sgd, adam) lr multipliers, forward multiplier, init factor
        "Dense_0/kernel": ("input", (r, 1), 1, 1), "Dense_0/bias": ("bias", (r, 1), 1, 1),
        "Dense_1/kernel": ("hidden", (1, 1 / r), 1, 1), "Dense_1/bias": ("bias", (r, 1), 1, 1),
        "Dense_2/kernel": ("readout", (r, 1), 1 / r, np.sqrt(r)),
        "Dense_2/bias": ("fixed", (1, 1), 1, 1)}
    for path, (role, (sgd, adam), mult, init) in expected.items():
        s = table[path]
        assert s.role == role
        # powers of two and their square roots: float64 rounding only
        np.testing.assert_allclose([s.lr_sgd, s.lr_adam, s.multiplier, s.init_factor],
                                   [sgd, adam, mult, init], rtol=1e-12, err_msg=path)
    model = mup_mlp(width)
    p = model.init(jax.random.key(0), x_mlp())
    assert model.roles(p)["Dense_1"]["kernel"] == "hidden"
    assert model.lr_multipliers(p, family="adam")["Dense_1"]["kernel"] == 1 / r
    assert model.lr_multipliers(p)["Dense_0"]["kernel"] == r
    with pytest.raises(ValueError, match="optimizer family"):
        model.lr_multipliers(p, family="lion")


def test_init_stds_and_forward_multiplier():
    width = 1024
    r = width / BASE
    model, user = mup_mlp(width), td.from_linen(MLP, width=width)
    key, x = jax.random.key(3), x_mlp()
    p, q = model.init(key, x), user.init(key, x)
    # the user's draws, the readout's multiplied by sqrt(r) (MuReadout._rescale_parameters)
    np.testing.assert_array_equal(p["Dense_1"]["kernel"], q["Dense_1"]["kernel"])
    np.testing.assert_allclose(p["Dense_2"]["kernel"], np.sqrt(r) * q["Dense_2"]["kernel"],
                               rtol=1e-6)   # one float32 product
    # flax's lecun_normal: std 1/sqrt(fan_in); muP's readout: 1/sqrt(base fan-in).
    # Empirical stds of 1024 x 3 (readout) and 1024^2 (hidden) draws: 4 sigma is 5% / 0.3%
    np.testing.assert_allclose(np.std(p["Dense_2"]["kernel"]), 1 / np.sqrt(BASE), rtol=0.05)
    np.testing.assert_allclose(np.std(p["Dense_1"]["kernel"]), 1 / np.sqrt(width), rtol=0.01)
    # forward: the user's network with the readout kernel times 1/r, written by hand
    h = jnp.tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    h = jnp.tanh(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
    hand = h @ (p["Dense_2"]["kernel"] / r) + p["Dense_2"]["bias"]
    # float32, 1024-term sums in possibly another order: 1e-5
    np.testing.assert_allclose(model.apply(p, x), hand, rtol=1e-5, atol=1e-6)
    # zero readout
    z = mup_mlp(width, zero_readout=True).init(key, x)
    assert not np.any(z["Dense_2"]["kernel"]) and np.any(z["Dense_1"]["kernel"])


def test_at_the_base_width_the_model_is_the_users():
    model, user = mup_mlp(BASE), td.from_linen(MLP, width=BASE)
    key, x = jax.random.key(1), x_mlp()
    p = model.init(key, x)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p),
                                                     jax.tree.leaves(user.init(key, x))))
    np.testing.assert_array_equal(model.apply(p, x), user.apply(p, x))  # every factor is 1
    assert set(jax.tree.leaves(model.lr_multipliers(p, family="sgd"))) == {1.0}
    assert set(jax.tree.leaves(model.lr_multipliers(p, family="adam"))) == {1.0}


def test_activations_by_module_in_forward_order():
    model = mup_mlp(128)
    x = x_mlp()
    p = model.init(jax.random.key(0), x)
    acts = model.activations(p, x)
    assert list(acts) == ["Dense_0", "Dense_1", "Dense_2", "output"]
    h0 = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    h1 = jnp.tanh(h0) @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    # float32 sums of <= 128 terms in another order: 1e-5
    np.testing.assert_allclose(acts["Dense_0"], h0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acts["Dense_1"], h1, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(acts["Dense_2"], acts["output"])   # the readout is last
    np.testing.assert_array_equal(acts["output"], model.apply(p, x))  # the same call
    # the readout's activation is that of the effective (1/r-scaled) kernel
    np.testing.assert_allclose(
        acts["Dense_2"], jnp.tanh(h1) @ (p["Dense_2"]["kernel"] / 2) + p["Dense_2"]["bias"],
        rtol=1e-5, atol=1e-6)


class NnxMLP(nnx.Module):
    def __init__(self, width=16, *, rngs):
        self.l1 = nnx.Linear(D_IN, width, rngs=rngs)
        self.l2 = nnx.Linear(width, width, rngs=rngs)
        self.head = nnx.Linear(width, K_OUT, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.tanh(self.l2(jnp.tanh(self.l1(x)))))


def test_an_nnx_model_needs_no_inputs_and_gets_the_same_table():
    """nnx modules declare their shapes in the factory: no example input; the table is
    the linen MLP's, layer for layer."""
    model = with_mup(td.from_nnx(NnxMLP, width=256), base=dict(width=BASE), readout="head")
    linen = mup_mlp(256).table()
    for ours, theirs in (("l1", "Dense_0"), ("l2", "Dense_1"), ("head", "Dense_2")):
        for leaf in ("kernel", "bias"):
            a, b = model.table()[f"{ours}/{leaf}"], linen[f"{theirs}/{leaf}"]
            assert (a.role, a.lr_sgd, a.lr_adam, a.multiplier, a.init_factor) == (
                b.role, b.lr_sgd, b.lr_adam, b.multiplier, b.init_factor)
    p = model.init(jax.random.key(0), x_mlp())
    user = td.from_nnx(NnxMLP, width=256)
    q = user.init(jax.random.key(0), x_mlp())
    np.testing.assert_allclose(p["head"]["kernel"], 2.0 * q["head"]["kernel"], rtol=1e-6)
    # the forward pass sees the readout kernel times 1/4: the user's model with it
    scaled = {**p, "head": {**p["head"], "kernel": p["head"]["kernel"] / 4}}
    np.testing.assert_allclose(model.apply(p, x_mlp()), user.apply(scaled, x_mlp()),
                               rtol=1e-6, atol=1e-7)   # float32, the same ops
    with pytest.raises(ValueError, match="activations needs a linen model"):
        model.activations(p, x_mlp())


# ---------------------------------------------------------------- refused models

class Unwidened(nn.Module):
    width: int = 8          # never used: no shape depends on it

    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(jnp.tanh(nn.Dense(16)(x)))


class TwoHeads(nn.Module):
    width: int = 8

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(self.width)(x))
        return nn.Dense(2, name="head")(h) + nn.Dense(2, name="aux")(h)


class Cube(nn.Module):
    width: int = 8

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.normal(1.0), (self.width,) * 3)
        return jnp.einsum("bi,ijk->bk", x[:, :self.width], w)[:, :2] + nn.Dense(2)(x)


def test_refused_with_clear_errors():
    x = x_mlp()
    user = td.from_linen(MLP, width=128)
    with pytest.raises(ValueError, match=r"readout \['lm_head'\] names no parameter; the "
                                         r"modules are \['Dense_0', 'Dense_1', 'Dense_2'\]"):
        with_mup(user, x, base=dict(width=64), readout="lm_head")
    with pytest.raises(ValueError, match="names Dense_0/(bias|kernel) .*fan-out grows with width"):
        with_mup(user, x, base=dict(width=64), readout=["Dense_0", "Dense_2"])
    with pytest.raises(ValueError, match="names Dense_1/(bias|kernel) .*fan-out grows"):
        with_mup(user, x, base=dict(width=64), readout="Dense_1")    # the hidden layer
    with pytest.raises(ValueError, match="no parameter changes shape between base"):
        with_mup(td.from_linen(Unwidened, width=32), x, base=dict(width=8), readout="Dense_1")
    with pytest.raises(ValueError, match="base names 'hidden', which is not an int field of "
                                         r"MLP; its int fields are \['width'\]"):
        with_mup(user, x, base=dict(hidden=64), readout="Dense_2")
    with pytest.raises(ValueError, match="base must be a positive int|base\\['width'\\] must"):
        with_mup(user, x, base=dict(width=0), readout="Dense_2")
    with pytest.raises(ValueError, match="delta .* equals base"):
        with_mup(user, x, base=dict(width=64), delta=dict(width=64), readout="Dense_2")
    with pytest.raises(ValueError, match="readout must be a module path"):
        with_mup(user, x, base=dict(width=64), readout="")
    with pytest.raises(ValueError, match="inputs are needed for a linen model"):
        with_mup(user, base=dict(width=64), readout="Dense_2")
    with pytest.raises(ValueError, match=r"aux/kernel .* is a readout, but readout=\['head'\]"):
        with_mup(td.from_linen(TwoHeads, width=16), x, base=dict(width=8), readout="head")
    two = with_mup(td.from_linen(TwoHeads, width=16), x, base=dict(width=8),
                   readout=["head", "aux"])      # a second readout, named: accepted
    assert {s.role for p, s in two.table().items() if p.endswith("kernel")} == {
        "input", "readout"}
    with pytest.raises(ValueError, match="has 3 width dimensions"):
        with_mup(td.from_linen(Cube, width=8), x, base=dict(width=4), readout="Dense_0")
    model = mup_mlp(128)
    with pytest.raises(ValueError, match=r"inputs of shape \(5,\) per example"):
        model.init(jax.random.key(0), jnp.ones((2, 5)))


# ---------------------------------------------------------------- training

def test_first_adam_step_moves_effective_weights_as_the_table_predicts():
    """Adam's first update of an entry is ``-lr g / (|g| + eps)``: ``lr`` times the
    learning-rate multiplier whenever ``|g| >> eps``. The effective weights (forward
    multiplier times parameters) then move by ``lr * multiplier * lr_multiplier`` per
    entry: from width 64 to 256 (r = 4) hidden entries by 1/r (Adam's 1/fan-in), readout
    entries by 1/r (its 1/r multiplier), input entries by 1 (Yang et al. 2022, Table 3).
    The step is td.optimizers.adam's own transformation, built with the model's
    multipliers for the family "adam" as the training loop builds it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, D_IN)).astype(np.float32)
    y = np.tanh(x @ rng.standard_normal((D_IN, K_OUT))).astype(np.float32)
    lr, optimizer = 1e-3, td.optimizers.adam(1e-3)
    assert optimizer.family == "adam"
    steps = {}
    for width in (64, 256):
        model = mup_mlp(width)
        p0 = model.init(jax.random.key(0), x)
        tx = optimizer.build({"lr": lr}, 1, model.lr_multipliers(p0, family=optimizer.family),
                             roles=model.roles(p0))
        grads = jax.jit(jax.grad(lambda p: jnp.mean((model.apply(p, x) - y) ** 2)))(p0)
        updates, _ = jax.jit(tx.update)(grads, tx.init(p0), p0)
        p1 = jax.tree.map(lambda p, u: p + u, p0, updates)
        e0, e1 = model.effective(p0), model.effective(p1)
        steps[width] = {layer: float(np.median(np.abs(e1[layer]["kernel"]
                                                      - e0[layer]["kernel"]))) / lr
                        for layer in ("Dense_0", "Dense_1", "Dense_2")}
    # width 64 is the base: every entry moves by lr (median over entries with |g| >> eps)
    r = 4.0
    predicted = {"Dense_0": 1.0, "Dense_1": 1 / r, "Dense_2": 1 / r}
    for layer, ratio in predicted.items():
        # float32 differences of O(0.1) weights moved by ~1e-4: 1e-3 relative covers the
        # rounding (6e-8 * 0.1 / 2.5e-4 ~ 3e-5) and eps / |g| for the median entry
        np.testing.assert_allclose(steps[64][layer], 1.0, rtol=1e-3, err_msg=layer)
        np.testing.assert_allclose(steps[256][layer] / steps[64][layer], ratio, rtol=1e-3,
                                   err_msg=layer)


def test_a_mup_flax_model_trains_in_a_sweep_over_width_with_adam():
    """One Adam learning rate at widths 64 (the base: the user's own model) and 512: under
    muP the wider network trains at least as well ("wider is better", Yang et al. 2022,
    Fig. 1). The same sweep in the user's SP (measured, not run here to keep the test
    light; the coordinate check below contrasts SP) ends with the width-512 loss 11-14
    times the width-64 one: the learning rate is too large for the wider SP network."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, D_IN)).astype(np.float32)
    y = np.tanh(x @ rng.standard_normal((D_IN, K_OUT))).astype(np.float32)
    task = td.tasks.from_arrays(x, y, x[:16], y[:16])
    model = with_mup(td.from_linen(MLP, width=64), task, base=dict(width=64),
                     readout="Dense_2")
    spec = td.Spec(model, task, td.optimizers.adam(3e-2), steps=20, log_every=20)
    ds = td.sweep(spec, seed=[0, 1], width=[64, 512])
    assert ds.train_loss.dims == ("seed", "width", "step")
    assert np.all(np.isfinite(ds.train_loss))
    first, last = ds.train_loss.isel(step=0), ds.train_loss.isel(step=-1)
    # measured: 2.5 -> 0.04-0.11 at both widths, the width-512 loss 0.42-0.67 of the
    # width-64 one; the margins below are 2x or more
    assert np.all(last < 0.5 * first)
    assert np.all(last.sel(width=512) < 1.2 * last.sel(width=64))
    assert isinstance(td.models.base.with_static(model, "width", 512), MuPModel)


def test_coordinate_check_through_the_flax_activations():
    """microsoft/mup's coordinate check (Yang et al. 2022, Sec. D.1 and Fig. 5): the size
    of every layer's change of output after a few Adam steps does not depend on the width
    under muP; under SP the hidden layer's grows with it (Adam's O(1) entries summed over
    the fan-in). The activations are the flax adapter's (capture_intermediates)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, D_IN)).astype(np.float32)
    y = np.tanh(x @ rng.standard_normal((D_IN, K_OUT))).astype(np.float32)
    optimizer = td.optimizers.adam(1e-2)
    change = {}
    for name in ("mup", "sp"):
        for width in (64, 1024):
            model = mup_mlp(width) if name == "mup" else td.from_linen(MLP, width=width)
            p0 = p = model.init(jax.random.key(0), x)
            tx = optimizer.build({"lr": 1e-2}, 3, model.lr_multipliers(p, family="adam"))
            state = tx.init(p)
            grad = jax.jit(jax.grad(lambda p: jnp.mean((model.apply(p, x) - y) ** 2)))
            update = jax.jit(tx.update)
            for _ in range(3):
                updates, state = update(grad(p), state, p)
                p = jax.tree.map(jnp.add, p, updates)
            a0, a1 = model.activations(p0, x), model.activations(p, x)
            change[name, width] = {k: float(jnp.std(a1[k] - a0[k])) for k in a0}
    for layer in ("Dense_0", "Dense_1", "Dense_2"):
        # measured ratios 1024 / 64 under muP: 0.90, 0.88, 0.92 (finite-width corrections
        # of order 1/sqrt(64)); a width-growing change would give 16 (hidden) or 4
        ratio = change["mup", 1024][layer] / change["mup", 64][layer]
        assert 0.7 < ratio < 1.4, (layer, ratio)
    # SP: the hidden layer's change grows with width (measured 7.8 from 64 to 1024)
    assert change["sp", 1024]["Dense_1"] > 4 * change["sp", 64]["Dense_1"]


# flax path of the GPT block -> the path of the same parameter in td.Transformer
TRANSFORMER_NAMES = {
    "embed/embedding": "embedding.tokens", "positions": "embedding.positions",
    "ln1/scale": "blocks.0.norm1.gain", "ln1/bias": "blocks.0.norm1.bias",
    "ln2/scale": "blocks.0.norm2.gain", "ln2/bias": "blocks.0.norm2.bias",
    "ln_f/scale": "final_norm.gain", "ln_f/bias": "final_norm.bias",
    "up/kernel": "blocks.0.mlp.hidden.w", "up/bias": "blocks.0.mlp.hidden.b",
    "down/kernel": "blocks.0.mlp.out.w", "down/bias": "blocks.0.mlp.out.b",
    "lm_head/kernel": "readout.w", "lm_head/bias": "readout.b",
    **{f"attn/{a}/{p}": f"blocks.0.attention.{a}.{q}"
       for a in ("query", "key", "value", "out") for p, q in (("kernel", "w"), ("bias", "b"))}}


@pytest.mark.parametrize("width", [64, 256])
def test_width_inference_gives_the_builtin_transformers_multipliers(width):
    """The flax GPT block in muP by width inference and td.Transformer (one block, the same
    base width) have the same role, forward multiplier and SGD / Adam learning-rate
    multiplier for every parameter: both come from role_scale, one by inferred shapes and
    one by declared roles, so they agree exactly (products of small integer ratios)."""
    user = with_mup(td.from_linen(GPT, width=width), tokens(), base=dict(width=BASE),
                    readout="lm_head").table()
    gpt = REFERENCE["gpt"]
    builtin = td.Transformer(vocab_size=gpt["vocab"], width=width, depth=1,
                             heads=gpt["heads"], base_width=BASE, max_len=gpt["positions"],
                             parametrization="mup")
    described = {}
    for family in ("sgd", "adam"):
        for p in jax.tree.leaves(builtin.parameters(gpt["positions"], None, family),
                                 is_leaf=lambda x: hasattr(x, "path")):
            described.setdefault(p.path, {})[family] = p
    assert set(TRANSFORMER_NAMES.values()) == set(described)
    for path, name in TRANSFORMER_NAMES.items():
        ours, theirs = user[path], described[name]
        # the readout's bias has no width dimension: "fixed" there, "bias" in the table
        # of declared roles, with the same scales (multiplier and learning rates 1); a
        # raw parameter ("positions") is inferred "input", declared "embedding": both
        # vector-like, with the same rules
        vector = {"input", "embedding", "bias", "norm"}
        if ours.role != "fixed" and not {ours.role, theirs["sgd"].role} <= vector:
            assert ours.role == theirs["sgd"].role, path
        assert ours.multiplier == theirs["sgd"].scale.multiplier, path
        assert ours.lr_sgd == theirs["sgd"].scale.lr_multiplier, path
        assert ours.lr_adam == theirs["adam"].scale.lr_multiplier, path


@pytest.mark.slow
def test_a_users_mup_gpt_block_and_the_builtin_transformer_give_the_same_coordinate_check():
    """The coordinate check (Adam, 3 steps, widths 64..512) of the user's flax GPT block
    under with_mup and of td.Transformer with one block, both in muP with a zero readout:
    every layer's change is flat in width for both (|slope| <= 0.15, the Transformer
    tests' tolerance at these widths), and the output logits, which both models define
    the same way, have the same exponent within 0.1 (measured in the module's runs)."""
    from dynamics import coordinate_check as cc

    gpt = REFERENCE["gpt"]
    task = td.tasks.markov_chain(vocab_size=gpt["vocab"], seq_len=gpt["positions"],
                                 n_train=16, n_test=8, seed=0)
    opt = td.optimizers.adam(1e-2, eps=1e-12)
    user = with_mup(td.from_linen(GPT, width=BASE), task, base=dict(width=BASE),
                    readout="lm_head", zero_readout=True)
    builtin = td.Transformer(vocab_size=gpt["vocab"], width=BASE, depth=1, heads=gpt["heads"],
                             base_width=BASE, parametrization="mup", zero_readout=True)
    slopes = {}
    for name, model in (("user", user), ("builtin", builtin)):
        spec = td.Spec(model, task, opt, steps=3, log_every=1)
        ds, _ = td.coord_check(spec, [64, 128, 256, 512], steps=3, seeds=(0, 1),
                               probe_size=8, progress=False)
        slopes[name] = cc.slopes(ds).sel(step=[2, 3])
        assert float(np.abs(slopes[name]).max()) <= 0.15, (name, slopes[name].values)
    user_logits = slopes["user"].isel(module=-1)
    builtin_logits = slopes["builtin"].sel(module="logits")
    np.testing.assert_allclose(user_logits.values, builtin_logits.values, atol=0.1)
