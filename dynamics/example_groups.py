r"""Named groups of training examples, and the training loss and accuracy on each
(``GroupLoss``, ``GroupAccuracy``).

Some results are about a few examples of the training set rather than the whole: the
outliers with opposing signals of Rosenfeld & Risteski (2024, "Outliers with opposing
signals have an outsized effect on neural network optimization", ICLR 2024), whose losses
oscillate in antiphase while the full-batch loss barely moves; a class, a slice of the
data with a spurious feature, the mislabelled examples. A *group* is a name and the
indices of its rows in the training set (``task.x_train[rows]``); groups may overlap and
need not cover the training set.

The loss on a group ``g`` is the training loss restricted to its rows, in the
normalisation of ``dynamics.losses`` (a mean over the group's counted positions, with the
training targets and their label noise):

.. math::  L_g(\theta) = \frac{1}{|g|} \sum_{i \in g} \ell_i(\theta),

so that for disjoint groups covering the training set ``L = \sum_g w_g L_g`` with
``w_g = |g| / P`` (``losses.weight`` counts masked positions). The curvature of a group
(``dynamics.curvature.TopEigenvectorShare``) uses the same groups.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.losses import accuracy
from dynamics.observables import Observable


def check_groups(owner: str, groups: Any) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``groups`` as a tuple of ``(name, rows)`` pairs, from a mapping ``{name: rows}`` or
    a sequence of pairs; ``rows`` a non-empty sequence of distinct non-negative ints.
    Raises ``ValueError`` naming ``owner``, the group and what is wrong."""
    items = list(groups.items()) if isinstance(groups, Mapping) else list(groups or ())
    if not items:
        raise ValueError(f"{owner}.groups must name at least one group of training rows, "
                         f"got {groups!r}")
    out = []
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"{owner}.groups must be a mapping {{name: rows}} or (name, "
                             f"rows) pairs, got the item {item!r}")
        name, rows = item
        if not isinstance(name, str) or not name:
            raise ValueError(f"{owner}.groups: a group's name must be a non-empty str, got "
                             f"{name!r}")
        rows = np.asarray(rows)
        if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"{owner}.groups[{name!r}] must be a non-empty 1-d sequence of "
                             f"int row indices, got shape {rows.shape} and dtype {rows.dtype}")
        if rows.min() < 0:
            raise ValueError(f"{owner}.groups[{name!r}] has a negative row index "
                             f"{int(rows.min())}")
        if np.unique(rows).size != rows.size:
            raise ValueError(f"{owner}.groups[{name!r}] repeats a row index")
        out.append((name, tuple(int(r) for r in rows)))
    names = [name for name, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{owner}.groups repeats a name: {names}")
    return tuple(out)


def check_rows_in(owner: str, groups, n_train: int) -> None:
    """Every group's rows index the ``n_train`` training examples."""
    for name, rows in groups:
        if max(rows) >= n_train:
            raise ValueError(f"{owner}.groups[{name!r}] has the row index {max(rows)}, but the "
                             f"training set has {n_train} examples")


def rows_of(targets, rows):
    """The targets (plain or ``losses.Masked``) of ``rows``."""
    return jax.tree.map(lambda a: a[rows], targets)


GROUP = ("group of training examples", "the name of a set of training rows")


@dataclasses.dataclass(frozen=True)
class Grouped:
    """What every observable of groups shares: ``groups`` (``{name: rows}`` or ``(name,
    rows)`` pairs) checked when it is built and against the training set when the spec is
    (``bind``), and the ``group`` coordinate (the names, in order)."""

    groups: Any = ()

    def __post_init__(self):
        object.__setattr__(self, "groups", check_groups(type(self).__name__, self.groups))

    def bind(self, spec):
        check_rows_in(type(self).__name__, self.groups, spec.task.n_train)
        return self

    def coords(self):
        return {"group": np.array([name for name, _ in self.groups])}


@dataclasses.dataclass(frozen=True)
class GroupLoss(Grouped, Observable):
    """``group_loss`` (dim ``group``): the training loss on each group of training rows
    (module doc). ``groups``: ``{name: rows}`` or ``(name, rows)`` pairs. It reuses the
    full-batch training outputs of the log point (no extra forward pass), so it is cheap
    enough for every step (``log_every=1``)."""

    dims: ClassVar = {"group_loss": ("group",)}
    descriptions: ClassVar = {
        "group_loss": ("loss on a group of training examples",
                       "L_g = (1/|g|) Σ_{i∈g} ℓ_i: the training loss (normalisation of "
                       "dynamics.losses, training targets with their label noise) on the "
                       "rows of group g only"),
        "group": GROUP,
    }

    def __call__(self, ctx):
        outputs, targets = ctx.train_outputs, ctx.data["y_train"]
        return {"group_loss": jnp.stack([
            ctx.loss(outputs[np.asarray(rows)], rows_of(targets, np.asarray(rows)))
            for _, rows in self.groups])}


@dataclasses.dataclass(frozen=True)
class GroupAccuracy(Grouped, Observable):
    """``group_accuracy`` (dim ``group``; classification tasks only): the fraction of each
    group's training rows whose arg-max output is their training target (the label they
    are trained on, label noise and corrupted labels included), e.g. how many corrupted
    examples a network has memorised (Doshi, Das, He & Gromov 2024). Reuses the log
    point's full-batch training outputs, like ``GroupLoss``."""

    dims: ClassVar = {"group_accuracy": ("group",)}
    descriptions: ClassVar = {
        "group_accuracy": ("accuracy on a group of training examples",
                           "fraction of the rows of group g whose arg-max output is their "
                           "training target (with its label noise or corruption)"),
        "group": GROUP,
    }

    def applies_to(self, classification):
        return classification

    def __call__(self, ctx):
        outputs, targets = ctx.train_outputs, ctx.data["y_train"]
        return {"group_accuracy": jnp.stack([
            accuracy(outputs[np.asarray(rows)], rows_of(targets, np.asarray(rows)))
            for _, rows in self.groups])}
