"""Oracles of the grokking-scaling reproduction (Tian 2025): the centred one-hot targets,
the coupled-L2 Adam step against a dense NumPy Adam on ``g + lambda w``, the threshold
finder on accuracy curves with a known crossing, the fit of ``c`` on exact ``c log(M)/M``
data, the top-norm IPR, and (slow) the quick preset end to end."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynamics as td
from experiments import cli
from experiments import grokking_scaling as exp

# ---------------------------------------------------------------- centred one-hot targets


@pytest.mark.parametrize("M", [5, 23])
def test_centred_targets_are_one_hot_minus_one_over_M(M):
    plain = td.tasks.modular_arithmetic(p=M, train_fraction=0.5, loss="mse")
    centred = td.tasks.modular_arithmetic(p=M, train_fraction=0.5, loss="mse",
                                          centred_targets=True)
    for split in ("train", "test"):
        y0 = np.asarray(getattr(plain, f"y_{split}"), np.float64)
        y = np.asarray(getattr(centred, f"y_{split}"), np.float64)
        # float32 entries 1 - 1/M and -1/M: exact to float32 rounding (1e-7 relative)
        np.testing.assert_allclose(y, y0 - 1.0 / M, rtol=0, atol=1e-7)
        # each row sums to zero: M float32 terms of size <= 1, so ~M ulps at most
        np.testing.assert_allclose(y.sum(axis=1), 0.0, atol=M * 1.2e-7)
        # same labels (arg-max) and the same split of the pairs
        np.testing.assert_array_equal(np.argmax(y, 1), np.argmax(y0, 1))
        np.testing.assert_array_equal(getattr(centred, f"x_{split}"),
                                      getattr(plain, f"x_{split}"))
    assert centred.config["centred_targets"] is True


def test_centred_targets_refused_with_integer_labels():
    with pytest.raises(ValueError, match="centred_targets"):
        td.tasks.modular_arithmetic(p=7, loss="cross_entropy", centred_targets=True)
    with pytest.raises(ValueError, match="centred_targets must be a bool"):
        td.tasks.modular_arithmetic(p=7, loss="mse", centred_targets=1)


# ------------------------------------------------------------------- Adam with coupled L2


def numpy_adam_l2(theta, grads, lr, lam, b1=0.9, b2=0.999, eps=1e-8):
    """Dense float64 Adam (Kingma & Ba 2015, Algorithm 1, bias-corrected) on the gradient
    ``g + lambda theta`` (coupled L2, torch.optim.Adam(weight_decay=lambda))."""
    theta = {k: np.array(v, np.float64) for k, v in theta.items()}
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    v = {k: np.zeros_like(x) for k, x in theta.items()}
    for t, g in enumerate(grads, start=1):
        for k in theta:
            gk = np.asarray(g[k], np.float64) + lam * theta[k]
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk**2
            mhat, vhat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            theta[k] = theta[k] - lr * mhat / (np.sqrt(vhat) + eps)
    return theta


def test_coupled_l2_adam_is_adam_on_the_decayed_gradient():
    lr, lam = 0.01, 0.3  # a large lambda, so that the decay moves Adam's normalisation
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "v": jnp.array([[0.2, -0.7, 1.5]])}
    grads = [jax.tree.map(lambda p, k=k: jnp.sin(p * (k + 1)) * 0.1, params)
             for k in range(4)]
    opt = exp.make_optimizer(lr, lam)
    tx = opt.build(opt.hparams(), steps=4)
    ours, state = params, tx.init(params)
    for g in grads:
        u, state = tx.update(g, state, ours)
        ours = optax.apply_updates(ours, u)
    want = numpy_adam_l2(params, grads, lr, lam)
    # float32 Adam against float64: a few float32 ulps of the O(1) parameters per step
    for k in params:
        np.testing.assert_allclose(np.asarray(ours[k]), want[k], rtol=0, atol=2e-6)
    # and it is not AdamW: decoupled decay gives another trajectory, by far more than 2e-6
    adamw = td.optimizers.adamw(lr=lr, weight_decay=lam, weight_decay_mask="all")
    tw = adamw.build(adamw.hparams(), steps=4)
    other, sw = params, tw.init(params)
    for g in grads:
        u, sw = tw.update(g, sw, other)
        other = optax.apply_updates(other, u)
    assert max(float(np.max(np.abs(np.asarray(other[k]) - want[k]))) for k in params) > 1e-3


# ------------------------------------------------------------ threshold and fit of c


def test_threshold_finder_returns_the_known_crossing():
    # piecewise-linear accuracy through (0.3, 0.5) and (0.4, 1.0): reaches 0.9 at 0.38
    f = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    acc = np.array([0.0, 0.01, 0.5, 1.0, 1.0])
    f_star, censored = exp.threshold_fraction(f, acc, 0.9)
    assert f_star == pytest.approx(0.38, abs=1e-12) and not censored
    # a logistic curve sampled finely: the crossing of the interpolant is within the
    # curvature error of linear interpolation, (h^2/8) max|a''| / a' ~ 1e-5 here
    grid = np.linspace(0.05, 0.6, 400)
    center, width = 0.25, 0.02
    logistic = 1 / (1 + np.exp(-(grid - center) / width))
    known = center + width * math.log(0.9 / 0.1)
    assert exp.threshold_fraction(grid, logistic, 0.9)[0] == pytest.approx(known, abs=1e-4)
    # the first point already above: censored at it; never reached: NaN
    assert exp.threshold_fraction(f, np.ones(5), 0.9) == (0.1, True)
    nan, censored = exp.threshold_fraction(f, np.zeros(5), 0.9)
    assert math.isnan(nan) and censored
    with pytest.raises(ValueError, match="increasing"):
        exp.threshold_fraction(f[::-1], acc, 0.9)


def test_fit_of_c_on_exact_scaling_data_returns_c():
    moduli = np.array([17, 23, 31, 41, 53, 71, 97])
    c = 2.7482
    f = c * np.log(moduli) / moduli
    assert exp.fit_c(moduli, f) == pytest.approx(c, rel=1e-12)
    # a NaN (an M that never crossed) is left out of the fit
    f[2] = np.nan
    assert exp.fit_c(moduli, f) == pytest.approx(c, rel=1e-12)
    assert math.isnan(exp.fit_c(moduli, np.full(moduli.shape, np.nan)))
    np.testing.assert_allclose(exp.scaling_unit(moduli), np.log(moduli) / moduli)


def test_top_norm_ipr_takes_the_largest_neurons():
    ipr = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.95, 0.1, 0.15, 0.12, 0.11])
    norm = np.array([1.0, 5.0, 1.1, 4.0, 0.9, 6.0, 1.0, 1.0, 1.0, 1.0])
    assert exp.top_norm_ipr(ipr, norm, share=0.3) == pytest.approx(0.9)  # {0.95, 0.9, 0.8}
    assert exp.top_norm_ipr(ipr, norm, share=0.01) == pytest.approx(0.95)  # at least one


# ------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_quick_preset_runs_and_its_claims_hold(tmp_path):
    assert cli.main(["run", "grokking-scaling", "--preset", "quick",
                     "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    failed = [c["name"] for c in summary["claims"] if not c["passed"]]
    assert summary["passed"] and not failed, failed
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    ds = td.load(tmp_path / "results.nc")
    assert ds.test_accuracy.dims == ("M", "c", "seed")
    assert list(ds.M.values) == list(exp.PRESETS["quick"]["moduli"])
