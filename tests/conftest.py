"""Test-wide settings.

The test programs are tiny, so their time is XLA's compile time; LLVM's optimisation
level 0 halves it and changes no oracle (numbers are compared within one process, or
against tolerances far above a last-bit difference in code generation).

The persistent compilation cache is off (``dynamics.runtime``): every test compiles what
it runs, so that tests that count compiles count them, and the suite writes nothing to
the user's cache; ``tests/test_runtime.py`` checks the cache in child processes."""

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
