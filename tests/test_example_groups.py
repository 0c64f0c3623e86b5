"""Groups of training examples: the loss per group and the groups' shares of the top
Hessian eigendirection, inside a sweep, against dense float64 oracles at the parameters
the sweep returns; their validation; and the opposing-signals experiment's data and
statistics (its quick preset end to end is slow)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from jax.flatten_util import ravel_pytree

import dynamics as td
from conftest import float64_teacher_task
from dynamics import curvature, losses
from dynamics.example_groups import GroupLoss

N_TRAIN = 20
GROUPS = {"first": (0, 3, 7), "second": (1, 2, 4, 5, 6, 8), "rest": tuple(range(9, N_TRAIN))}


pytestmark = pytest.mark.usefixtures("x64")


def task():
    return float64_teacher_task(N_TRAIN)


def make_spec(observables, steps=12):
    model = td.MLP(width=5, depth=1, out_dim=2, activation="tanh")
    return td.Spec(model, task(), optimizer=td.optimizers.sgd(0.2), steps=steps,
                   log_every=4, observables=observables, strategy="vmap")


def group_loss(spec, params, rows):
    x = jnp.asarray(spec.task.x_train)[np.asarray(rows)]
    y = jnp.asarray(spec.task.y_train)[np.asarray(rows)]
    return lambda p: losses.mse(spec.model.apply(p, x), y)


def dense_hessian(loss, params):
    flat, unravel = ravel_pytree(params)
    return np.asarray(jax.hessian(lambda f: loss(unravel(f)))(flat))


def test_group_losses_and_top_eigenvector_shares_equal_dense_computations():
    # 32 parameters; iterations = 32 is the whole Krylov space, so the Lanczos top
    # eigenvector is eigh's to rounding. Float64: the losses to 1e-12; the shares are
    # ratios of quadratic forms in that vector (its error ~ residual / eigengap, ~1e-8
    # here), so rtol 1e-6.
    observables = ("loss", GroupLoss(groups=GROUPS),
                   curvature.TopEigenvectorShare(groups=GROUPS, iterations=32, every=12))
    spec = make_spec(observables)
    ds, states = td.sweep(spec, seed=[0, 1], return_state=True)
    assert ds.group_loss.dims == ("seed", "step", "group")
    assert list(ds.group.values) == list(GROUPS)
    for i in range(2):
        params = jax.tree.map(lambda a: a[i], states[()].params)
        final = ds.isel(seed=i, step=-1)
        dense = [float(group_loss(spec, params, rows)(params)) for rows in GROUPS.values()]
        np.testing.assert_allclose(final.group_loss, dense, rtol=1e-12)
        # the groups partition the training set: L = sum_g (|g|/P) L_g
        weights = np.array([len(r) for r in GROUPS.values()]) / N_TRAIN
        np.testing.assert_allclose(weights @ final.group_loss.values, final.train_loss,
                                   rtol=1e-12)
        h = dense_hessian(group_loss(spec, params, range(N_TRAIN)), params)
        values, vectors = np.linalg.eigh(h)
        v = vectors[:, -1]
        expected = [w * v @ dense_hessian(group_loss(spec, params, rows), params) @ v
                    / values[-1] for w, rows in zip(weights, GROUPS.values())]
        np.testing.assert_allclose(final.top_eigenvector_share, expected, rtol=1e-6)
        np.testing.assert_allclose(float(final.top_eigenvector_share.sum()), 1.0, rtol=1e-9)
    share = ds.top_eigenvector_share.isel(seed=0).values
    assert np.all(np.isfinite(share[[0, -1]])) and np.all(np.isnan(share[1:-1]))


@pytest.mark.parametrize("groups, message", [
    ({}, "at least one group"),
    ({"a": ()}, "non-empty 1-d sequence"),
    ({"a": (0, 0)}, "repeats a row index"),
    ({"a": (-1,)}, "negative row index"),
    ({"a": (0.5,)}, "int row indices"),
    ({"": (0,)}, "non-empty str"),
    ([("a", (0,)), ("a", (1,))], "repeats a name"),
    ([("a", (0,), 1)], "mapping"),
])
def test_bad_groups_are_refused(groups, message):
    with pytest.raises(ValueError, match=message):
        GroupLoss(groups=groups)
    with pytest.raises(ValueError, match=message):
        curvature.TopEigenvectorShare(groups=groups)


def test_rows_outside_the_training_set_are_refused_when_the_spec_is_built():
    for obs in (GroupLoss(groups={"a": (0, N_TRAIN)}),
                curvature.TopEigenvectorShare(groups={"a": (0, N_TRAIN)})):
        with pytest.raises(ValueError, match=f"row index {N_TRAIN}, but the training set "
                                             f"has {N_TRAIN}"):
            make_spec(("loss", obs))


# --- the opposing-signals experiment -------------------------------------------------

def test_opposing_signal_task_adds_the_signal_to_the_two_groups_only():
    from experiments import opposing_signals as os_

    with jax.enable_x64(False):
        base = td.tasks.digits(n_train=128, n_test=200, loss="mse", seed=0, shape="image")
        task, rows = os_.opposing_signal_task(128, 5, 2.5)
    diff = np.asarray(task.x_train) - np.asarray(base.x_train)
    labels = np.asarray(base.y_train).argmax(-1)
    grouped = np.concatenate([rows["A"], rows["B"]])
    # float32 sums of O(1) pixel values and 2.5: one rounding, 1e-6 absolute
    np.testing.assert_allclose(diff[grouped], 2.5, atol=1e-6)
    assert np.all(diff[rows["rest"]] == 0)
    assert np.all(labels[rows["A"]] == os_.CLASS_A) and np.all(labels[rows["B"]] == os_.CLASS_B)
    assert sorted(np.concatenate([grouped, rows["rest"]]).tolist()) == list(range(128))
    np.testing.assert_array_equal(task.x_test, base.x_test)
    with pytest.raises(ValueError, match="group_size must be <="):
        os_.opposing_signal_task(128, 100, 2.0)


def _groups_ds(a, b):
    steps = np.arange(len(a))
    loss = np.stack([a, b, np.ones_like(a)], axis=-1)[None]
    return xr.Dataset({"group_loss": (("seed", "step", "group"), loss)},
                      coords={"seed": [0], "step": steps, "group": ["A", "B", "rest"]})


def test_antiphase_statistic_is_minus_one_in_antiphase_and_one_in_phase():
    from experiments import opposing_signals as os_

    t = np.arange(40)
    wiggle = 1 + 0.1 * (-1.0) ** t
    # exact: log(1.1) - log(0.9) alternates in sign; the two series' changes are exact
    # negatives (antiphase) or equal (in phase), so the correlations are -1 and 1
    np.testing.assert_allclose(float(os_.antiphase(_groups_ds(wiggle, 1 / wiggle))[0]), -1.0,
                               rtol=1e-12)
    np.testing.assert_allclose(float(os_.antiphase(_groups_ds(wiggle, 2 * wiggle))[0]), 1.0,
                               rtol=1e-12)


@pytest.mark.slow
def test_opposing_signals_quick_preset_passes_every_claim(tmp_path):
    from experiments import cli

    with jax.enable_x64(False):  # as a user runs it
        assert cli.main(["run", "opposing-signals", "--preset", "quick",
                         "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    claims = {c["name"]: c for c in summary["claims"]}
    assert all(c["passed"] for c in claims.values()), claims
    # the in-loop CNN theory tools are in the results, finite at their strides
    ds = td.load(tmp_path / "results.nc")
    for name in ("kernel_distance", "kernel_alignment", "activation_change_l1", "sharpness",
                 "top_eigenvector_share"):
        assert np.isfinite(ds[name].dropna("step", how="all")).all(), name
    assert (tmp_path / "figure.png").stat().st_size > 0


def test_oscillation_ratio_and_concentration_statistics():
    from experiments import opposing_signals as os_

    t = np.arange(40)
    # groups A and B wiggle by a factor 1.1 / 0.9 and the rest by 1.01 / 0.99: the std of
    # the log changes scales with log(1.1/0.9) / log(1.01/0.99), exactly
    ds = _groups_ds(1 + 0.1 * (-1.0) ** t, 1 - 0.1 * (-1.0) ** t)
    rest = 1 + 0.01 * (-1.0) ** t
    ds["group_loss"].loc[dict(group="rest")] = rest[None]
    expected = np.log(1.1 / 0.9) / np.log(1.01 / 0.99)
    np.testing.assert_allclose(float(os_.oscillation_ratio(ds)[0]), expected, rtol=1e-10)
    # shares: A + B = 0.3 at every measured log point of the second half, fraction 0.1
    share = np.full((1, 40, 3), np.nan)
    share[0, ::10] = [0.1, 0.2, 0.7]
    ds["top_eigenvector_share"] = (("seed", "step", "group"), share)
    ds.attrs["group_fraction"] = 0.1
    np.testing.assert_allclose(float(os_.concentration(ds)[0]), 3.0, rtol=1e-12)
