"""The README's commands are the ones CI runs, and every Python snippet in it runs as
written, on its own."""

import ast
import builtins
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", README)


def python_snippets():
    return re.findall(r"```python\n(.+?)```", README, flags=re.S)


def test_readme_opens_with_the_two_commands():
    commands = readme_commands()
    assert len(commands) >= 2
    assert "traindyn run lazy-rich" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_exactly():
    ci = (ROOT / ".ci" / "run").read_text()
    assert f'bash -c "{readme_commands()[1]}"' in ci


def test_every_package_directory_is_shipped():
    """A subpackage left out of pyproject's package list would import in an editable
    install and fail in a regular one (e.g. in Colab)."""
    import tomllib

    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(str(ROOT), include=include))
    wanted = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("dynamics", "kernels", "experiments")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert wanted and wanted <= shipped


def undefined_names(source: str) -> set[str]:
    """Names a snippet loads that it neither defines nor imports, nor are builtins: a
    snippet that runs on its own has none (a static check of what executing it tests)."""
    tree = ast.parse(source)
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            defined.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return loaded - defined


def test_every_snippet_defines_what_it_uses():
    snippets = python_snippets()
    assert len(snippets) >= 5
    for i, source in enumerate(snippets):
        assert not undefined_names(source), (i, undefined_names(source), source[:200])


def test_the_undefined_name_check_catches_a_missing_import():
    assert undefined_names("ds = td.sweep(spec, lr=lrs)") == {"td", "spec", "lrs"}
    assert undefined_names("import numpy as np\nx = np.ones(3)\nprint(x)") == set()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_snippets())))
def test_every_snippet_runs_on_its_own(index, tmp_path):
    """Each snippet in a fresh interpreter, in an empty folder (what it writes stays
    there), as a reader would paste it. The README promises under a minute on 2 CPU cores;
    the measured times are in the closing notes, the timeout here is only a guard."""
    source = python_snippets()[index]
    env = dict(os.environ, MPLBACKEND="Agg")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", source], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"snippet {index} failed after {seconds:.0f} s:\n{proc.stderr[-3000:]}"


def test_the_experiment_table_lists_every_experiment_with_its_running_times():
    """A row per registered experiment, with the times its ``SECONDS`` records (as
    ``traindyn list`` prints them), so the README cannot drift from the measurements."""
    from experiments import EXPERIMENTS, get
    from experiments.cli import duration

    text = (ROOT / "README.md").read_text()
    for name in EXPERIMENTS:
        module = get(name)
        times = f"{duration(module, 'quick')} / {duration(module, 'full')}"
        rows = [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]
        assert len(rows) == 1, name
        assert rows[0].endswith(f"| {times} |"), (name, rows[0][-40:], times)
