"""Test-wide settings.

The test programs are tiny, so their time is XLA's compile time; LLVM's optimisation
level 0 halves it and changes no oracle (numbers are compared within one process, or
against tolerances far above a last-bit difference in code generation)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
