"""notebooks/curvature.ipynb runs top to bottom and its own assertions hold (HVP against
the dense product, Lanczos against eigh, Hutchinson within 4 standard errors, the sharpness
of the loop against eigh at the returned final parameters).

``tests/test_notebooks.py`` already executes every notebook in the default run; this test
is the curvature notebook's own and is marked ``slow`` so that the default run pays for
the notebook once."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

PATH = pathlib.Path(__file__).parent.parent / "notebooks" / "curvature.ipynb"


@pytest.mark.slow
def test_curvature_notebook_executes(tmp_path):
    nb = nbformat.read(PATH, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "in the loop" in text  # the last cell ran and printed its comparison
