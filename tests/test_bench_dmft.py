"""``traindyn bench dmft``: registered on the command line; its quick run (slow) returns
JSON with every section, finite numbers, and positive times, iterations and errors."""

import inspect
import json
import math

import pytest

from experiments import cli


def test_bench_dmft_is_registered():
    assert cli.BENCHMARKS["dmft"] == "experiments.bench.dmft"
    from experiments.bench import dmft as bench_dmft

    assert list(inspect.signature(bench_dmft.main).parameters) == ["quick", "seed"]


def _numbers(tree, path=""):
    """Every number in a JSON tree with its path (booleans are not numbers here)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def _flags(tree, path=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flags(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _flags(v, f"{path}[{i}]")
    elif isinstance(tree, bool):
        yield path, tree


# Quantities that are positive by construction: a time, an iteration count, a Monte Carlo
# error of a finite sample, a sample count. Exponents (a fitted log-log slope of seconds is
# still named "seconds" under "exponents" or "exponents_in_...", and a quick size range can fit it below 0 on a busy
# machine) and load averages are only finite.
POSITIVE = ("seconds", "iterations", "mc_error", "error_rms", "error_vs_reference",
            "samples", "multiply_adds", "windows", "over_dmft_time")


@pytest.mark.slow  # the quick bench compiles about twenty solver and sweep programs (< 1 min)
def test_bench_dmft_quick_reports_finite_positive_numbers():
    from experiments.bench import dmft as bench_dmft

    result = json.loads(json.dumps(bench_dmft.main(quick=True, seed=0)))  # JSON-able
    assert {"summary", "solve_time", "versus_network", "scaling", "machine"} <= set(result)
    assert {"two_layer", "deep_monte_carlo"} <= set(result["solve_time"])
    assert {"two_layer", "deep_linear", "monte_carlo"} <= set(result["scaling"])
    deep = result["solve_time"]["deep_monte_carlo"]
    assert {"per_iteration", "iterations", "full_size_solve_seconds"} <= set(deep)
    assert deep["per_iteration"]["full_size"]["how"]  # measured or how it was estimated
    targets = result["versus_network"]["by_target"]
    assert set(targets) == {"mc_error_loss", "error_vs_reference"}
    for target in targets.values():
        assert ("network_over_dmft_time" in target) == target["reached"]
    # every complete solve it timed converged (a diverged one would time nonsense)
    flags = [v for k, v in _flags(result) if k.endswith("converged")]
    assert flags and all(flags)
    numbers = list(_numbers(result))
    assert len(numbers) > 50
    for path, value in numbers:
        assert math.isfinite(value), path
        if "exponents" not in path and any(word in path.rsplit(".", 1)[-1] for word in POSITIVE):
            assert value > 0, path
    for name, value in result["summary"]["exponents"].items():
        flat = value.values() if isinstance(value, dict) else [value]
        assert all(math.isfinite(v) for v in flat), name
