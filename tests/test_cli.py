"""The command line: list, run (end to end, slow), bench (smoke, slow), errors."""

import json

import pytest

from experiments import EXPERIMENTS, cli


def test_list_names_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out


def test_unknown_experiment_is_a_clear_error(capsys):
    assert cli.main(["run", "no-such-thing"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


@pytest.mark.slow
def test_main_job_runs_and_its_claims_hold(tmp_path):
    """The README's main job, end to end: files written and every claim passes."""
    assert cli.main(["run", "lazy-rich", "--preset", "quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] and len(summary["claims"]) >= 5
    assert (tmp_path / "figure.png").stat().st_size > 10_000
    import dynamics

    ds = dynamics.load(tmp_path / "results.nc")
    assert ds.train_loss.dims == ("seed", "lr", "output_scale", "step")
    assert ds.attrs["experiment"] == "lazy-rich" and "config" in ds.attrs


@pytest.mark.slow
def test_bench_sweep_quick_reports_every_strategy(tmp_path):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "sweep", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for case in result["cases"]:
        assert set(case["strategies"]) == {"vmap", "map", "chunked", "loop"}
        assert all(v["seconds"] > 0 for v in case["strategies"].values())
