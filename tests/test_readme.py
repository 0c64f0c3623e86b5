"""The README's commands are the ones CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).parent.parent


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


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
    import pathlib
    import tomllib

    from setuptools import find_packages

    root = pathlib.Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(str(root), include=include))
    wanted = {
        ".".join(p.parent.relative_to(root).parts)
        for top in ("dynamics", "kernels", "experiments")
        for p in (root / top).rglob("__init__.py")
    }
    assert wanted and wanted <= shipped
