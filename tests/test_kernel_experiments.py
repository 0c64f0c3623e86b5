"""The kernel experiments (ntk-convergence, wide-linear, the kernel part of lazy-rich):
their helpers against the library's dense computations, their input checks, and (slow)
their quick presets end to end through the command line with every claim passing."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dynamics as td
import kernels
from experiments import cli
from experiments import lazy_rich, ntk_convergence, wide_linear


@pytest.mark.slow  # heavier (a compile per width); CI runs it
def test_layerwise_ntk_equals_jacobian_contraction():
    """``lazy_rich.initial_ntk`` (layer-wise outer products) against
    ``kernels.empirical_ntk`` (dense Jacobian contraction), full output block, float64:
    the two are the same sum in another order, so they agree to rounding (1e-12 of the
    kernel's scale, far below any modelling error, far above float64's 1e-16)."""
    with jax.enable_x64(True):
        model = td.MLP(width=24, depth=2, out_dim=3, activation="tanh", sigma_b=0.3)
        x1 = jax.random.normal(jax.random.PRNGKey(1), (7, 5), jnp.float64)
        x2 = jax.random.normal(jax.random.PRNGKey(2), (4, 5), jnp.float64)
        params = model.init(jax.random.PRNGKey(0), x1)
        hp = {**model.hparams(), "output_scale": 2.0}  # the kernel is of g, at scale 1
        fast = lazy_rich.initial_ntk(model, params, x1, x2, hp)
        dense = kernels.empirical_ntk(
            lambda p, x: model.apply(p, x, {**hp, "output_scale": 1.0}), params, x1, x2,
            method="jacobian")
        assert fast.shape == dense.shape == (7, 4, 3, 3)
        scale = float(jnp.abs(dense).max())
        assert float(jnp.abs(fast - dense).max()) <= 1e-12 * scale


def test_layerwise_ntk_refuses_models_without_bias():
    model = td.MLP(width=8, depth=1, bias=False)
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="bias=True"):
        lazy_rich.initial_ntk(model, model.init(jax.random.PRNGKey(0), x), x, x, {})


@pytest.mark.slow  # heavier (a compile per width); CI runs it
def test_batched_linearized_predictions_equal_the_library_per_seed():
    """``wide_linear.linearized_predictions`` (all seeds in one program, seed after seed in
    blocks of examples) against
    ``kernels.predict_linearized`` (one seed): the same kernels and the same ``predict``,
    so equal to float32 rounding of the kernel (1e-5 of the outputs' scale)."""
    spec = wide_linear.make_spec(depth=1, n_train=8, n_test=6, steps=20, log_every=5, lr=0.4,
                                 width=32)
    seeds = [0, 3]
    _, states = td.sweep(spec, seed=seeds, return_state=True)
    batched = wide_linear.linearized_predictions(spec, states[()].params0, seeds)
    for seed in seeds:
        single = kernels.predict_linearized(spec, seed)
        for name in ("train_outputs", "test_outputs", "train_loss", "test_loss"):
            a = batched[name].sel(seed=seed).values
            b = single[name].values
            assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(b).max()), name


def test_ntk_at_init_uses_the_simulators_initial_parameters():
    """Seed ``s`` of ``ntk_at_init`` is the NTK at ``dynamics.init_params(spec, s)``: the
    same draw, so equal up to the float32 rounding of two compiled programs (1e-5)."""
    model = ntk_convergence.make_model(48, 1)
    x = ntk_convergence.circle(6)
    task = td.tasks.from_arrays(x, np.zeros((6, 1), np.float32))
    spec = td.Spec(model, task, td.optimizers.sgd(0.1), steps=1, log_every=1)
    k = ntk_convergence.ntk_at_init(model, x, 3)
    for seed in range(3):
        p = td.init_params(spec, seed)
        ref = kernels.empirical_ntk(lambda q, xx: model.apply(q, xx), p, jnp.asarray(x),
                                    trace=True)
        assert np.abs(k[seed] - np.asarray(ref)).max() <= 1e-5 * np.abs(ref).max()


def test_kernel_observable_stride_is_checked_before_compiling():
    with pytest.raises(ValueError, match="steps / 2 must be a multiple of log_every"):
        lazy_rich.make_spec(width=8, n_train=32, steps=100, log_every=20)
    with pytest.raises(ValueError, match="must be even"):
        ntk_convergence.run(depth=1, widths=(8,), seeds=1, n_circle=4, train_widths=(8,),
                            train_seeds=1, n_train=8, steps=30, log_every=10, lr=0.1,
                            probe_size=4)


def _run_quick(name, tmp_path):
    assert cli.main(["run", name, "--preset", "quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    failed = [c["name"] for c in summary["claims"] if not c["passed"]]
    assert summary["passed"] and not failed, failed
    assert len(summary["claims"]) >= 5
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    return summary


@pytest.mark.slow
def test_ntk_convergence_quick_claims_hold(tmp_path):
    _run_quick("ntk-convergence", tmp_path)
    import xarray as xr

    with xr.open_dataset(tmp_path / "results.nc") as ds:
        assert ds.ntk_relative_error.dims == ("init_width", "init_seed")
        assert ds.kernel_distance.dims == ("seed", "width", "step")


@pytest.mark.slow
def test_wide_linear_quick_claims_hold(tmp_path):
    _run_quick("wide-linear", tmp_path)
    import xarray as xr

    with xr.open_dataset(tmp_path / "results.nc") as ds:
        assert ds.test_outputs.dims == ("seed", "width", "step", "test_example", "output")
