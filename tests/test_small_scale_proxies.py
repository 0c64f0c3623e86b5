"""The small-scale-proxies reproduction: the z-loss against a direct computation, the
learning-rate sensitivity (Wortsman et al. 2023, eq. 1) on a constructed grid, the z-loss
inside a training run (fast), and the quick preset end to end (slow)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import dynamics as td
from dynamics import losses
from experiments import cli
from experiments import small_scale_proxies as ssp

LOGITS = np.array([[[2.5, -1.0, 0.0, -7.0], [0.3, 4.0, -0.2, 1.5]],
                   [[-3.0, 9.0, 1.0, -0.5], [12.0, 11.0, -2.0, 0.0]]])
LABELS = np.array([[0, 2], [1, 3]])


def _z_loss_numpy(logits, labels, mask=None, c=1e-4):
    log_z = np.log(np.exp(logits).sum(axis=-1))
    label_logit = np.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    terms = log_z - label_logit + c * log_z ** 2
    w = np.ones(terms.shape) if mask is None else mask.astype(float)
    return float((w * terms).sum() / w.sum())


def test_z_loss_matches_a_direct_numpy_computation():
    assert losses.Z_LOSS_COEFFICIENT == 1e-4  # PaLM, Sec. 5
    assert losses.get("cross_entropy_z_loss") is losses.cross_entropy_z_loss
    mask = np.array([[True, False], [True, True]])
    with jax.enable_x64(True):
        plain = float(losses.cross_entropy_z_loss(jnp.asarray(LOGITS), jnp.asarray(LABELS)))
        masked = float(losses.cross_entropy_z_loss(
            jnp.asarray(LOGITS), losses.Masked(jnp.asarray(LABELS), jnp.asarray(mask))))
        big = float(losses.cross_entropy_z_loss(jnp.asarray(LOGITS), jnp.asarray(LABELS),
                                                coefficient=0.5))
        ce = float(losses.cross_entropy(jnp.asarray(LOGITS), jnp.asarray(LABELS)))
    # float64 both ways, a few operations on O(10) numbers: agreement to rounding
    assert plain == pytest.approx(_z_loss_numpy(LOGITS, LABELS), rel=1e-13)
    assert masked == pytest.approx(_z_loss_numpy(LOGITS, LABELS, mask), rel=1e-13)
    assert big == pytest.approx(_z_loss_numpy(LOGITS, LABELS, c=0.5), rel=1e-13)
    # the extra term is 1e-4 mean (log Z)^2 (here log Z is up to 12.3: a visible 4e-3)
    log_z = np.log(np.exp(LOGITS).sum(-1))
    assert plain - ce == pytest.approx(1e-4 * np.mean(log_z ** 2), rel=1e-10)
    with pytest.raises(ValueError, match="cross_entropy_z_loss"):
        losses.get("z_loss")


def test_z_loss_alone_sees_a_shift_of_every_logit():
    """The cross-entropy is invariant to adding ``c`` to every logit; the z-loss is not:
    ``d/dc L(f + c) = 2 * 1e-4 * mean(log Z)`` (``d log Z / dc = 1``)."""
    with jax.enable_x64(True):
        f = jnp.asarray(LOGITS)
        y = jnp.asarray(LABELS)
        d_ce = jax.grad(lambda c: losses.cross_entropy(f + c, y))(0.0)
        d_z = jax.grad(lambda c: losses.cross_entropy_z_loss(f + c, y))(0.0)
    want = 2e-4 * np.mean(np.log(np.exp(LOGITS).sum(-1)))
    assert abs(float(d_ce)) < 1e-14          # rounding of float64 sums of softmax - onehot
    assert float(d_z) == pytest.approx(want, rel=1e-10)


def test_lr_sensitivity_on_a_constructed_grid():
    # final losses on a grid of 5 learning rates, initial loss 4: the third is the best
    # (1.0); the last diverged (counts as 4); the fourth is above the initial loss (capped)
    final = xr.DataArray([3.0, 2.0, 1.0, 5.0, 0.5], dims="lr", coords={"lr": [1, 2, 3, 4, 5]})
    diverged = xr.DataArray([False, False, False, False, True], dims="lr")
    got = float(ssp.lr_sensitivity(final, 4.0, diverged))
    # min(final, 4) = [3, 2, 1, 4, 4], the best 1: mean of [2, 1, 0, 3, 3]
    assert got == pytest.approx(9 / 5, rel=1e-12)
    # a non-finite final loss counts as diverged; without divergence the best is 0.5
    final_nan = final.copy(data=[3.0, 2.0, 1.0, np.nan, 0.5])
    assert float(ssp.lr_sensitivity(final_nan, 4.0)) == pytest.approx(
        (2.5 + 1.5 + 0.5 + 3.5 + 0.0) / 5, rel=1e-12)
    # a flat curve is insensitive
    assert float(ssp.lr_sensitivity(final * 0 + 2.0, 4.0)) == 0.0


def test_z_loss_task_trains_with_the_z_loss():
    """A z-loss run's initial training loss is the plain run's (same seed, same initial
    parameters) plus ``1e-4`` times the measured mean ``(log Z)^2``."""
    kw = dict(steps=1, batch_size=4, n_train=8, seq_len=4)
    plain_spec = ssp.make_spec(8, False, False, **kw)
    plain = td.sweep(plain_spec, seed=[0], lr=[1e-3], progress=False)
    spec = ssp.make_spec(8, False, True, **kw)
    assert spec.task.loss == "cross_entropy_z_loss"
    assert plain_spec.task.loss == "cross_entropy"
    for k, v in plain_spec.task.arrays().items():  # the same sequences and noise draws
        assert np.array_equal(spec.task.arrays()[k], v), k
    z = td.sweep(spec, seed=[0], lr=[1e-3], progress=False)
    z0, p0 = z.isel(step=0, seed=0, lr=0), plain.isel(step=0, seed=0, lr=0)
    assert float(z0.z_loss) == pytest.approx(float(p0.z_loss), rel=1e-6)  # same init
    # float32 losses of size ~3.5: the difference 1e-4 * ~12 = 1.2e-3 is known to ~1e-6
    assert float(z0.train_loss - p0.train_loss) == pytest.approx(
        1e-4 * float(z0.z_loss), abs=5e-6)


@pytest.mark.slow
def test_quick_preset_runs_through_the_command_line(tmp_path):
    code = cli.main(["run", "small-scale-proxies", "--preset", "quick", "--out",
                     str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert code == (0 if summary["passed"] else 1)
    names = {c["name"]: c for c in summary["claims"]}
    assert set(names) == {"attention_logit_grows", "qk_layernorm_bounds_logits",
                          "qk_layernorm_lowers_sensitivity", "log_z_drifts_without_z_loss",
                          "z_loss_keeps_log_z", "sensitivity_grows_with_width",
                          "mitigations_flatten_width_growth"}
    # the attention-logit growth appears at this scale (measured: ~1e3-1e4 times)
    assert names["attention_logit_grows"]["passed"], names["attention_logit_grows"]
    assert names["qk_layernorm_bounds_logits"]["passed"], names["qk_layernorm_bounds_logits"]
    assert (tmp_path / "figure.png").stat().st_size > 10_000
