"""Models beyond the MLP in sweeps: a linen CNN on digit images, an nnx model, a causal
transformer on modular addition with integer tokens and the loss on the answer only,
batch statistics and dropout. Every run alone equals its place in a sweep; the engine's
plan reads XLA's memory analysis; the data are arguments of the compiled programs;
observables carry state."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import dynamics as td
from dynamics import losses, memory, observables, planning, programs


class CNN(nn.Module):
    channels: int = 4

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(self.channels, (3, 3))(x))
        h = nn.relu(nn.Conv(self.channels, (3, 3), strides=2)(h))
        return nn.Dense(10)(h.mean(axis=(1, 2)))  # global average pooling, readout


class Block(nn.Module):
    """One pre-LayerNorm causal transformer block with learned positions."""
    vocab: int = 8
    width: int = 16
    heads: int = 2

    @nn.compact
    def __call__(self, tokens):
        t = tokens.shape[-1]
        h = nn.Embed(self.vocab, self.width)(tokens)
        h = h + self.param("positions", nn.initializers.normal(0.02), (t, self.width))
        mask = nn.make_causal_mask(tokens)
        h = h + nn.MultiHeadDotProductAttention(self.heads)(nn.LayerNorm()(h), mask=mask)
        h = h + nn.Dense(self.width)(nn.gelu(nn.Dense(4 * self.width)(nn.LayerNorm()(h))))
        return nn.Dense(self.vocab)(nn.LayerNorm()(h))  # (batch, T, vocab)


class NnxNet(nnx.Module):
    def __init__(self, width=8, *, rngs):
        self.l1 = nnx.Linear(64, width, rngs=rngs)
        self.l2 = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


class BNDropout(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(16)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = nn.Dropout(0.3, deterministic=not train)(nn.relu(h))
        return nn.Dense(10)(h)


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(u, v) for u, v in zip(la, lb))


def check_alone_equals_swept(spec, axes, rtol):
    """Run (0, first lr) and (1, last lr) alone against their places in the sweep."""
    ds, states = td.sweep(spec, return_state=True, **axes)
    lrs = axes["lr"]
    for i, (seed, j) in enumerate([(0, 0), (1, len(lrs) - 1)]):
        alone, st = td.run(spec, seed=seed, lr=lrs[j], return_state=True)
        params0 = jax.tree.map(lambda a: a[0, 0], st[()].params0)  # (seed, lr) of size 1
        # initial parameters: bitwise the same draws
        assert leaves_equal(params0, jax.tree.map(lambda a: a[seed, j], states[()].params0))
        assert leaves_equal(td.init_params(spec, seed=seed), params0)
        # trajectories: batched vs unbatched float32 matmuls, rounding at most
        np.testing.assert_allclose(ds.train_loss.sel(seed=seed, lr=lrs[j]), alone.train_loss,
                                   rtol=rtol)
    return ds, states


def test_a_linen_cnn_trains_on_digit_images():
    task = td.tasks.digits(n_train=64, n_test=32, shape="image")
    spec = td.Spec(td.from_linen(CNN, channels=4), task, td.optimizers.sgd(0.5), steps=8,
                   log_every=4)
    ds, _ = check_alone_equals_swept(spec, dict(seed=range(2), lr=[0.2, 0.5]), rtol=2e-5)
    assert (ds.train_loss.isel(step=-1) < ds.train_loss.isel(step=0)).all()
    wide = td.sweep(spec, channels=[2, 6])
    assert wide.train_loss.dims == ("channels", "step")
    assert float(wide.param_norm.sel(channels=6)[0]) > float(wide.param_norm.sel(channels=2)[0])


def test_an_nnx_model_in_a_sweep():
    task = td.tasks.digits(n_train=64, n_test=32)
    spec = td.Spec(td.from_nnx(NnxNet, width=8), task, td.optimizers.sgd(0.5), steps=6,
                   log_every=3)
    check_alone_equals_swept(spec, dict(seed=range(2), lr=[0.2, 0.5]), rtol=1e-5)
    assert td.sweep(spec, width=[4, 8]).train_loss.dims == ("width", "step")


def test_a_causal_transformer_on_modular_addition_with_the_loss_on_the_answer():
    task = td.tasks.modular_arithmetic(p=7, train_fraction=0.5, encoding="tokens")
    model = td.from_linen(Block, vocab=8, width=16, heads=2)
    spec = td.Spec(model, task, td.optimizers.adam(3e-3), steps=6, log_every=3)
    ds, states = check_alone_equals_swept(spec, dict(seed=range(2), lr=[1e-3, 3e-3]),
                                          rtol=2e-5)
    # the loss the loop logs is the hand-written cross-entropy of the answer token only
    params = jax.tree.map(lambda a: a[1, 1], states[()].params)
    logits = Block(vocab=8, width=16, heads=2).apply({"params": params}, task.x_train)
    answer = np.asarray(logits[:, -1, :], np.float64)
    c = task.y_train[:, -1]
    hand = np.mean(np.log(np.exp(answer).sum(1)) - answer[np.arange(len(c)), c])
    # float32 logits, float64 reduction here: ~1e-6 relative
    np.testing.assert_allclose(ds.train_loss.sel(seed=1, lr=3e-3).isel(step=-1), hand,
                               rtol=2e-5)
    # the accuracy counts the answer only
    acc = np.mean(np.argmax(answer, 1) == c)
    np.testing.assert_allclose(ds.train_accuracy.sel(seed=1, lr=3e-3).isel(step=-1), acc)
    # width through the factory: a static axis, one compile per width
    wide = td.sweep(spec, seed=range(2), width=[8, 16])
    assert wide.train_loss.dims == ("seed", "width", "step")
    np.testing.assert_allclose(wide.train_loss.sel(width=16).isel(step=-1),
                               ds.train_loss.sel(lr=3e-3).isel(step=-1), rtol=2e-5)


def test_batch_norm_and_dropout_are_seed_invariant_and_draw_fresh_masks():
    task = td.tasks.digits(n_train=48, n_test=16)
    spec = td.Spec(td.from_linen(BNDropout), task, td.optimizers.sgd(0.1), steps=4,
                   log_every=2)
    ds, states = td.sweep(spec, seed=range(3), lr=[0.1, 0.2], return_state=True)
    for seed in range(3):
        alone, st = td.run(spec, seed=seed, lr=0.2, return_state=True)
        # the same seed: bitwise the same initial draws; after training, the batch
        # statistics and the loss agree to float32 rounding (batched vs single matmuls)
        assert leaves_equal(jax.tree.map(lambda a: a[0, 0], st[()].params0),
                            jax.tree.map(lambda a: a[seed, 1], states[()].params0))
        np.testing.assert_allclose(
            np.asarray(st[()].model_state["batch_stats"]["BatchNorm_0"]["mean"][0, 0]),
            np.asarray(states[()].model_state["batch_stats"]["BatchNorm_0"]["mean"][seed, 1]),
            rtol=1e-5, atol=1e-7)  # float32
        np.testing.assert_allclose(alone.train_loss, ds.train_loss.sel(seed=seed, lr=0.2),
                                   rtol=1e-5)
    # batch statistics moved from their initial (0, 1)
    mean = np.asarray(states[()].model_state["batch_stats"]["BatchNorm_0"]["mean"])
    assert np.abs(mean).min() > 0
    # dropout: the loop's key for step t is fold_in(fold_in(run_key, 3), t): masks differ
    # across steps and seeds
    from dynamics.loop import dropout_key

    model = spec.model
    x = jnp.asarray(task.x_train)
    params, state = model.init_variables(jax.random.key(0), x)
    outs = {(s, t): model.apply(params, x, state=state, train=True,
                                key=dropout_key(td.run_key(0, s), t)) for s in (0, 1)
            for t in (0, 1)}
    assert not np.allclose(outs[0, 0], outs[0, 1])
    assert not np.allclose(outs[0, 0], outs[1, 0])


def test_the_memory_estimate_grows_with_the_data_for_a_flax_cnn():
    needed = []
    for n in (64, 256):
        task = td.tasks.digits(n_train=n, n_test=32, shape="image")
        spec = td.Spec(td.from_linen(CNN, channels=4), task, steps=4, log_every=2,
                       strategy="vmap")
        needed.append(memory.program_bytes(programs.compiled(spec, "vmap", 2, 4, None)[-1]))
    # activations of a forward and backward pass over the training set: 4x the examples,
    # > 2x the bytes (the parameters and the carry do not grow)
    assert needed[1] > 2 * needed[0]


def test_the_data_are_arguments_so_two_datasets_share_a_program():
    make = lambda seed: td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8,  # noqa: E731
                                                        seed=seed)
    spec_a = td.Spec(td.MLP(width=8), make(0), steps=4, log_every=2, strategy="vmap")
    spec_b = dataclasses.replace(spec_a, task=make(1))
    assert programs.SpecKey(spec_a) == programs.SpecKey(spec_b)
    a = td.sweep(spec_a, seed=range(2))
    before = programs._compiled.cache_info().misses
    b = td.sweep(spec_b, seed=range(2))
    assert programs._compiled.cache_info().misses == before  # no new compile
    assert not np.allclose(a.train_loss.isel(step=-1), b.train_loss.isel(step=-1))
    alone = td.sweep(dataclasses.replace(spec_b, strategy="loop"), seed=range(2))
    np.testing.assert_allclose(b.train_loss, alone.train_loss, rtol=1e-6)  # float32


@dataclasses.dataclass(frozen=True)
class InitialLossAndCalls(observables.Observable):
    """A stateful observable: the initial training loss (its ``init``) and how many times
    it was evaluated (its carried state)."""

    def init(self, ctx):
        return {"loss0": ctx.train_loss_and_grad[0], "calls": jnp.zeros((), jnp.int32)}

    def update(self, ctx, state):
        state = {**state, "calls": state["calls"] + 1}
        return {"loss_ratio": ctx.train_loss_and_grad[0] / state["loss0"],
                "calls": state["calls"].astype(jnp.float32)}, state


def test_observables_carry_state_and_run_at_their_stride_in_steps(tmp_path):
    task = td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8)
    obs = InitialLossAndCalls(every=4)
    spec = td.Spec(td.MLP(width=8), task, td.optimizers.sgd(0.1), steps=8, log_every=2,
                   observables=("loss", obs))
    ds = td.sweep(spec, seed=range(2))
    # log points 0, 2, 4 of 0..4 (steps 0, 4, 8): called 1, 2, 3 times; NaN in between
    np.testing.assert_array_equal(ds.calls.isel(seed=0).values, [1, np.nan, 2, np.nan, 3])
    np.testing.assert_allclose(ds.loss_ratio.sel(step=8),
                               ds.train_loss.sel(step=8) / ds.train_loss.sel(step=0),
                               rtol=1e-6)
    # the state is part of the carry: checkpointed and resumed with it
    again = td.sweep(spec, seed=range(2), checkpoint_dir=tmp_path, logs_per_chunk=1)
    np.testing.assert_array_equal(again.calls.values, ds.calls.values)
    with pytest.raises(ValueError, match=r"every must be a multiple of log_every=2"):
        td.Spec(td.MLP(width=8), task, steps=8, log_every=2,
                observables=(InitialLossAndCalls(every=3),))
    with pytest.raises(ValueError, match=r"observables must be a tuple"):
        td.Spec(td.MLP(width=8), task, steps=8, log_every=2, observables="loss")


def test_strategy_and_chunks_come_from_xla():
    task = td.tasks.digits(n_train=512, n_test=32)
    small = td.Spec(td.MLP(width=64, depth=2, out_dim=10, activation="tanh"), task)
    large = dataclasses.replace(small, model=dataclasses.replace(small.model, width=256))
    # XLA's count of one step: forward and backward of the dense layers, ~6 flops per
    # multiply-add of the forward pass (2 forward, 4 backward) over 512 examples
    macs = 512 * (64 * 256 + 256 * 256 + 256 * 10)
    assert 5 * macs < programs.step_flops(large) < 8 * macs
    if jax.default_backend() == "cpu" and jax.device_count() == 1:
        assert planning.choose_strategy(small, 8) == "vmap"
        assert planning.choose_strategy(large, 8) == "loop"


def test_a_sweep_warns_of_diverged_runs_and_shows_progress(capsys):
    task = td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8)
    spec = td.Spec(td.MLP(width=8), task, steps=4, log_every=2)
    with pytest.warns(td.DivergenceWarning, match=r"^2 of 4 runs diverged; see diverged_at$"):
        ds = td.sweep(spec, seed=range(2), lr=[0.1, 1e6], progress=True)
    assert (ds.diverged_at.sel(lr=1e6) >= 0).all()
    assert "run-step" in capsys.readouterr().err
