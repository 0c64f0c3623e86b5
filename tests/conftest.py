"""Test-wide settings.

The test programs are tiny, so their time is XLA's compile time; LLVM's optimisation
level 0 halves it and changes no oracle (numbers are compared within one process, or
against tolerances far above a last-bit difference in code generation).

The persistent compilation cache is off (``dynamics.runtime``): every test compiles what
it runs, so that tests that count compiles count them, and the suite writes nothing to
the user's cache; ``tests/test_runtime.py`` checks the cache in child processes."""

import functools
import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault("TRAINDYN_COMPILATION_CACHE", "off")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Every test module's compiled programs are dropped after it: one process compiles
    thousands of programs in the default run, and XLA's CPU code for all of them at once
    crashed its compiler (a segmentation fault in a late module's compile, reproducible
    in the whole run and absent when that module runs alone)."""
    yield
    from dynamics import programs

    programs.clear_caches()



@pytest.fixture
def x64():
    """Float64 for the test (oracles against dense float64 computations); a module asks
    for it with ``pytestmark = pytest.mark.usefixtures("x64")``."""
    import jax

    with jax.enable_x64(True):
        yield


@functools.lru_cache(maxsize=None)
def float64_teacher_task(n_train: int = 20):
    """The small float64 regression problem of the curvature oracles: a linear teacher,
    3 inputs, 2 outputs, ``n_train`` examples (one object per ``n_train``)."""
    import dynamics as td

    return td.tasks.teacher_student_linear(
        dim=3, n_train=n_train, n_test=4, out_dim=2, seed=0).astype("float64")
