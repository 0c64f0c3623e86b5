"""traindyn's one import root: ``import traindyn as td``.

The repository keeps three packages with short names: ``dynamics`` (the simulator),
``kernels`` (function-space theory) and ``experiments`` (the reproductions and the command
line). Those names are generic: ``kernels`` is also the import name of another published
package, and a folder named ``experiments`` or ``dynamics`` in a notebook's working
directory comes before the installed package on ``sys.path``. ``traindyn`` removes the
ambiguity:

* ``traindyn`` itself is the simulator's API (``td.sweep``, ``td.MLP``, ``td.tasks``, ...,
  everything ``dynamics`` exports); ``traindyn.kernels`` and ``traindyn.experiments`` are the
  other two packages, and ``import traindyn.X.Y`` gives the module ``X.Y`` of this
  installation (``traindyn.tasks`` is ``dynamics.tasks``), the same module object, never a
  second copy.
* The three packages are loaded from the folder that holds this installation's ``traindyn``,
  whatever ``sys.path`` says, so a user's own ``experiments/`` folder cannot stand in for
  ours. If a module of one of those names from elsewhere was imported before ``traindyn``,
  the import fails with an ``ImportError`` that names both files, rather than mixing the two.

The short names keep working (``import dynamics as td`` is what the package's own modules
use); after ``import traindyn`` they are this installation's packages.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import pathlib
import sys

_PACKAGES = ("dynamics", "kernels", "experiments")
_ROOT = pathlib.Path(__file__).resolve().parent.parent  # the folder holding all four


def _is_ours(module) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and pathlib.Path(file).resolve() == (
        _ROOT / module.__name__ / "__init__.py")


def _load(name: str):
    """This installation's package ``name``, imported from ``_ROOT`` whatever ``sys.path``
    holds (and registered under its short name, so its own absolute imports find it)."""
    module = sys.modules.get(name)
    if module is not None:
        if not _is_ours(module):
            raise ImportError(
                f"a module named {name!r} was imported from "
                f"{getattr(module, '__file__', None) or module!r} before traindyn, and it is "
                f"not traindyn's ({_ROOT / name}); import traindyn first, or rename your "
                f"{name!r} so that the two do not share a name")
        return module
    init = _ROOT / name / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)])
    if spec is None or spec.loader is None:
        raise ImportError(f"traindyn's package {name!r} is missing at {init.parent}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``traindyn.A.B`` is the module ``A.B`` (A one of the three packages) or
    ``dynamics.A.B``: the same object under a second name."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(__name__ + "."):
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    @staticmethod
    def target(fullname: str) -> str:
        rest = fullname[len(__name__) + 1:]
        head = rest.split(".")[0]
        return rest if head in _PACKAGES else f"dynamics.{rest}"

    def __init__(self):
        self._specs = {}

    def create_module(self, spec):
        module = importlib.import_module(self.target(spec.name))
        self._specs[id(module)] = module.__spec__
        return module

    def exec_module(self, module):
        # Already executed under its own name; the import system has just given it the
        # alias's spec, so its own spec (reload, pickling by name) is put back.
        module.__spec__ = self._specs.pop(id(module))


for _name in _PACKAGES:
    _load(_name)
if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Alias())

from dynamics import *  # noqa: E402,F401,F403  the simulator's API is traindyn's
from dynamics import __all__ as _dynamics_all  # noqa: E402
from dynamics import curvature  # noqa: E402  (td.curvature, as dynamics.curvature)

kernels = sys.modules["kernels"]
experiments = sys.modules["experiments"]
sys.modules[f"{__name__}.kernels"] = kernels
sys.modules[f"{__name__}.experiments"] = experiments

__all__ = [*_dynamics_all, "curvature", "experiments", "kernels"]
