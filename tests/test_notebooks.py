"""Every notebook runs top to bottom (offline: the install cell skips when traindyn is
installed) and its own assertions hold; every notebook installs traindyn from the one
repository that pyproject.toml names, and keeps its executed outputs.

Run as a script, ``python tests/test_notebooks.py``, it executes every notebook and saves
its outputs (the figures a rendered notebook page shows) in place, without the stderr
streams (warnings that name this machine's paths).
"""

import base64
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"][
    "Repository"]


def executed(path, cwd):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def install_cell(nb) -> str:
    return next(c.source for c in nb.cells if c.cell_type == "code")


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path):
    nb = executed(path, tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_every_notebook_installs_from_the_one_repository():
    """One install cell, word for word, in every notebook; it and the Colab badge point at
    the repository of pyproject.toml's [project.urls]."""
    assert REPOSITORY.startswith("https://github.com/")
    cells = {path.name: install_cell(nbformat.read(path, as_version=4)) for path in NOTEBOOKS}
    assert len(set(cells.values())) == 1, cells
    assert f'REPOSITORY = "{REPOSITORY}"' in cells[NOTEBOOKS[0].name]
    for path in NOTEBOOKS:
        text = "".join(c.source for c in nbformat.read(path, as_version=4).cells)
        colab = REPOSITORY.replace("https://github.com/", "https://colab.research.google.com/"
                                   "github/") + f"/blob/main/notebooks/{path.name}"
        assert f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]" \
               f"({colab})" in text, path.name
        assert text.count("github.com/") == text.count(REPOSITORY.removeprefix("https://")), \
            f"{path.name} names another repository"


@pytest.mark.parametrize("inside_checkout", [True, False])
def test_the_install_cell_installs_the_checkout_or_the_repository(tmp_path, monkeypatch,
                                                                 inside_checkout):
    """The install cell as it would run without traindyn installed (pip is recorded, not
    run): inside a checkout it installs that checkout, elsewhere the repository."""
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    commands = []
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.setattr(subprocess, "check_call", commands.append)
    monkeypatch.chdir(ROOT / "notebooks" if inside_checkout else tmp_path)
    exec(install_cell(nbformat.read(NOTEBOOKS[0], as_version=4)), {})
    source = str(ROOT.resolve()) if inside_checkout else f"git+{REPOSITORY}"
    assert commands == [[sys.executable, "-m", "pip", "install", "-q", source]]


def without_stderr(nb):
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_keep_their_executed_outputs(path):
    """Saved outputs, so that a rendered page shows the figures: every code cell after
    the install cell ran, every cell that plots keeps its figure, and no output names the
    machine it ran on."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"][1:]
    assert all(c.execution_count for c in code), path.name
    for cell in code:
        figures = [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        plots = re.search(r"\bplt\.|\.plot\(", cell.source) is not None
        assert bool(figures) == plots, cell.source[:80]
        assert all(base64.b64decode(f)[:4] == b"\x89PNG" for f in figures)
    text = nbformat.writes(nb)
    assert str(ROOT) not in text and os.path.expanduser("~") + "/" not in text


if __name__ == "__main__":
    import tempfile

    for notebook in NOTEBOOKS:
        print(f"executing {notebook.name}", flush=True)
        with tempfile.TemporaryDirectory() as cwd:
            nbformat.write(without_stderr(executed(notebook, cwd)), notebook)
