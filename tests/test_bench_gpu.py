"""``traindyn bench gpu``: registered; its sections at the quick size on the CPU (slow);
its time budget skips the sections it cannot start."""

import json
import math

import pytest

from experiments import cli
from experiments.bench import gpu


def test_bench_gpu_is_registered_and_refuses_unknown_sections():
    assert cli.BENCHMARKS["gpu"] == "experiments.bench.gpu"
    assert set(gpu.FULL) == set(gpu.QUICK) == set(gpu.SECTIONS)
    with pytest.raises(ValueError, match="sections must be among"):
        gpu.main(quick=True, sections=("dmft",))


def test_a_spent_budget_skips_every_section_and_says_so():
    result = json.loads(json.dumps(gpu.main(quick=True, budget_s=0.0)))
    for name in gpu.SECTIONS:
        assert "budget of 0 s was spent" in result[name]["skipped"]
    assert result["section_seconds"] == {}


@pytest.mark.slow  # three sections compile a DMFT solver, four NTK programs and four sweeps
def test_quick_sections_report_converged_agreeing_finite_figures():
    # The sweep and one-iteration sections are the functions that `bench sweep --quick`
    # and `bench dmft --quick` run in their own tests.
    result = json.loads(json.dumps(gpu.main(
        quick=True, sections=("dmft_solve", "empirical_ntk", "sharpness"))))
    assert "sweep" not in result and set(result["section_seconds"]) == {
        "dmft_solve", "empirical_ntk", "sharpness"}
    solve = result["dmft_solve"]
    assert solve["converged"] and solve["iterations"] >= 2
    assert solve["seconds"] > 0 and math.isfinite(solve["final_train_loss"])
    # float32 NTK blocks of a few thousand products: ~1e-6 of the largest entry
    for method, entry in result["empirical_ntk"]["ours"].items():
        assert entry["max_abs_diff_over_max_vs_jacobian"] < 1e-5, method
    sharp = result["sharpness"]
    assert set(sharp["ratio"]) == {"cold_20", "warm_4", "warm_6"}
    assert all(r > 0 for r in sharp["ratio"].values())
    # 20 cold Lanczos steps on the 433-parameter quick MLP converge (Kaniel-Paige bound):
    # float32 round-off against the 60-step reference, measured ~1e-6
    assert sharp["max_relative_error_vs_cold_60"]["cold_20"] < 1e-3
