"""Curvature observables inside ``dynamics.sweep``, against dense oracles at the final
parameters the sweep returns (float64, ``jax.hessian`` + ``eigh``), and vmapped runs
against single runs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import dynamics as td
from conftest import float64_teacher_task
from dynamics import curvature, losses

STEPS, LOG_EVERY = 12, 4  # log points 0..3
N_TRAIN = 20


pytestmark = pytest.mark.usefixtures("x64")


def task():
    return float64_teacher_task(N_TRAIN)


def make_spec(observables, **model_kw):
    model = td.MLP(width=5, depth=1, out_dim=2, activation="tanh", **model_kw)
    return td.Spec(model, task(), optimizer=td.optimizers.sgd(0.2), steps=STEPS,
                   log_every=LOG_EVERY, observables=observables, strategy="vmap")


def run_params(states, index):
    s = jax.tree.map(lambda a: a[index], states[()])
    return s.params, s.params0


def training_loss(spec, params0, alpha, rows=None):
    """The loss the loop trains, written out: alpha (g(theta) - g(theta0)) (centred)."""
    x = jnp.asarray(spec.task.x_train)
    y = jnp.asarray(spec.task.y_train)
    if rows is not None:
        x, y = x[rows], y[rows]
    hp = {"output_scale": 1.0}

    def loss(params):
        return losses.mse(alpha * (spec.model.apply(params, x, hp)
                                   - spec.model.apply(params0, x, hp)), y)

    return loss


def dense_hessian(loss, params):
    flat, unravel = ravel_pytree(params)
    return np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f))))(flat))


def test_sharpness_and_top_eigenvalues_in_a_vmapped_sweep_equal_eigh():
    # 3*5 + 5 + 5*2 + 2 = 32 parameters; iterations = 32 is the full Krylov space, so the
    # Lanczos values equal eigh to rounding (float64): relative 1e-8.
    observables = (curvature.Sharpness(every=STEPS, iterations=32),
                   curvature.TopEigenvalues(k=3, iterations=32))
    spec = make_spec(observables, center=True)
    ds, states = td.sweep(spec, seed=[0, 1], output_scale=[1.0, 2.0], return_state=True)
    assert ds.sharpness.dims == ("seed", "output_scale", "step")
    assert ds.top_eigenvalues.dims == ("seed", "output_scale", "step", "eigen_index")
    for i, seed in enumerate([0, 1]):
        for j, alpha in enumerate([1.0, 2.0]):
            params, params0 = run_params(states, (i, j))
            exact = np.linalg.eigvalsh(dense_hessian(training_loss(spec, params0, alpha), params))
            final = ds.isel(seed=i, output_scale=j, step=-1)
            np.testing.assert_allclose(final.sharpness, exact[-1], rtol=1e-8)
            np.testing.assert_allclose(final.top_eigenvalues, exact[::-1][:3], rtol=1e-8)
    # stride: log points 0 and n_logs only; NaN in between
    s = ds.sharpness.isel(seed=0, output_scale=0).values
    assert np.all(np.isfinite(s[[0, -1]])) and np.all(np.isnan(s[1:-1]))
    # one run alone equals its place in the sweep (batched vs unbatched products: float
    # tolerance, far below the 1e-3 scale of the sharpness itself)
    alone = td.run(dataclasses.replace(spec, strategy="loop"), seed=1, output_scale=2.0)
    np.testing.assert_allclose(alone.top_eigenvalues.values,
                               ds.top_eigenvalues.sel(seed=1, output_scale=2.0).values,
                               rtol=1e-9)


@pytest.mark.slow
def test_ggn_trace_batch_sharpness_and_density_in_a_sweep():
    observables = (
        curvature.GGNSharpness(every=3 * LOG_EVERY, iterations=32, rows_per_pass=6),
        curvature.HessianTrace(samples=40, every=3 * LOG_EVERY),
        curvature.BatchSharpness(batch_size=8, every=3 * LOG_EVERY, iterations=32),
        curvature.SpectralDensity(lo=-2.0, hi=6.0, points=801, sigma=0.05, probes=2,
                                  iterations=10, every=3 * LOG_EVERY),
    )
    spec = make_spec(observables)
    ds, states = td.sweep(spec, seed=[0, 1], return_state=True)
    for i in range(2):
        params, _ = run_params(states, i)
        x, y = jnp.asarray(spec.task.x_train), jnp.asarray(spec.task.y_train)

        def out(p, rows=None):
            return spec.model.apply(p, x if rows is None else x[rows])

        final = ds.isel(seed=i, step=-1)
        flat, unravel = ravel_pytree(params)
        jac = np.asarray(jax.jacobian(lambda f: out(unravel(f)))(flat)).reshape(-1, flat.size)
        # MSE: H_L = (2/N) I, so GGN = (2/N) J^T J
        ggn = 2 / N_TRAIN * jac.T @ jac
        np.testing.assert_allclose(final.ggn_sharpness, np.linalg.eigvalsh(ggn)[-1], rtol=1e-8)
        loss = lambda p: losses.mse(out(p), y)  # noqa: E731
        h = dense_hessian(loss, params)
        assert abs(final.hessian_trace - np.trace(h)) < 3 * final.hessian_trace_stderr
        # the batch: rows drawn as the observable draws them from the log point's key
        run_key = td.run_key(spec.root_seed, i)
        key = jax.random.fold_in(jax.random.fold_in(run_key, 2), spec.n_logs)
        rows = jax.random.permutation(jax.random.split(key)[0], N_TRAIN)[:8]
        hb = dense_hessian(lambda p: losses.mse(out(p, rows), y[rows]), params)
        np.testing.assert_allclose(final.batch_sharpness, np.linalg.eigvalsh(hb)[-1], rtol=1e-8)
        # density: integrates to 1 on a grid covering the spectrum by > 10 sigma
        ev = np.linalg.eigvalsh(h)
        assert ev[0] > -2.0 + 10 * 0.05 and ev[-1] < 6.0 - 10 * 0.05
        np.testing.assert_allclose(np.trapezoid(final.spectral_density, ds.eigenvalue), 1.0,
                                   atol=1e-6)


@pytest.mark.slow
def test_bench_curvature_quick_runs(tmp_path):
    from experiments import cli

    out = tmp_path / "bench.json"
    with jax.enable_x64(False):  # as a user runs it (this module's tests run in float64)
        assert cli.main(["bench", "curvature", "--quick", "--out", str(out)]) == 0
    import json

    result = json.loads(out.read_text())
    # Lanczos reaches 1e-3 on lambda_max and does so in no more products than power
    # iteration (Kuczynski & Wozniakowski 1992: its error bound is that of Chebyshev
    # acceleration of the power method)
    counts = result["hvps_to_1e-3"]
    assert counts["lanczos"] is not None
    assert counts["power_iteration"] is None or counts["lanczos"] <= counts["power_iteration"]
    assert result["lambda_max"]["reference_relative_residual"] < 1e-3


def test_warm_started_sharpness_tracks_a_cold_converged_lanczos_to_1e_3():
    # Full-batch GD on digits while the sharpness rises (progressive sharpening, below
    # 2/eta: the top eigenvalue stays separated from the next), 1,386 parameters. The
    # reference is a cold 60-step Lanczos at every log point (converged to ~1e-10 here);
    # the warm tracker takes 20 steps at step 0 and then 6 from the previous top Ritz
    # vector: within 1e-3 relative at every log point (the accuracy goal; measured 3e-4),
    # while a cold 6-step Lanczos is off by more than 1e-3 somewhere (the test can fail).
    task = td.tasks.digits(n_train=128, n_test=32, loss="mse", seed=0).astype("float64")
    model = td.MLP(width=16, depth=2, out_dim=10, activation="tanh", parametrization="standard",
                   sigma_w=0.6)

    def sweep(*observables):
        spec = td.Spec(model, task, td.optimizers.sgd(0.1), steps=300, log_every=10,
                       observables=("loss", *observables))
        return td.sweep(spec, seed=[0, 1])

    ds = sweep(curvature.Sharpness(iterations=20, warm_iterations=6),
               curvature.TopEigenvalues(k=1, iterations=60))
    reference = ds.top_eigenvalues.isel(eigen_index=0)
    error = abs(ds.sharpness / reference - 1)
    assert float(error.max()) <= 1e-3, float(error.max())
    cold = sweep(curvature.Sharpness(iterations=6))
    assert float(abs(cold.sharpness / reference - 1).max()) > 1e-3


def test_block_sharpness_refuses_a_warm_start():
    with pytest.raises(ValueError, match="BlockSharpness.warm_iterations must be None"):
        curvature.BlockSharpness(warm_iterations=3)
    with pytest.raises(ValueError, match="warm_iterations must be an int >= 1"):
        curvature.Sharpness(warm_iterations=0)
