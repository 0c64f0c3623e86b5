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
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from dynamics import example_groups, losses
from dynamics.curvature import blocks, density, lanczos, operators, trace
from dynamics.observables import Observable


_HESSIAN = "the Hessian ∇²_θ L_train of the full-batch training loss train_loss"


def _need_int(owner, name, value, low):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{owner}.{name} must be an int >= {low}, got {value!r}")


def _need_rows(owner, value):
    if value is not None:
        _need_int(owner, "rows_per_pass", value, 1)


def _dtype(ctx):
    return jax.tree.leaves(ctx.params)[0].dtype


def _top(ctx, matvec, k, iterations, key, like=None):
    like = ctx.params if like is None else like
    eig = lanczos.eigenpairs(matvec, like, key, k=k, order=iterations)
    return eig.values.astype(_dtype(ctx))


class _HessianMeasure:
    """An observable of the training-loss Hessian written once as ``measure(ctx, matvec,
    like, key) -> values`` for the operator ``matvec`` on tangents shaped like ``like``:
    the whole Hessian (``__call__``) or a diagonal block of it (``Block*``)."""

    def measure(self, ctx, matvec, like, key) -> dict:
        raise NotImplementedError

    def __call__(self, ctx):
        matvec = operators.from_context(ctx, "hessian", rows_per_pass=self.rows_per_pass)
        return self.measure(ctx, matvec, ctx.params, ctx.key)


@dataclasses.dataclass(frozen=True)
class Sharpness(_HessianMeasure, Observable):
    """``sharpness``: the largest eigenvalue of the full-batch Hessian of the training
    loss, by ``iterations`` Lanczos steps (Cohen, Kaur, Li, Kolter & Talwalkar 2021,
    "Gradient descent on neural networks typically occurs at the edge of stability").

    ``warm_iterations`` (default ``None``: every log point starts from a Gaussian vector):
    the first log point takes ``iterations`` steps from a Gaussian vector and every later
    one ``warm_iterations`` steps started at the top Ritz vector of the previous one,
    carried as the observable's state. Lanczos from a start ``v0`` at angle ``phi`` to the
    top eigenvector has its error on ``lambda_max`` bounded by ``(lambda_max - lambda_min)
    tan(phi)^2 / T_{m-1}(1 + 2 gamma)^2`` (``T`` the Chebyshev polynomial, ``gamma`` the
    relative gap; Saad 2011, "Numerical methods for large eigenvalue problems", Thm. 6.4):
    when the top eigenvector turns little between log points, ``tan(phi)`` is small and a
    few steps reach the accuracy of many cold ones (the cheap tracking of the sharpness
    along training). That holds while the top eigenvalue stays separated from the next
    (progressive sharpening: 6 warm steps within 3e-4 of a converged Lanczos on a digits
    MLP, ``tests/test_curvature_loop.py``); at the edge of stability the top eigenvalues
    nearly cross and swap between log points, the carried vector is a poor start, and the
    same tracker was off by up to 6% with 8 warm steps: use cold starts there."""

    iterations: int = 20
    rows_per_pass: int | None = None
    warm_iterations: int | None = None
    descriptions: ClassVar = {
        "sharpness": ("sharpness", f"largest eigenvalue of {_HESSIAN}, by `iterations` "
                      "Lanczos steps (with `warm_iterations`: that many, started at the "
                      "previous log point's top Ritz vector, after the first) (Cohen et al. "
                      "2021)"),
    }

    def __post_init__(self):
        owner = type(self).__name__
        _need_int(owner, "iterations", self.iterations, 1)
        _need_rows(owner, self.rows_per_pass)
        if self.warm_iterations is not None:
            _need_int(owner, "warm_iterations", self.warm_iterations, 1)

    def measure(self, ctx, matvec, like, key):
        return {"sharpness": _top(ctx, matvec, 1, self.iterations, key, like)[0]}

    def init(self, ctx):
        """The carried top Ritz vector (flat; zeros before the first log point)."""
        if self.warm_iterations is None:
            return ()
        return jnp.zeros_like(jax.flatten_util.ravel_pytree(ctx.params)[0])

    def update(self, ctx, state):
        if self.warm_iterations is None:
            return self(ctx), state

        def top(order, start):
            def solve(_):
                fresh = ctx.fork()
                matvec = operators.from_context(fresh, "hessian",
                                                rows_per_pass=self.rows_per_pass)
                eig = lanczos.eigenpairs(matvec, fresh.params, fresh.key, k=1, order=order,
                                         start=start)
                vector = jax.flatten_util.ravel_pytree(
                    jax.tree.map(lambda a: a[0], eig.vectors))[0]
                return eig.values[0].astype(_dtype(ctx)), vector.astype(state.dtype)
            return solve

        # the log-point counter is the same for every run of a sweep (not batched), so only
        # one branch runs
        value, vector = jax.lax.cond(ctx.log_index == 0, top(self.iterations, None),
                                     top(self.warm_iterations, state), None)
        return {"sharpness": value}, vector


@dataclasses.dataclass(frozen=True)
class TopEigenvalues(_HessianMeasure, Observable):
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
        _need_int(type(self).__name__, "k", self.k, 1)
        _need_int(type(self).__name__, "iterations", self.iterations, self.k)
        _need_rows(type(self).__name__, self.rows_per_pass)

    def measure(self, ctx, matvec, like, key):
        # a block of fewer than k parameters has fewer eigenvalues: NaN for the rest
        n = sum(leaf.size for leaf in jax.tree.leaves(like))
        k = min(self.k, n)
        values = _top(ctx, matvec, k, self.iterations, key, like)
        return {"top_eigenvalues": jnp.concatenate(
            [values, jnp.full((self.k - k,), jnp.nan, values.dtype)])}

    def coords(self):
        return {"eigen_index": np.arange(self.k)}


@dataclasses.dataclass(frozen=True)
class HessianTrace(_HessianMeasure, Observable):
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
        _need_int(type(self).__name__, "samples", self.samples, 2)
        _need_rows(type(self).__name__, self.rows_per_pass)

    def measure(self, ctx, matvec, like, key):
        estimator = trace.hutchinson if self.method == "hutchinson" else trace.hutch_plus_plus
        est = estimator(matvec, like, key, samples=self.samples)
        return {"hessian_trace": est.estimate.astype(_dtype(ctx)),
                "hessian_trace_stderr": est.stderr.astype(_dtype(ctx))}


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
class TopEigenvectorShare(example_groups.Grouped, Observable):
    """``top_eigenvector_share`` (dim ``group``): how much of the curvature along the top
    Hessian eigenvector each group of training rows carries (Rosenfeld & Risteski 2024,
    "Outliers with opposing signals have an outsized effect on neural network
    optimization": the sharpest direction is that of a few outlier groups).

    With ``v`` the unit top eigenvector of the full-batch Hessian ``H`` (``iterations``
    Lanczos steps) and ``H_g`` the Hessian of the loss on group ``g``
    (``dynamics.example_groups``), the share is

    .. math::  s_g = \\frac{w_g\\, v^\\top H_g v}{v^\\top H v}, \\qquad w_g = |g| / P,

    so that the shares of disjoint groups covering the training set sum to 1 (``H = sum_g
    w_g H_g``; both quotients are computed with the same products, not from the Ritz
    value). A group whose share is well above its fraction ``w_g`` of the data dominates
    the sharpest direction. ``groups``: ``{name: rows}`` or ``(name, rows)`` pairs."""

    iterations: int = 20
    dims: ClassVar = {"top_eigenvector_share": ("group",)}
    descriptions: ClassVar = {
        "top_eigenvector_share": (
            "share of the top Hessian eigendirection",
            f"w_g vᵀH_g v / vᵀH v: v the top eigenvector of {_HESSIAN} (`iterations` "
            "Lanczos steps), H_g the Hessian of the loss on group g, w_g = |g|/P its share "
            "of the counted training positions (Rosenfeld & Risteski 2024)"),
        "group": example_groups.GROUP,
    }

    def __post_init__(self):
        super().__post_init__()
        _need_int(type(self).__name__, "iterations", self.iterations, 1)

    def __call__(self, ctx):
        matvec = operators.from_context(ctx, "hessian")
        eig = lanczos.eigenpairs(matvec, ctx.params, ctx.key, k=1, order=self.iterations)
        v = jax.tree.map(lambda a: a[0], eig.vectors)
        total = _quadratic(v, matvec(v))
        targets = ctx.data["y_train"]
        everything = losses.weight(targets)
        shares = []
        for _, rows in self.groups:
            rows = np.asarray(rows)
            group_matvec = operators.from_context(ctx, "hessian", rows=rows)
            w = losses.weight(example_groups.rows_of(targets, rows)) / everything
            shares.append(w * _quadratic(v, group_matvec(v)) / total)
        return {"top_eigenvector_share": jnp.stack(shares).astype(_dtype(ctx))}


def _quadratic(u, w):
    """``<u, w>`` over the leaves of two pytrees of the same structure."""
    return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(w)))


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
class SpectralDensity(_HessianMeasure, Observable):
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
        _need_int(type(self).__name__, "points", self.points, 2)
        if not (np.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(
                f"SpectralDensity.sigma must be > 0 (a standard deviation), got {self.sigma!r}"
            )
        _need_int(type(self).__name__, "probes", self.probes, 1)
        _need_int(type(self).__name__, "iterations", self.iterations, 1)
        _need_rows(type(self).__name__, self.rows_per_pass)

    def grid(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.points)

    def coords(self):
        return {"eigenvalue": self.grid()}

    def measure(self, ctx, matvec, like, key):
        quad = density.slq(matvec, like, key, probes=self.probes, order=self.iterations)
        values = density.broadened_density(quad, self.grid(), self.sigma)
        return {"spectral_density": values.astype(_dtype(ctx))}


# -- per-block curvature ---------------------------------------------------------------

_BLOCK_HESSIAN = ("the diagonal block ∇²_θB L_train of the Hessian of the full-batch training "
                  "loss train_loss, for the parameters θ_B of the block (its leaves, "
                  "curvature.blocks; the other parameters held fixed)")
_BLOCK = ("parameter block", "the path of a subtree of the parameters (keys joined by '/'; "
          "a layer such as '0' of td.MLP or 'Dense_0' of a flax model, or a single leaf)")


def _per_block(base, variables):
    """``(dims, descriptions)`` of the ``block_`` variables of ``base``'s ``variables``."""
    dims = {f"block_{v}": ("block", *base.dims.get(v, ())) for v in variables}
    descriptions = {"block": _BLOCK}
    for name, (long_name, definition) in base.descriptions.items():
        definition = definition.replace(_HESSIAN, _BLOCK_HESSIAN)
        if name in variables:
            for v in variables:
                definition = definition.replace(v, f"block_{v}")
            name, long_name = f"block_{name}", f"{long_name} of each parameter block"
        descriptions[name] = (long_name, definition)
    return dims, descriptions


@dataclasses.dataclass(frozen=True)
class _PerBlock:
    """The observable of its base class for the diagonal block of the Hessian of each
    named block (``blocks``: names of ``curvature.blocks``, default every layer),
    stacked along the dimension ``block`` (its coordinate: the names). The names are
    checked against the model's parameters when the ``Spec`` is built (``bind``), before
    anything compiles; an unknown name is refused with the list of available ones. Each
    block draws its random vectors from ``fold_in(ctx.key, its index)``."""

    blocks: tuple | str | None = None
    resolved: tuple | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        super().__post_init__()
        blocks = (self.blocks,) if isinstance(self.blocks, str) else self.blocks
        if blocks is not None:
            blocks = tuple(blocks)
            if not all(isinstance(b, str) for b in blocks):
                raise ValueError(f"{type(self).__name__}.blocks must be block names "
                                 f"(strings) or None (every layer), got {self.blocks!r}")
        object.__setattr__(self, "blocks", blocks)

    def names(self, params) -> tuple[str, ...]:
        """The blocks measured for parameters (or their shapes) ``params``."""
        if self.blocks is None:
            return blocks.layer_names(params)
        return blocks.check_names(params, self.blocks)

    def bind(self, spec):
        return dataclasses.replace(self, resolved=self.names(spec.param_shapes()))

    def coords(self):
        out = dict(super().coords())
        if self.resolved is not None:
            out["block"] = np.asarray(self.resolved, dtype=str)
        return out

    def __call__(self, ctx):
        names = self.resolved if self.resolved is not None else self.names(ctx.params)
        per = []
        for i, name in enumerate(names):
            matvec = operators.from_context(ctx, "hessian", rows_per_pass=self.rows_per_pass,
                                            block=name)
            per.append(self.measure(ctx, matvec, blocks.block_leaves(ctx.params, name),
                                    jax.random.fold_in(ctx.key, i)))
        return {f"block_{k}": jnp.stack([values[k] for values in per]) for k in per[0]}


@dataclasses.dataclass(frozen=True)
class BlockSharpness(_PerBlock, Sharpness):
    """``block_sharpness`` (dim ``block``): the largest eigenvalue of each block's
    diagonal Hessian block (``Sharpness`` per block; ``iterations`` capped at the block's
    number of parameters)."""

    dims, descriptions = _per_block(Sharpness, ("sharpness",))

    def __post_init__(self):
        super().__post_init__()
        if self.warm_iterations is not None:
            raise ValueError("BlockSharpness.warm_iterations must be None: the warm start "
                             "carries one vector for the whole Hessian, not one per block")


@dataclasses.dataclass(frozen=True)
class BlockTopEigenvalues(_PerBlock, TopEigenvalues):
    """``block_top_eigenvalues`` (dims ``block``, ``eigen_index``): the ``k`` largest
    eigenvalues of each block's diagonal Hessian block, descending (NaN beyond the size
    of a block with fewer than ``k`` parameters)."""

    dims, descriptions = _per_block(TopEigenvalues, ("top_eigenvalues",))


@dataclasses.dataclass(frozen=True)
class BlockHessianTrace(_PerBlock, HessianTrace):
    """``block_hessian_trace`` and ``block_hessian_trace_stderr`` (dim ``block``): the
    trace of each block's diagonal Hessian block (``HessianTrace`` per block); the
    traces of blocks that partition the parameters add up to the trace of the Hessian."""

    dims, descriptions = _per_block(HessianTrace, ("hessian_trace", "hessian_trace_stderr"))


@dataclasses.dataclass(frozen=True)
class BlockSpectralDensity(_PerBlock, SpectralDensity):
    """``block_spectral_density`` (dims ``block``, ``eigenvalue``): the spectral density
    of each block's diagonal Hessian block (``SpectralDensity`` per block, each
    normalised to integrate to 1)."""

    dims, descriptions = _per_block(SpectralDensity, ("spectral_density",))


# -- curvature seen by an adaptive optimizer -------------------------------------------


def diagonal_preconditioner(ctx, owner: str):
    """The optimizer's current diagonal preconditioner ``P`` (a pytree like the
    parameters, read from ``ctx.opt_state`` through ``Optimizer.preconditioner``), or
    ``None`` for an SGD-like optimizer (``P = I``); a ``ValueError`` for any other.

    Per-parameter learning-rate multipliers ``c`` (a parametrization's,
    ``ctx.lr_multipliers``) make the update ``lr c P^-1 m``, so the preconditioner the
    dynamics see is ``P / c`` (``1 / c`` for SGD); it is returned whenever some ``c`` is
    not the constant 1."""
    optimizer = ctx.optimizer
    p = None if optimizer is None else optimizer.preconditioner(ctx.opt_state)
    c = ctx.lr_multipliers
    if c is not None and not all(isinstance(m, (int, float)) and m == 1
                                 for m in jax.tree.leaves(c)):
        if p is None and optimizer is not None and optimizer.family == "sgd":
            p = jax.tree.map(lambda x: jnp.ones((), x.dtype), ctx.params)
        if p is not None:
            p = jax.tree.map(lambda pi, m: pi / jnp.asarray(m, pi.dtype), p, c)
    if p is None and (optimizer is None or optimizer.family != "sgd"):
        name = getattr(optimizer, "name", None)
        family = getattr(optimizer, "family", None)
        raise ValueError(
            f"{owner} needs the diagonal preconditioner of an Adam-like optimizer (a "
            f"second moment, optax.ScaleByAdamState) or an SGD-like one (P = I); optimizer "
            f"{name!r} (family={family!r}) has neither (sign-based methods such as lion "
            "have no diagonal preconditioner; declare from_optax(..., family='sgd') for an "
            "SGD-like optimizer of unknown family)")
    return p


@dataclasses.dataclass(frozen=True)
class PreconditionedSharpness(Observable):
    r"""``preconditioned_sharpness``: ``lambda_max(P^-1 H)``, the largest eigenvalue of
    the training-loss Hessian ``H`` preconditioned by the optimizer's current diagonal
    preconditioner ``P`` (Cohen et al. 2022, "Adaptive gradient methods at the edge of
    stability", Sec. 2: full-batch Adam trains where it equilibrates at
    ``(2 + 2 beta1) / ((1 - beta1) eta)``, ``38/eta`` for ``beta1 = 0.9``). For Adam ``P =
    diag(sqrt(nu_t / (1 - b2^t)) + eps)`` from the run's optimizer state
    (``dynamics.optimizers.preconditioner``). ``P^-1 H`` is similar to the symmetric
    ``P^-1/2 H P^-1/2``, whose top eigenvalue Lanczos computes from the products
    ``v -> P^-1/2 H (P^-1/2 v)``. For an SGD-like optimizer ``P = I`` and it is the
    ``sharpness``; an optimizer with neither (Lion, signSGD, Adafactor, ...) is
    refused. A parametrization's learning-rate multipliers ``c`` divide ``P``
    (:func:`diagonal_preconditioner`), so that ``lr * preconditioned_sharpness`` is the
    stability quantity of the run as trained."""

    iterations: int = 20
    rows_per_pass: int | None = None
    descriptions: ClassVar = {
        "preconditioned_sharpness": (
            "preconditioned sharpness",
            f"largest eigenvalue of P⁻¹H (= of P^-1/2 H P^-1/2), H {_HESSIAN} and P the "
            "optimizer's current diagonal preconditioner, for Adam diag(sqrt(ν_t/(1-β2^t)) + "
            "ε) (Cohen et al. 2022); P = I for SGD-like optimizers; by `iterations` Lanczos "
            "steps"),
    }

    def __post_init__(self):
        _need_int(type(self).__name__, "iterations", self.iterations, 1)
        _need_rows(type(self).__name__, self.rows_per_pass)

    def bind(self, spec):
        if spec.optimizer.family not in ("sgd", "adam"):
            raise ValueError(
                f"PreconditionedSharpness needs an SGD-like or Adam-like optimizer; "
                f"{spec.optimizer.name!r} has family={spec.optimizer.family!r} (unknown): "
                "declare it, from_optax(..., family='sgd' or 'adam')")
        return self

    def __call__(self, ctx):
        hvp = operators.from_context(ctx, "hessian", rows_per_pass=self.rows_per_pass)
        p = diagonal_preconditioner(ctx, type(self).__name__)
        if p is None:
            matvec = hvp
        else:
            scale = jax.tree.map(jax.lax.rsqrt, p)

            def matvec(v):
                scaled = hvp(jax.tree.map(jnp.multiply, scale, v))
                return jax.tree.map(jnp.multiply, scale, scaled)

        return {"preconditioned_sharpness": _top(ctx, matvec, 1, self.iterations, ctx.key)[0]}
