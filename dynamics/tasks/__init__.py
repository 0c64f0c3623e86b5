"""Seeded training tasks generated on the machine (no downloads at run time).

* ``task``: the common :class:`Task` (shapes of inputs and targets, masks, label noise,
  its arrays as program inputs, its shape-changing fields as static sweep axes);
* ``synthetic``: teacher-student (linear, MLP), Gaussian mixtures, a polynomial target;
* ``algorithmic``: modular arithmetic, one-hot or as token sequences, optionally with
  corrupted training labels (``corrupted_rows`` gives them back);
* ``sequences``: next-token prediction on a random Markov chain (its Bayes loss known);
* ``real``: scikit-learn's digits, flat or as images;
* ``arrays``: a user's own arrays (``from_arrays``).

``make(name, **kwargs)`` builds a generated task by name (:data:`TASKS`).
"""

from __future__ import annotations

from typing import Any, Callable

from dynamics.losses import LOSSES
from dynamics.tasks.algorithmic import ENCODINGS, OPERATIONS, corrupted_rows, modular_arithmetic
from dynamics.tasks.arrays import from_arrays
from dynamics.tasks.real import digits
from dynamics.tasks.sequences import (markov_chain, markov_chain_bayes_loss,
                                      markov_chain_sample_loss)
from dynamics.tasks.synthetic import (
    ACTIVATIONS,
    gaussian_mixture,
    gaussian_mixture_means,
    linear_teacher,
    mlp_teacher,
    mlp_teacher_apply,
    polynomial,
    polynomial_teacher,
    teacher_student_linear,
    teacher_student_mlp,
)
from dynamics.tasks.task import Task, clean_targets, train_targets

__all__ = [
    "ACTIVATIONS",
    "ENCODINGS",
    "LOSSES",
    "OPERATIONS",
    "TASKS",
    "Task",
    "clean_targets",
    "corrupted_rows",
    "digits",
    "from_arrays",
    "gaussian_mixture",
    "gaussian_mixture_means",
    "linear_teacher",
    "make",
    "markov_chain",
    "markov_chain_bayes_loss",
    "markov_chain_sample_loss",
    "mlp_teacher",
    "mlp_teacher_apply",
    "modular_arithmetic",
    "polynomial",
    "polynomial_teacher",
    "teacher_student_linear",
    "teacher_student_mlp",
    "train_targets",
]

TASKS: dict[str, Callable[..., Task]] = {
    "teacher_student_linear": teacher_student_linear,
    "teacher_student_mlp": teacher_student_mlp,
    "gaussian_mixture": gaussian_mixture,
    "polynomial": polynomial,
    "modular_arithmetic": modular_arithmetic,
    "digits": digits,
    "markov_chain": markov_chain,
}


def make(name: str, **kwargs: Any) -> Task:
    """``TASKS[name](**kwargs)``; ValueError listing the known names if unknown."""
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"name must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name](**kwargs)
