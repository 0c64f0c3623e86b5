"""``import traindyn``: one import root that names this installation's packages, whatever a
user's working directory holds."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dynamics
import kernels
import traindyn


def test_traindyn_is_the_simulator_and_its_submodules_are_the_same_objects():
    import traindyn.kernels.dmft
    import traindyn.tasks
    assert traindyn.sweep is dynamics.sweep and traindyn.MLP is dynamics.MLP
    assert traindyn.kernels is kernels and traindyn.kernels.dmft is kernels.dmft
    assert traindyn.tasks is dynamics.tasks and traindyn.curvature is dynamics.curvature
    # an alias never re-executes a module nor takes over its spec
    assert dynamics.tasks.__spec__.name == "dynamics.tasks"
    assert set(dynamics.__all__) <= set(traindyn.__all__)


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    # ``-c`` puts the working directory first on sys.path, as a notebook does
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_folders_named_like_our_packages_in_the_working_directory_do_not_shadow_them(tmp_path):
    for name in ("experiments", "kernels", "dynamics"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise RuntimeError('the user {name}')\n")
    done = _python(f"""
        import traindyn as td
        from traindyn.kernels import empirical_ntk
        from traindyn.experiments import cli
        import experiments, kernels
        assert td.kernels.__file__.startswith({str(traindyn.kernels.__file__.rsplit('kernels', 1)[0])!r})
        assert experiments is td.experiments and kernels is td.kernels
        print(td.tasks.digits(n_train=8).x_train.shape)
        """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(8, 64)"


def test_a_foreign_module_imported_first_is_named_not_mixed_in(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    done = _python("import kernels\nimport traindyn\n", tmp_path)
    assert done.returncode != 0
    assert "ImportError" in done.stderr
    assert str(tmp_path / "kernels" / "__init__.py") in done.stderr and "import traindyn first" in done.stderr
