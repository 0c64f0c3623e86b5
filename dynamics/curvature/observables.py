"""Curvature observables for the training loop (``dynamics.observables.Observable``).

Each one measures the Hessian (or GGN) of the training loss the loop trains,
``ctx.loss(ctx.outputs(params, "train"), ctx.data["y_train"])`` (output scale,
centering and label noise included, in the normalisation of ``dynamics.losses``), at the
run's parameters, for every run of a sweep. ``every`` is the stride in optimizer steps (log
point 0 is the initial state, so ``every=spec.steps`` gives the initial and the final
state); the loop pays for an observable only at its stride. Random vectors (Lanczos
starts, probes, batches) come from ``ctx.key``, fresh at each log point and independent
of the other runs.

``rows_per_pass`` (default ``None``: the whole training set in one pass) accumulates
each product over batches of that many rows, bounding memory (``operators``).

Values are in the dtype of the parameters; ``iterations`` is the number of operator
products (Lanczos steps), capped at the number of parameters.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.curvature import density, lanczos, operators, trace
from dynamics.observables import Observable


_HESSIAN = "the Hessian ∇²_θ L_train of the full-batch training loss train_loss"


def _need_int(owner, name, value, low):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{owner}.{name} must be an int >= {low}, got {value!r}")


def _need_rows(owner, value):
    if value is not None:
        _need_int(owner, "rows_per_pass", value, 1)


def _top(ctx, matvec, k, iterations, key):
    eig = lanczos.eigenpairs(matvec, ctx.params, key, k=k, order=iterations)
    return eig.values.astype(jax.tree.leaves(ctx.params)[0].dtype)


@dataclasses.dataclass(frozen=True)
class Sharpness(Observable):
    """``sharpness``: the largest eigenvalue of the full-batch Hessian of the training
    loss, by ``iterations`` Lanczos steps (Cohen, Kaur, Li, Kolter & Talwalkar 2021,
    "Gradient descent on neural networks typically occurs at the edge of stability")."""

    iterations: int = 20
    rows_per_pass: int | None = None
    descriptions: ClassVar = {
        "sharpness": ("sharpness", f"largest eigenvalue of {_HESSIAN}, by `iterations` "
                      "Lanczos steps (Cohen et al. 2021)"),
    }

    def __post_init__(self):
        _need_int("Sharpness", "iterations", self.iterations, 1)
        _need_rows("Sharpness", self.rows_per_pass)

    def __call__(self, ctx):
        matvec = operators.from_context(ctx, "hessian", rows_per_pass=self.rows_per_pass)
        return {"sharpness": _top(ctx, matvec, 1, self.iterations, ctx.key)[0]}


@dataclasses.dataclass(frozen=True)
class TopEigenvalues(Observable):
    """``top_eigenvalues`` (dim ``eigen_index``): the ``k`` largest Hessian eigenvalues,
    descending, by ``iterations`` Lanczos steps."""

    k: int = 3
    iterations: int = 30
    rows_per_pass: int | None = None
    dims: ClassVar = {"top_eigenvalues": ("eigen_index",)}
    descriptions: ClassVar = {
        "top_eigenvalues": ("top Hessian eigenvalues", f"the k largest eigenvalues of "
                            f"{_HESSIAN}, descending, by `iterations` Lanczos steps"),
        "eigen_index": ("eigenvalue rank", "0 for the largest eigenvalue, 1 for the next, ..."),
    }

    def __post_init__(self):
        _need_int("TopEigenvalues", "k", self.k, 1)
        _need_int("TopEigenvalues", "iterations", self.iterations, self.k)
        _need_rows("TopEigenvalues", self.rows_per_pass)

    def __call__(self, ctx):
        matvec = operators.from_context(ctx, "hessian", rows_per_pass=self.rows_per_pass)
        return {"top_eigenvalues": _top(ctx, matvec, self.k, self.iterations, ctx.key)}

    def coords(self):
        return {"eigen_index": np.arange(self.k)}


@dataclasses.dataclass(frozen=True)
class HessianTrace(Observable):
    """``hessian_trace`` and ``hessian_trace_stderr``: Hutchinson's estimate of the
    Hessian's trace from ``samples`` Rademacher probes, or Hutch++ with ``method =
    "hutch++"`` (``samples`` then a multiple of 3); see ``curvature.trace``."""

    samples: int = 10
    method: str = "hutchinson"
    rows_per_pass: int | None = None
    descriptions: ClassVar = {
        "hessian_trace": ("Hessian trace", f"tr of {_HESSIAN}, estimated from `samples` "
                          "Rademacher probes z as the mean of zᵀHz (Hutchinson) or by "
                          "Hutch++ (Meyer et al. 2021)"),
        "hessian_trace_stderr": ("standard error of the Hessian trace", "standard error of "
                                 "the hessian_trace estimate over its probes"),
    }

    def __post_init__(self):
        if self.method not in ("hutchinson", "hutch++"):
            raise ValueError(
                f"HessianTrace.method must be 'hutchinson' or 'hutch++', got {self.method!r}"
            )
        if self.method == "hutch++" and (self.samples < 6 or self.samples % 3):
            raise ValueError(
                f"HessianTrace.samples must be a multiple of 3 and >= 6 for hutch++, "
                f"got {self.samples!r}"
            )
        _need_int("HessianTrace", "samples", self.samples, 2)
        _need_rows("HessianTrace", self.rows_per_pass)

    def __call__(self, ctx):
        matvec = operators.from_context(ctx, "hessian", rows_per_pass=self.rows_per_pass)
        estimator = trace.hutchinson if self.method == "hutchinson" else trace.hutch_plus_plus
        est = estimator(matvec, ctx.params, ctx.key, samples=self.samples)
        dtype = jax.tree.leaves(ctx.params)[0].dtype
        return {"hessian_trace": est.estimate.astype(dtype),
                "hessian_trace_stderr": est.stderr.astype(dtype)}


@dataclasses.dataclass(frozen=True)
class BatchSharpness(Observable):
    """``batch_sharpness``: the largest eigenvalue of the Hessian of the loss on a batch
    of ``batch_size`` training rows drawn without replacement from ``ctx.key`` (the
    mean loss on the batch, as a minibatch step sees it)."""

    batch_size: int = 32
    iterations: int = 20
    descriptions: ClassVar = {
        "batch_sharpness": ("batch sharpness", "largest eigenvalue of the Hessian of the "
                            "mean loss on `batch_size` training examples drawn without "
                            "replacement at each log point, by `iterations` Lanczos steps"),
    }

    def __post_init__(self):
        _need_int("BatchSharpness", "batch_size", self.batch_size, 1)
        _need_int("BatchSharpness", "iterations", self.iterations, 1)

    def __call__(self, ctx):
        n = ctx.data["y_train"].shape[0]
        if self.batch_size > n:
            raise ValueError(
                f"BatchSharpness.batch_size must be <= the number of training examples "
                f"({n}), got {self.batch_size}"
            )
        k_rows, k_start = jax.random.split(ctx.key)
        rows = jax.random.permutation(k_rows, n)[: self.batch_size]
        matvec = operators.from_context(ctx, "hessian", rows=rows)
        return {"batch_sharpness": _top(ctx, matvec, 1, self.iterations, k_start)[0]}


@dataclasses.dataclass(frozen=True)
class GGNSharpness(Observable):
    """``ggn_sharpness``: the largest eigenvalue of the generalised Gauss-Newton matrix
    ``J^T H_L J`` of the full-batch training loss (``operators.ggn_vp``)."""

    iterations: int = 20
    rows_per_pass: int | None = None
    descriptions: ClassVar = {
        "ggn_sharpness": ("Gauss-Newton sharpness", "largest eigenvalue of the generalised "
                          "Gauss-Newton matrix JᵀH_L J of the full-batch training loss (J the "
                          "Jacobian of the outputs, H_L the loss's Hessian in the outputs), "
                          "by `iterations` Lanczos steps"),
    }

    def __post_init__(self):
        _need_int("GGNSharpness", "iterations", self.iterations, 1)
        _need_rows("GGNSharpness", self.rows_per_pass)

    def __call__(self, ctx):
        matvec = operators.from_context(ctx, "ggn", rows_per_pass=self.rows_per_pass)
        return {"ggn_sharpness": _top(ctx, matvec, 1, self.iterations, ctx.key)[0]}


@dataclasses.dataclass(frozen=True)
class SpectralDensity(Observable):
    """``spectral_density`` (dim ``eigenvalue``, the grid ``linspace(lo, hi, points)`` as
    coordinate): the Hessian's spectral density by stochastic Lanczos quadrature with
    ``probes`` starts of ``iterations`` steps, each node broadened by a Gaussian of
    standard deviation ``sigma`` (``curvature.density``; not a variance)."""

    lo: float = -1.0
    hi: float = 1.0
    points: int = 100
    sigma: float = 0.01
    probes: int = 4
    iterations: int = 30
    rows_per_pass: int | None = None
    dims: ClassVar = {"spectral_density": ("eigenvalue",)}
    descriptions: ClassVar = {
        "spectral_density": ("Hessian spectral density", f"density of the eigenvalues of "
                             f"{_HESSIAN} on the eigenvalue grid, by stochastic Lanczos "
                             "quadrature (`probes` starts of `iterations` steps), each node "
                             "a Gaussian of standard deviation `sigma`; it integrates to 1 "
                             "over eigenvalue"),
        "eigenvalue": ("Hessian eigenvalue", "the grid linspace(lo, hi, points) on which the "
                       "spectral density is evaluated"),
    }

    def __post_init__(self):
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(
                f"SpectralDensity needs finite lo < hi, got lo={self.lo!r}, hi={self.hi!r}"
            )
        _need_int("SpectralDensity", "points", self.points, 2)
        if not (np.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(
                f"SpectralDensity.sigma must be > 0 (a standard deviation), got {self.sigma!r}"
            )
        _need_int("SpectralDensity", "probes", self.probes, 1)
        _need_int("SpectralDensity", "iterations", self.iterations, 1)
        _need_rows("SpectralDensity", self.rows_per_pass)

    def grid(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.points)

    def coords(self):
        return {"eigenvalue": self.grid()}

    def __call__(self, ctx):
        matvec = operators.from_context(ctx, "hessian", rows_per_pass=self.rows_per_pass)
        quad = density.slq(matvec, ctx.params, ctx.key, probes=self.probes,
                           order=self.iterations)
        values = density.broadened_density(quad, self.grid(), self.sigma)
        return {"spectral_density": values.astype(jax.tree.leaves(ctx.params)[0].dtype)}
