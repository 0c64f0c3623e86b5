"""Oracles of the more-is-better reproduction (Simon et al. 2024): the claims' helpers on
constructed data, and the quick preset end to end."""

import numpy as np
import pytest
import xarray as xr

from experiments import more_is_better as mib


def test_largest_rise_counts_standard_errors():
    # a fall everywhere is negative; one rise of 0.1 with standard errors 0.03 and 0.04
    # (combined 0.05) is 2 standard errors
    assert mib.largest_rise([1.0, 0.8, 0.6], [0.01, 0.01, 0.01]) < 0
    assert mib.largest_rise([1.0, 0.8, 0.9], [0.01, 0.03, 0.04]) == pytest.approx(2.0)


def _fake(risk_k, risk_n, ridge_k=None):
    """A results Dataset whose measured risks equal the given theory-like curves."""
    lam, v = mib.theory.powerlaw_task(100, 1.2, 1.4)
    sizes, ridges = [32, 64, 128], np.array([0.01, 0.1, 1.0])
    theory = {a: np.stack([mib.theory.rf_risk(lam, v, *((64, s) if a == "features" else
                                                         (s, 64)), ridges) for s in sizes])
              for a in ("features", "samples")}
    noise = np.array([1.0, 1.01, 0.99])[:, None, None]   # 3 seeds, mean exactly 1
    ds = xr.Dataset({
        "test_risk_vs_features": (("seed", "features", "ridge"),
                                  noise * theory["features"] * risk_k),
        "test_risk_vs_samples": (("seed", "samples", "ridge"),
                                 noise * theory["samples"] * risk_n),
        "theory_vs_features": (("features", "ridge"), theory["features"]),
        "theory_vs_samples": (("samples", "ridge"), theory["samples"]),
    }, coords={"seed": [0, 1, 2], "features": sizes, "samples": sizes, "ridge": ridges})
    ds.attrs.update(modes=100, alpha=1.2, beta=1.4, fixed=64, noise=0.0, null_risk=1.0)
    return ds


def test_check_passes_on_theory_and_fails_when_off_by_ten_percent():
    claims = {c.name: c for c in mib.check(_fake(1.0, 1.0))}
    assert claims["theory_at_optimal_ridge"].measured == pytest.approx(0.0, abs=1e-12)
    assert claims["theory_at_optimal_ridge"].passed
    assert claims["theory_optimal_ridge_monotone"].passed
    off = {c.name: c for c in mib.check(_fake(1.10, 1.0))}
    assert off["theory_at_optimal_ridge"].measured == pytest.approx(0.10, rel=1e-9)
    assert not off["theory_at_optimal_ridge"].passed


def test_monotonicity_claim_fails_on_a_rising_curve():
    # risks multiplied by (1, 1.5, 2.5) along n: the optimal risk then rises
    claims = {c.name: c for c in mib.check(_fake(1.0, np.array([1.0, 1.5, 2.5])[:, None]))}
    assert not claims["risk_monotone_in_samples"].passed
    assert claims["risk_monotone_in_features"].passed


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
    from experiments.common import execute

    summary = execute(mib, "quick", tmp_path, progress=False)
    failed = [c["name"] for c in summary["claims"] if not c["passed"]]
    assert summary["passed"], failed
    assert (tmp_path / "figure.png").exists()
