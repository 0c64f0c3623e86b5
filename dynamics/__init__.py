"""traindyn's simulator: models, tasks, optimizers, the scanned training loop, sweeps and
observables. See ``dynamics.sweeps`` for how a sweep becomes one compiled program."""

from dynamics import runtime as _runtime

_runtime.setup()  # before JAX starts its backends: compile cache, CPU devices if asked

from dynamics import (coordinate_check, example_groups, fourier, low_rank, models,
                      numerical_stability, observables, observables_transformer, optimizers,
                      parametrization, pruning, tasks)
from dynamics.coordinate_check import CoordinateCheck, coord_check
from dynamics.models import (MLP, ConvNet, ResidualMLP, Transformer, from_linen, from_nnx,
                             with_mup)
from dynamics.optimizers import Optimizer
from dynamics.spec import Spec
from dynamics.storage import load, save
from dynamics.sweeps import DivergenceWarning, init_params, run, run_key, sweep

__all__ = [
    "ConvNet",
    "CoordinateCheck",
    "DivergenceWarning",
    "MLP",
    "Optimizer",
    "ResidualMLP",
    "Spec",
    "Transformer",
    "coord_check",
    "coordinate_check",
    "example_groups",
    "fourier",
    "from_linen",
    "low_rank",
    "from_nnx",
    "init_params",
    "load",
    "models",
    "numerical_stability",
    "observables",
    "observables_transformer",
    "optimizers",
    "parametrization",
    "pruning",
    "run",
    "run_key",
    "save",
    "sweep",
    "tasks",
    "with_mup",
]
