"""The engine's guarantees: keys, determinism, divergence, named dimensions, one compile
per static shape, and the loss normalisation against closed-form gradient descent."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynamics as td
from dynamics import observables, sweeps


@pytest.fixture(scope="module")
def task():
    return td.tasks.teacher_student_linear(dim=6, n_train=32, n_test=16, out_dim=2, seed=3)


def small_spec(task, **kw):
    model = kw.pop("model", td.MLP(width=16, depth=1, out_dim=task.out_dim, activation="tanh"))
    kw.setdefault("optimizer", td.optimizers.sgd(0.1))
    kw.setdefault("steps", 20)
    kw.setdefault("log_every", 5)
    return td.Spec(model, task, **kw)


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("strategy", ["vmap", "map", "chunked", "loop"])
def test_initial_params_identical_alone_and_in_a_sweep(task, strategy):
    spec = small_spec(task, strategy=strategy, chunk_size=3)
    _, states = td.sweep(spec, seed=range(8), return_state=True)
    params0 = states[()].params0
    for k in (0, 5, 7):
        alone = td.init_params(spec, seed=k)
        # bitwise: threefry bits and the elementwise scaling do not depend on batching
        assert leaves_equal(alone, jax.tree.map(lambda a: a[k], params0))


def test_run_key_is_fold_in_of_root_and_seed():
    expected = jax.random.fold_in(jax.random.PRNGKey(11), 4)
    assert np.array_equal(jax.random.key_data(td.run_key(11, 4)), jax.random.key_data(expected))


def test_sweep_rerun_bitwise_identical(task):
    spec = small_spec(task, batch_size=8)
    a = td.sweep(spec, seed=range(3), lr=[0.05, 0.2])
    b = td.sweep(spec, seed=range(3), lr=[0.05, 0.2])
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_single_run_matches_its_place_in_the_sweep(task):
    spec = small_spec(task, batch_size=8)
    ds = td.sweep(dataclasses.replace(spec, strategy="vmap"), seed=range(4), lr=[0.05, 0.2])
    alone = td.run(spec, seed=2, lr=0.2)
    # batched and unbatched matmuls may differ in the last bit; 20 steps of a contracting
    # map keep that at a few float32 ulps of O(1) values
    np.testing.assert_allclose(
        ds.train_loss.sel(seed=2, lr=0.2).values, alone.train_loss.values, rtol=1e-5
    )
    looped = td.sweep(dataclasses.replace(spec, strategy="loop"), seed=range(4), lr=[0.05, 0.2])
    # the loop strategy runs the very program of a single run: bitwise
    np.testing.assert_array_equal(looped.train_loss.sel(seed=2, lr=0.2).values,
                                  alone.train_loss.values)


def test_divergence_freezes_one_run_and_leaves_the_others_untouched(task):
    spec = small_spec(task, strategy="vmap")
    calm = td.sweep(spec, seed=[0, 1], lr=[0.05, 0.1, 0.2], return_state=True)
    wild = td.sweep(spec, seed=[0, 1], lr=[0.05, 0.1, 1e4], return_state=True)
    ds_calm, ds_wild = calm[0], wild[0]
    for name in ds_calm.data_vars:
        # exactly what they would be without the diverging run
        np.testing.assert_array_equal(
            ds_calm[name].isel(lr=slice(0, 2)).values, ds_wild[name].isel(lr=slice(0, 2)).values
        )
    assert (ds_wild.diverged_at.isel(lr=2).values >= 0).all()
    assert (ds_wild.diverged_at.isel(lr=slice(0, 2)).values == -1).all()
    at = int(ds_wild.diverged_at.isel(seed=0, lr=2))
    loss = ds_wild.train_loss.isel(seed=0, lr=2)
    assert np.isnan(loss.sel(step=loss.step > at).values).all()
    # the state of step `at` is the last one kept (finite parameters; its loss may
    # already overflow); every log point before it is finite
    assert np.isfinite(loss.sel(step=loss.step < at).values).all()
    final = wild[1][()].params
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(final))


def test_dimensions_follow_the_order_given(task):
    spec = small_spec(task, steps=10)
    ds = td.sweep(spec, seed=range(2), lr=[0.1, 0.2, 0.3], width=[8, 16])
    assert ds.train_loss.dims == ("seed", "lr", "width", "step")
    assert list(ds.width.values) == [8, 16] and list(ds.lr.values) == [0.1, 0.2, 0.3]
    ds = td.sweep(spec, width=[16, 8], seed=range(2), lr=0.1)
    assert ds.train_loss.dims == ("width", "seed", "step")
    assert list(ds.width.values) == [16, 8]  # the order given, not sorted
    assert float(ds.lr) == pytest.approx(0.1)  # a scalar fixes a value, no dimension
    assert list(ds.step.values) == [0, 5, 10]
    # each width matches its own unswept spec (one compile per static value)
    narrow = td.sweep(small_spec(task, steps=10, model=dataclasses.replace(spec.model, width=8)),
                      seed=range(2), lr=0.1)
    np.testing.assert_allclose(ds.train_loss.sel(width=8).values, narrow.train_loss.values,
                               rtol=1e-6)  # same program and inputs: float32 round-off at most


@dataclasses.dataclass(frozen=True)
class TraceCounter(observables.Observable):
    tag: int = 0  # a new tag makes a new spec (no cached program)
    traces = 0

    def __call__(self, ctx):
        TraceCounter.traces += 1
        return {"one": jnp.ones(())}


def count_traces(task, tag, **axes):
    spec = small_spec(task, observables=("loss", TraceCounter(tag=tag)), strategy="vmap")
    TraceCounter.traces = 0
    td.sweep(spec, seed=range(2), **axes)
    return TraceCounter.traces


def test_one_compile_per_static_value(task):
    # The observable is traced a fixed number of times per program (initial and scanned
    # log points, shape inference); a program per width, none per swept value.
    one_width = count_traces(task, 1, lr=0.1, width=[8])
    many_values = count_traces(task, 2, lr=[0.1, 0.2, 0.3], output_scale=[0.5, 1.0], width=[8, 12])
    assert one_width > 0
    assert many_values == 2 * one_width


def test_attrs_hold_config_versions_and_root_seed(task):
    import json

    ds = td.run(small_spec(task, root_seed=7), seed=0)
    assert ds.attrs["root_seed"] == 7
    config = json.loads(ds.attrs["config"])
    assert config["model"]["width"] == 16 and config["optimizer"]["name"] == "sgd"
    versions = json.loads(ds.attrs["versions"])
    assert versions["jax"] == jax.__version__


def test_full_batch_gd_on_linear_regression_matches_closed_form():
    """L = (1/P) sum (x.w - y)^2 has gradient (2/P) X^T (X w - y): GD is a linear
    recursion that numpy computes exactly in float64."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        X = rng.normal(size=(20, 5))
        y = X @ rng.normal(size=(5, 1)) + 0.1 * rng.normal(size=(20, 1))
        task = td.tasks.from_arrays(X, y, X[:4], y[:4], loss="mse", dtype="float64")
        model = td.MLP(depth=0, out_dim=1, parametrization="standard", bias=False)
        spec = td.Spec(model, task, td.optimizers.sgd(0.05), steps=30, log_every=10)
        ds, states = td.run(spec, seed=1, return_state=True)
        w0 = w = np.asarray(states[()].params0[0]["w"], np.float64)
        logged = {"train_loss": [], "grad_norm": [], "param_norm": [],
                  "relative_weight_change": []}
        for t in range(31):
            grad = (2 / 20) * X.T @ (X @ w - y)
            if t % 10 == 0:
                logged["train_loss"].append(np.mean((X @ w - y) ** 2))
                logged["grad_norm"].append(np.linalg.norm(grad))
                logged["param_norm"].append(np.linalg.norm(w))
                logged["relative_weight_change"].append(
                    np.linalg.norm(w - w0) / np.linalg.norm(w0))
            w = w - 0.05 * grad
        # float64 throughout: agreement to rounding of a 30-step recursion (the weight
        # change starts at exactly 0, hence the absolute part)
        for name, values in logged.items():
            np.testing.assert_allclose(ds[name].values, values, rtol=1e-12, atol=1e-15)


def test_minibatch_order_is_a_seeded_permutation_per_epoch(task):
    spec = small_spec(task, batch_size=8)
    runner = td.loop.make_run(spec)
    key = td.run_key(0, 3)
    idx = jnp.arange(task.n_train)
    epoch0 = np.concatenate([np.asarray(runner._batch(key, t, idx)) for t in range(4)])
    epoch1 = np.concatenate([np.asarray(runner._batch(key, t, idx)) for t in range(4, 8)])
    assert sorted(epoch0) == list(range(32)) and sorted(epoch1) == list(range(32))
    assert not np.array_equal(epoch0, epoch1)
    other = np.asarray(runner._batch(td.run_key(0, 4), 0, idx))
    assert not np.array_equal(other, epoch0[:8])


def test_centering_zeroes_the_initial_output(task):
    model = td.MLP(width=16, out_dim=task.out_dim, center=True, output_scale=10.0)
    ds = td.run(small_spec(task, model=model), seed=0)
    # f(theta0) - f(theta0) = 0, so the loss at step 0 is mean ||y||^2, to float32 rounding
    expected = np.mean(np.sum(task.y_train**2, axis=1))
    assert float(ds.train_loss.isel(step=0)) == pytest.approx(expected, rel=1e-6)


def test_scale_lr_by_output_scale_makes_lazy_weights_move_as_one_over_alpha(task):
    """Chizat, Oyallon & Bach (2019): with centred outputs and lr / alpha^2, function-space
    dynamics are alpha-independent to first order and ||theta - theta0|| ~ 1/alpha."""
    model = td.MLP(width=32, out_dim=task.out_dim, center=True, activation="tanh")
    spec = small_spec(task, model=model, scale_lr_by_output_scale=True, steps=40, log_every=40)
    ds = td.sweep(spec, output_scale=[10.0, 100.0, 1000.0], lr=0.1)
    change = ds.relative_weight_change.isel(step=-1).values
    slope = np.polyfit(np.log([10.0, 100.0, 1000.0]), np.log(change), 1)[0]
    # exact -1 in the limit; corrections are O(1/alpha) relative, < 1% at alpha >= 10
    assert slope == pytest.approx(-1.0, abs=0.02)
    loss = ds.train_loss.isel(step=-1).values
    # the loss curves coincide up to the same O(1/alpha) corrections
    np.testing.assert_allclose(loss[1:], loss[0], rtol=0.02)


def test_label_noise_is_a_swept_value(task):
    spec = small_spec(td.tasks.teacher_student_linear(dim=6, n_train=32, n_test=16,
                                                      label_noise=0.0, seed=3))
    ds = td.sweep(spec, label_noise=[0.0, 1.0], lr=0.1)
    loss0 = ds.train_loss.isel(step=0).values
    # at init the outputs are the same; the targets differ by label_noise * noise with
    # E||noise||^2 = out_dim per example, so the loss grows by about 1 (here: 1 output)
    assert loss0[1] - loss0[0] == pytest.approx(1.0, abs=0.6)
    np.testing.assert_array_equal(ds.test_loss.isel(step=0).values[0],
                                  ds.test_loss.isel(step=0).values[1])


def test_auto_strategy_is_recorded_and_valid(task):
    spec = small_spec(task)
    assert sweeps.choose_strategy(spec, 8) in ("vmap", "loop")
    assert sweeps.choose_strategy(spec, 1) == "loop"


def test_a_flax_model_trains_in_a_sweep(task):
    import flax.linen as nn

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(task.out_dim)(jnp.tanh(nn.Dense(16)(x)))

    spec = small_spec(task, model=td.from_linen(Tiny(), center=True))
    ds = td.sweep(spec, seed=range(2), output_scale=[1.0, 2.0])
    # centred: zero output at init, so the initial loss is mean ||y||^2 for every run
    expected = np.mean(np.sum(task.y_train**2, axis=1))
    np.testing.assert_allclose(ds.train_loss.isel(step=0).values, expected, rtol=1e-6)
    assert (ds.train_loss.isel(step=-1) < 0.9 * ds.train_loss.isel(step=0)).all()
    # seed k's flax init is the module's own init with key fold_in(run_key, 0)
    params0 = td.init_params(spec, seed=1)
    direct = Tiny().init(jax.random.fold_in(td.run_key(0, 1), 0), task.x_train)["params"]
    assert leaves_equal(params0, direct)


@dataclasses.dataclass(frozen=True)
class RowsProbe(observables.Observable):
    """The outputs on training rows 0 and 2, on a named trailing dimension with coords."""

    dims = {"probe_outputs": ("probe",)}

    def coords(self):
        return {"probe": np.array([0, 2])}

    def __call__(self, ctx):
        return {"probe_outputs": ctx.outputs(ctx.params, "train", jnp.array([0, 2]))[:, 0]}


def test_observables_see_outputs_on_rows_with_centering_and_name_their_coords(task):
    model = td.MLP(width=16, depth=1, out_dim=task.out_dim, activation="tanh", center=True)
    spec = small_spec(task, model=model, observables=(RowsProbe(),))
    ds, states = td.run(spec, seed=0, output_scale=3.0, return_state=True)
    assert list(ds.probe.values) == [0, 2]
    assert ds.probe_outputs.dims == ("step", "probe")  # an observable's own dims come last
    swept = td.sweep(spec, seed=range(2), output_scale=[1.0, 3.0], width=[8, 16])
    assert swept.probe_outputs.dims == ("seed", "output_scale", "width", "step", "probe")
    # centred: zero at step 0 up to round-off (g0 was computed on the whole training set,
    # the probe on two rows: matmuls of another shape round differently, ~1e-7 on O(1))
    np.testing.assert_allclose(ds.probe_outputs.isel(step=0).values, 0.0, atol=1e-6)
    # grid (seed, output_scale), one value each
    params, params0 = jax.tree.map(lambda a: a[0, 0], (states[()].params, states[()].params0))
    hp = {**spec.hparams(), "output_scale": 1.0}
    x = jnp.asarray(task.x_train)[jnp.array([0, 2])]
    want = 3.0 * (model.apply(params, x, hp) - model.apply(params0, x, hp))[:, 0]
    # same float32 computation up to op fusion: a few ulps of O(1) outputs
    np.testing.assert_allclose(ds.probe_outputs.isel(step=-1).values, want, rtol=1e-5, atol=1e-6)
