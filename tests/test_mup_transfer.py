"""The mup-transfer reproduction: its best-learning-rate logic on a constructed grid
(default) and the quick preset end to end through the command line (slow)."""

import json

import numpy as np
import pytest
import xarray as xr

from experiments import cli
from experiments import mup_transfer as mt


def test_best_learning_rates_skip_diverged_runs_and_average_seeds():
    lrs = [2.0 ** k for k in range(-3, 1)]
    # seed means per width: width 8 is best at 2^-1; at width 16 the best mean (2^0) has
    # a diverged seed, so 2^-2 wins
    loss = np.array([[[3.0, 2.0, 1.0, 2.0], [3.0, 1.0, 2.0, 0.1]],
                     [[3.0, 2.0, 1.0, 2.0], [3.0, 1.0, 2.0, 0.1]]])   # (seed, width, lr)
    diverged = np.zeros_like(loss, bool)
    diverged[1, 1, 3] = True
    ds = xr.Dataset({"mlp_final_loss": (("seed", "mlp_width", "mlp_lr"), loss),
                     "mlp_diverged": (("seed", "mlp_width", "mlp_lr"), diverged)},
                    coords={"mlp_lr": lrs, "mlp_width": [8, 16], "seed": [0, 1]})
    best, at_best = mt.best_lrs(ds, "mlp")
    np.testing.assert_array_equal(best.values, [-1.0, -2.0])
    np.testing.assert_array_equal(at_best.values, [1.0, 1.0])


@pytest.mark.slow
def test_quick_preset_claims_hold(tmp_path):
    assert cli.main(["run", "mup-transfer", "--preset", "quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] and len(summary["claims"]) == 7
    assert (tmp_path / "figure.png").stat().st_size > 10_000
