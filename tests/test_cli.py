"""The command line: help, list, run (end to end, slow), bench (smoke, slow), errors."""

import json
import re
import types

import matplotlib.pyplot as plt
import pytest

import dynamics as td
import experiments
from experiments import EXPERIMENTS, cli
from experiments.common import Claim


def test_list_names_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out


def test_unknown_experiment_is_a_clear_error(capsys):
    assert cli.main(["run", "no-such-thing"]) == 2
    err = capsys.readouterr().err
    assert ("unknown experiment 'no-such-thing' (known: adaptive-edge-of-stability, "
            "batch-hessian," in err)
    assert "did you mean" not in err  # nothing is close


@pytest.mark.parametrize("argv, closest", [(["run", "lazy-rish"], "lazy-rich"),
                                           (["run", "edge-of-stabilty"], "edge-of-stability"),
                                           (["bench", "swep"], "sweep")])
def test_a_misspelt_name_suggests_the_closest(capsys, argv, closest):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"did you mean {closest!r}?" in err and err.count("\n") == 1, err


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "traindyn run NAME" in out and "traindyn list" in out
    assert not re.search(r"``|:(func|class|mod):|\*\*", out), out  # no reStructuredText


def test_run_help_lists_every_experiment_and_what_its_presets_cost(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        module = experiments.get(name)
        line = next(line for line in out.splitlines() if line.startswith(f"  {name} "))
        assert re.search(rf"{re.escape(cli.duration(module, 'quick'))}\s+"
                         rf"{re.escape(cli.duration(module, 'full'))}\s+"
                         rf"{re.escape(module.TITLE)}$", line), line


def test_list_aligns_long_names(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    starts = {line.index(experiments.get(name).TITLE)
              for name in EXPERIMENTS for line in lines if line.startswith(f"  {name} ")}
    assert len(starts) == 1, starts  # every title in one column


def test_every_experiment_declares_its_measured_running_times():
    for name in EXPERIMENTS:
        module = experiments.get(name)
        assert set(module.SECONDS) == set(module.PRESETS), name
        assert module.SECONDS["quick"] > 0, name  # every quick preset was measured
        assert module.SECONDS["full"] is None or module.SECONDS["full"] > 0, name
    assert cli.duration(module, "quick").endswith((" s", " min"))
    fake = types.SimpleNamespace(SECONDS={"quick": 45, "full": 1500})
    assert (cli.duration(fake, "quick"), cli.duration(fake, "full")) == ("45 s", "25 min")
    assert cli.duration(types.SimpleNamespace(SECONDS={"full": None}), "full") == "not measured"


def test_an_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert cli.main(["run", "saxe", "--out", str(blocker / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"traindyn: error: output folder '{blocker / 'out'}' is "
                                   "not writable")
    assert captured.err.count("\n") == 1 and captured.out == ""  # nothing ran


def tiny_experiment(calls: list, capsys=None):
    """A stand-in experiment module: one small sweep, one claim, a figure."""
    task = td.tasks.teacher_student_linear(dim=3, n_train=8, n_test=4, seed=0)
    spec = td.Spec(td.MLP(width=4, out_dim=1), task, td.optimizers.sgd(0.1), steps=4,
                   log_every=1, observables=("loss",))

    def run():
        if capsys is not None:
            calls.append(capsys.readouterr())  # what was printed before the run started
        return td.sweep(spec, seed=range(2))

    def plot(ds, path):
        ds.train_loss.plot.line(x="step")
        plt.savefig(path)

    return types.SimpleNamespace(
        NAME="tiny", TITLE="A tiny sweep", PRESETS={"quick": {}, "full": {}},
        SECONDS={"quick": 12, "full": None}, run=run, plot=plot,
        check=lambda ds: [Claim("loss falls", float(ds.train_loss[:, -1].max()),
                                float(ds.train_loss[:, 0].min()), "<=")])


def test_run_prints_the_expected_time_then_shows_a_progress_bar(tmp_path, capsys,
                                                               monkeypatch):
    calls = []
    monkeypatch.setattr(experiments, "get", lambda name: tiny_experiment(calls, capsys))
    assert cli.main(["run", "tiny", "--out", str(tmp_path)]) == 0
    before = calls[0]
    assert before.out == "tiny (quick): expected running time about 12 s on 2 CPU cores\n"
    after = capsys.readouterr()
    assert re.search(r"sweep: 100%.* 8.00/8.00 ", after.err), after.err  # 2 runs x 4 steps
    assert "[PASS] loss falls" in after.out
    assert cli.main(["run", "tiny", "--preset", "full", "--out", str(tmp_path)]) == 0
    assert calls[1].out == "tiny (full): running time not measured yet\n"


def test_progress_is_on_in_execute_and_in_show_progress_only(tmp_path, capsys):
    from dynamics import sweeps
    from experiments.common import execute

    module = tiny_experiment([])
    execute(module, out=tmp_path, progress=False)
    assert "sweep:" not in capsys.readouterr().err
    module.run()
    assert "sweep:" not in capsys.readouterr().err
    with sweeps.show_progress():
        module.run()
    assert "sweep: 100%" in capsys.readouterr().err


def test_an_interrupted_run_ends_with_one_line(tmp_path, capsys, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    module = tiny_experiment([])
    module.run = interrupted
    monkeypatch.setattr(experiments, "get", lambda name: module)
    assert cli.main(["run", "tiny", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "traindyn: interrupted\n"


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
