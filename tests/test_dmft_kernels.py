"""Tests for experiments.dmft_kernels: the cosine alignment against hand computations, the
data (x . x / D = 1, +-1 targets ordered by class), the claims' bookkeeping on a small
hand-built Dataset whose answers are known (and whose claims fail when the data say so),
input validation, and (slow) the quick preset end to end."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import dynamics as td
import experiments.dmft_kernels as dk

ROOT = pathlib.Path(__file__).resolve().parents[1]

# -- cosine alignment ----------------------------------------------------------------------


def test_cosine_alignment_matches_hand_computation():
    eye = np.eye(2)
    ones = np.ones((2, 2))
    # <I, 11^T> = 2, ||I|| = sqrt 2, ||11^T|| = 2: 2 / (2 sqrt 2) = 1/sqrt 2
    assert dk.cosine_alignment(eye, ones) == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    # [[1, 2], [3, 4]] . [[0, 1], [1, 0]] = 5; norms sqrt 30 and sqrt 2
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert dk.cosine_alignment(a, b) == pytest.approx(5 / math.sqrt(60), abs=1e-15)
    # scale invariant, sign sensitive; leading axes broadcast
    stacked = dk.cosine_alignment(np.stack([a, -a, 3 * a]), a[None])
    np.testing.assert_allclose(stacked, [1.0, -1.0, 1.0], atol=1e-15)


def test_cosine_alignment_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        dk.cosine_alignment(np.eye(2), np.eye(3))
    with pytest.raises(ValueError, match="same shape"):
        dk.cosine_alignment(np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match="zero"):
        dk.cosine_alignment(np.zeros((2, 2)), np.eye(2))


def test_largest_ratio():
    # rows 1, 1/2, 1/4 and 4, 3: the largest consecutive ratio is 3/4
    assert dk.largest_ratio([[1.0, 0.5, 0.25], [4.0, 3.0, 1.0]]) == pytest.approx(0.75)
    assert dk.largest_ratio([1.0, 2.0]) == pytest.approx(2.0)


# -- data ----------------------------------------------------------------------------------


def test_binary_digits_normalised_and_ordered():
    x, y = dk.binary_digits(10, classes=(0, 1))
    assert x.shape == (10, 64) and x.dtype == np.float64
    # x . x / D = 1 for every image (float64 rounding only)
    np.testing.assert_allclose(np.sum(x * x, 1) / 64, 1.0, atol=1e-12)
    assert set(np.unique(y)) == {-1.0, 1.0}
    assert np.all(np.diff(y) >= 0)  # ordered by class
    # the images are real digits of two classes: same-class images are on average more
    # similar than images of different classes (measured 0.43 vs -0.54 for seed 0)
    k = x @ x.T / 64
    same = (y[:, None] == y[None]) & ~np.eye(10, dtype=bool)
    assert k[same].mean() > 0.3 > -0.3 > k[y[:, None] != y[None]].mean()


def test_binary_digits_rejects_bad_input():
    with pytest.raises(ValueError, match="n_train"):
        dk.binary_digits(1)
    with pytest.raises(ValueError, match="classes"):
        dk.binary_digits(10, classes=(0, 1, 2))


def test_network_gamma0s_replaces_zero_only():
    assert dk.network_gamma0s([0.0, 0.5, 1.5]) == [dk.LAZY_NETWORK_GAMMA0, 0.5, 1.5]


@pytest.mark.parametrize("change, match", [
    (dict(gamma0s=(0.0, 1.0, 0.5)), "gamma0s"),
    (dict(gamma0s=(1.0,)), "gamma0s"),
    (dict(gamma0s=(-0.5, 1.0)), "gamma0s"),
    (dict(widths=(500, 0)), "widths"),
    (dict(depth=0), "depth"),
    (dict(steps=1), "steps"),
    (dict(lr=-0.1), "lr"),
    (dict(samples=1), "samples"),
])
def test_run_validates_before_computing(change, match):
    with pytest.raises(ValueError, match=match):
        dk.run(**{**dk.PRESETS["quick"], **change})


# -- claims on a hand-built Dataset -------------------------------------------------------


def synthetic(loss_factor=(1.0, 0.5), dmft_final=None):
    """A Dataset shaped like ``run``'s (dims deliberately in another order than the sweep
    writes them): 2 seeds, gamma0 (0, 1), one width, steps 0..2, 2 layers, 2x2 kernels.

    Losses: 1 at step 0, then ``loss_factor[g]**step`` for both DMFT and networks.
    Kernels: everything is I at step 0; at the end, the DMFT's is I at gamma0 = 0 and
    ``dmft_final`` (default [[1, .5], [.5, 1]]) at gamma0 = 1; the networks' final kernel is
    I for both seeds at gamma0 = 0, and I (seed 0), 11^T (seed 1) at gamma0 = 1."""
    eye, ones = np.eye(2), np.ones((2, 2))
    dmft_final = np.array([[1.0, 0.5], [0.5, 1.0]]) if dmft_final is None else dmft_final
    steps = np.arange(3)
    loss = np.array([[f**s for s in steps] for f in loss_factor])  # (gamma0, step)
    net_k = np.broadcast_to(eye, (1, 2, 2, 3, 2, 2, 2)).copy()  # width seed gamma0 step layer
    net_k[0, 1, 1, -1] = ones
    dmft_k = np.broadcast_to(eye, (2, 3, 2, 2, 2)).copy()  # gamma0 step layer
    dmft_k[1, -1] = dmft_final
    kdims = ("train_example", "train_example_2")
    return xr.Dataset(
        {"train_loss": (("width", "seed", "gamma0", "step"),
                        np.broadcast_to(loss, (1, 2, 2, 3)).copy()),
         "feature_kernel": (("width", "seed", "gamma0", "step", "layer") + kdims, net_k),
         "dmft_train_loss": (("gamma0", "step"), loss),
         "dmft_feature_kernel": (("gamma0", "step", "layer") + kdims, dmft_k),
         "dmft_initial_feature_kernel": (("layer",) + kdims, np.stack([eye, eye])),
         "dmft_converged": (("gamma0",), [1.0, 1.0]),
         "dmft_mc_error_loss": (("gamma0",), [0.0, 0.01])},
        coords={"width": [500], "seed": [0, 1], "gamma0": [0.0, 1.0], "step": steps,
                "layer": [1, 2]})


def test_alignments_and_movement_on_known_kernels():
    ds = synthetic()
    align = dk.final_alignment(ds)
    assert align.shape == (1, 2, 2)  # (width, gamma0, layer)
    # gamma0 = 0: I against I. gamma0 = 1: seed mean [[1, .5], [.5, 1]] against the DMFT's
    # [[1, .5], [.5, 1]]: 1 as well
    np.testing.assert_allclose(align, 1.0, atol=1e-15)
    # against a DMFT final kernel I: <[[1, .5], [.5, 1]], I> = 2, norms sqrt 2.5, sqrt 2
    align = dk.final_alignment(synthetic(dmft_final=np.eye(2)))
    np.testing.assert_allclose(align[0, 1], 2 / math.sqrt(5), atol=1e-15)
    theory, net = dk.movement(ds)
    assert theory.shape == (2, 2) and net.shape == (1, 2, 2)
    np.testing.assert_allclose(theory[0], 1.0, atol=1e-15)
    np.testing.assert_allclose(theory[1], 2 / math.sqrt(5), atol=1e-15)
    # networks: the mean over seeds of cos(I, I) = 1 and cos(11^T, I) = 1/sqrt 2
    np.testing.assert_allclose(net[0, 1], (1 + 1 / math.sqrt(2)) / 2, atol=1e-15)


def test_claims_follow_the_data():
    # a DMFT final kernel [[1, b], [b, 1]] whose alignment with I, 1/sqrt(1 + b^2), equals
    # the networks' (1 + 1/sqrt 2)/2: it moves as far as theirs, and its alignment with
    # their seed mean [[1, .5], [.5, 1]], (2 + b)/sqrt(2.5 (2 + 2b^2)) = 0.996, passes
    target = (1 + 1 / math.sqrt(2)) / 2
    b = math.sqrt(1 / target**2 - 1)
    good = {c.name: c for c in dk.check(synthetic(dmft_final=np.array([[1, b], [b, 1]])))}
    assert all(c.passed for c in good.values()), [c for c in good.values() if not c.passed]
    assert good["kernel_movement_matches_dmft"].measured == pytest.approx(0.0, abs=1e-12)
    assert good["final_kernel_alignment"].measured == pytest.approx(
        (2 + b) / math.sqrt(2.5 * (2 + 2 * b**2)), abs=1e-12)
    # the default DMFT kernel [[1, .5], [.5, 1]] moves less than the networks':
    # 2/sqrt 5 = 0.894 against 0.854
    less = {c.name: c for c in dk.check(synthetic())}
    assert less["kernel_movement_matches_dmft"].measured == pytest.approx(
        2 / math.sqrt(5) - target, abs=1e-12)
    assert not less["kernel_movement_matches_dmft"].passed
    # mid step 1: losses 1 and 0.5, ratio 0.5
    assert good["dmft_loss_falls_with_gamma0"].measured == pytest.approx(0.5)
    assert good["network_loss_matches_dmft"].measured == pytest.approx(0.0)
    # the loss rising with gamma0 fails claim 1 for both
    bad = {c.name: c for c in dk.check(synthetic(loss_factor=(0.5, 0.6)))}
    assert not bad["dmft_loss_falls_with_gamma0"].passed
    assert not bad["network_loss_falls_with_gamma0"].passed
    # a DMFT kernel far from the networks' fails the alignment claim, and one that does
    # not move from I fails the movement claim (alignment 1 at both gamma0)
    far = {c.name: c for c in dk.check(synthetic(dmft_final=np.eye(2)))}
    assert not far["final_kernel_alignment"].passed
    assert not far["dmft_kernels_move_with_gamma0"].passed
    unconverged = synthetic()
    unconverged["dmft_converged"] = (("gamma0",), [1.0, 0.0])
    assert not {c.name: c for c in dk.check(unconverged)}["dmft_converged"].passed


# -- end to end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_preset_runs_and_its_claims_hold(tmp_path):
    # ``cli.main`` in a child process: the test suite compiles at XLA's optimisation level
    # 0 (conftest), which makes the Monte Carlo solver's loops ~10x slower (measured
    # 312 s against 31 s for this preset on 2 CPU cores); the child drops that flag.
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_backend_optimization_level=0", "")
    args = ["run", "dmft-kernels", "--preset", "quick", "--out", str(tmp_path)]
    child = subprocess.run(
        [sys.executable, "-c", f"import sys; from experiments import cli; "
         f"sys.exit(cli.main({args!r}))"],
        env={**os.environ, "XLA_FLAGS": flags}, cwd=ROOT, capture_output=True, text=True)
    assert child.returncode == 0, child.stdout + child.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] and len(summary["claims"]) == 9
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    ds = td.load(tmp_path / "results.nc")
    preset = dk.PRESETS["quick"]
    assert ds.feature_kernel.sizes["layer"] == preset["depth"]
    assert ds.dmft_feature_kernel.dims == ("gamma0", "step", "layer", "train_example",
                                           "train_example_2")
    np.testing.assert_allclose(ds.gamma0, preset["gamma0s"])
    np.testing.assert_allclose(ds.network_gamma0, dk.network_gamma0s(preset["gamma0s"]))
    # the lazy DMFT solve is exact (no iterations); the others are Monte Carlo solves
    assert ds.dmft_iterations.values[0] == 0 and np.all(ds.dmft_iterations.values[1:] > 0)
