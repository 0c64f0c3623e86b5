r"""``KernelObservables``: the empirical NTK measured inside the training loop.

At each of its log points (``every``) it computes, for one run, the traced empirical NTK
``K_t = empirical_ntk(f_t, rows, trace=True)`` of the trained outputs ``f`` (output scale
and centering included, ``ctx.outputs(params, split, rows)``) on the first
``probe_size`` examples of ``split``, and the same kernel ``K_0`` at the initial
parameters, and reports

* ``kernel_distance = 1 - <K_t, K_0>_F / (||K_t||_F ||K_0||_F)`` (Fort et al. 2020,
  eq. 2): 0 while training is lazy;
* ``kernel_alignment``: centred kernel-target alignment (Cortes, Mohri & Rostamizadeh
  2012, Def. 4) ``<K_c, Y_c>_F / (||K_c||_F ||Y_c||_F)`` with ``K_c = H K_t H``,
  ``Y_c = H Y Y^T H``, ``H = I - 11^T / n``, ``Y`` the targets of the probe rows (one-hot
  for class labels);
* ``ntk_eigenvalues``: the ``top_k`` largest eigenvalues of ``K_t``, descending, dims
  ``("ntk_index",)``;
* ``ntk_effective_rank``: the entropy effective rank ``exp(-sum_i p_i log p_i)`` of the
  eigenvalues, ``p_i = lambda_i / sum_j lambda_j`` (Roy & Vetterli 2007, Def. 1).

Sequence models (outputs ``(n, T, O)``, targets per position): the output index runs over
positions and outputs together, so ``K_t(x, x') = (1/(T O)) sum_{t, a} m_t(x) m_t(x')
df_ta(x)/dtheta . df_ta(x')/dtheta`` with ``m`` the task's position mask (1 without one):
positions outside the loss do not count, and ``Y`` is the masked one-hot targets flattened
over positions and classes the same way.

Everything is pure and batched over the runs of a sweep; under ``every > 1`` the loop
evaluates it only at its own stride. ``K_0`` is computed once per run, at step 0, and
carried as the observable's state (checkpointed with the run); ``traindyn bench ntk``
measures the overhead of these observables in a sweep. The kernel's ``method`` defaults to ``"auto"``
(the cost model of ``kernels.ntk_cost``: structured derivatives for dense and convolutional
networks).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from dynamics import losses, runtime
from dynamics.curvature import blocks as param_blocks
from dynamics.curvature.observables import _PerBlock
from dynamics.observables import Observable
from kernels.empirical import METHODS, empirical_ntk

SPLITS = ("train", "test")


def frobenius_cosine(a, b):
    return jnp.sum(a * b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b))


def kernel_distance(k, k0):
    """``1 - cos(K, K0)`` in the Frobenius inner product (Fort et al. 2020, eq. 2)."""
    return 1.0 - frobenius_cosine(k, k0)


def centred_alignment(k, y):
    """Centred kernel-target alignment of ``k (n, n)`` and targets ``y (n, O)``
    (Cortes, Mohri & Rostamizadeh 2012, Def. 4)."""
    n = k.shape[0]
    h = jnp.eye(n, dtype=k.dtype) - 1.0 / n
    kc = h @ k @ h
    yc = h @ (y @ y.T) @ h
    return frobenius_cosine(kc, yc)


def effective_rank(eigenvalues):
    """``exp(entropy)`` of the normalised non-negative eigenvalues (Roy & Vetterli 2007)."""
    lam = jnp.clip(eigenvalues, 0.0, None)
    p = lam / jnp.sum(lam)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


@dataclasses.dataclass(frozen=True)
class KernelObservables(Observable):
    """Empirical-NTK observables (see the module doc)."""

    probe_size: int = 32
    split: str = "train"
    top_k: int = 4
    every: int | None = None
    method: str = "auto"

    dims: ClassVar = {"ntk_eigenvalues": ("ntk_index",)}
    descriptions: ClassVar = {
        "kernel_distance": ("kernel distance", "1 - <K_t, K_0>_F / (||K_t||_F ||K_0||_F), K_t "
                            "the traced empirical NTK of the trained outputs on the first "
                            "`probe_size` examples of `split`, K_0 the same at the initial "
                            "parameters (Fort et al. 2020, eq. 2); 0 while training is lazy"),
        "kernel_alignment": ("centred kernel-target alignment", "<K_c, Y_c>_F / (||K_c||_F "
                             "||Y_c||_F), K_c = H K_t H, Y_c = H Y Yᵀ H, H = I - 11ᵀ/n, Y the "
                             "targets of the probe examples (one-hot for class labels) "
                             "(Cortes, Mohri & Rostamizadeh 2012, Def. 4)"),
        "ntk_eigenvalues": ("top empirical NTK eigenvalues", "the `top_k` largest eigenvalues "
                            "of K_t (the traced empirical NTK on the probe examples), "
                            "descending"),
        "ntk_effective_rank": ("NTK effective rank", "exp(-Σ_i p_i log p_i), p_i = λ_i / Σ_j "
                               "λ_j over the eigenvalues λ of K_t, negative ones clipped to 0 "
                               "(Roy & Vetterli 2007, Def. 1)"),
        "ntk_index": ("NTK eigenvalue rank", "0 for the largest eigenvalue, 1 for the next, "
                      "..."),
    }

    def __post_init__(self):
        for name in ("probe_size", "top_k"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"KernelObservables.{name} must be an int >= 1, got {v!r}")
        if self.top_k > self.probe_size:
            raise ValueError(f"KernelObservables.top_k must be <= probe_size="
                             f"{self.probe_size}, got {self.top_k}")
        if self.split not in SPLITS:
            raise ValueError(f"KernelObservables.split must be one of {list(SPLITS)}, "
                             f"got {self.split!r}")
        if self.method not in METHODS:
            raise ValueError(f"KernelObservables.method must be one of {list(METHODS)}, "
                             f"got {self.method!r}")

    def coords(self):
        return {"ntk_index": list(range(self.top_k))}

    def _mask(self, ctx):
        """The probe rows' position mask of a masked task, else None."""
        mask = losses.split(ctx.data["y_train" if self.split == "train" else "y_test"])[1]
        return None if mask is None else mask[: self.probe_size]

    def _targets(self, ctx, n):
        y, mask = losses.split(ctx.data["y_train" if self.split == "train" else "y_test"])
        y = y[:n]
        if jnp.issubdtype(y.dtype, jnp.integer):  # class labels, per example or position
            n_classes = ctx.outputs(ctx.params, self.split, jnp.arange(1)).shape[-1]
            y = jax.nn.one_hot(y, n_classes)
        if mask is not None:
            y = y * mask[:n, ..., None].astype(y.dtype)
        return y.reshape(n, -1)

    def _kernel(self, ctx, params, block=None):
        """The traced empirical NTK at ``params`` on the probe examples (of the block of
        parameters named ``block`` alone, the others held at ``params``, when given)."""
        n_split = ctx.data["x_train" if self.split == "train" else "x_test"].shape[0]
        if self.probe_size > n_split:
            raise ValueError(f"KernelObservables.probe_size must be <= the {self.split} "
                             f"set's {n_split} examples, got {self.probe_size}")

        mask = self._mask(ctx)

        def f(p, r):
            out = ctx.outputs(p, self.split, r)
            if mask is not None:  # positions outside the loss do not count
                out = out * mask[r, ..., None].astype(out.dtype)
            return out.reshape(out.shape[0], -1)  # (rows, positions x outputs)

        rows = jnp.arange(self.probe_size)
        if block is not None:
            return empirical_ntk(param_blocks.restrict(f, params, block),
                                 param_blocks.block_leaves(params, block), rows,
                                 method=self.method, trace=True)
        return empirical_ntk(f, params, rows, method=self.method, trace=True)

    def init(self, ctx):
        """``K_0``, the kernel at the initial parameters, computed once per run."""
        return self._kernel(ctx, ctx.params0)

    def __call__(self, ctx):
        return self.update(ctx, self.init(ctx))[0]

    def update(self, ctx, k0):
        k = self._kernel(ctx, ctx.params)
        k = (k + k.T) / 2
        eig = runtime.unbatched_lapack(jnp.linalg.eigvalsh)(k)[::-1]
        y = self._targets(ctx, self.probe_size).astype(k.dtype)
        return {
            "kernel_distance": kernel_distance(k, k0),
            "kernel_alignment": centred_alignment(k, y),
            "ntk_eigenvalues": eig[: self.top_k],
            "ntk_effective_rank": effective_rank(eig),
        }, k0


@dataclasses.dataclass(frozen=True)
class BlockKernels(_PerBlock, KernelObservables):
    r"""The empirical NTK decomposed by blocks of parameters: the kernel is a sum over any
    partition of the parameters, ``K = sum_B K_B`` with ``K_B = J_B J_B^T`` the kernel of
    block ``B``'s parameters alone (each layer's contribution: Jacot et al. 2018, eq. 4
    summed by layer; the layer-wise kernels of Fort et al. 2020 and of the ``lazy-rich``
    experiment). For each block (``blocks``: names of ``dynamics.curvature.blocks``,
    default every layer; dimension ``block``), on the probe examples of
    ``KernelObservables``:

    * ``block_ntk_trace``: ``tr(K_B) / n``, the block's share of the kernel's trace (they
      add up to ``tr(K) / n`` over a partition);
    * ``block_kernel_distance``: ``1 - cos(K_B, K_B(0))``, how far the block's kernel has
      moved from its value at initialisation (carried, computed once per run);
    * ``block_kernel_alignment``: the centred kernel-target alignment of ``K_B``.
    """

    dims: ClassVar = {"block_ntk_trace": ("block",), "block_kernel_distance": ("block",),
                      "block_kernel_alignment": ("block",)}
    descriptions: ClassVar = {
        "block_ntk_trace": ("NTK trace per block", "tr(K_B)/n, K_B = J_B J_Bᵀ the traced "
                            "empirical NTK of the block's parameters alone (the others held) "
                            "on the first `probe_size` examples of `split`, n of them; the "
                            "blocks of a partition add up to tr(K)/n"),
        "block_kernel_distance": ("kernel distance per block", "1 - <K_B, K_B(0)>_F / "
                                  "(||K_B||_F ||K_B(0)||_F), K_B(0) at the initial "
                                  "parameters (Fort et al. 2020, eq. 2, per block)"),
        "block_kernel_alignment": ("centred kernel-target alignment per block", "<K_c, "
                                   "Y_c>_F / (||K_c||_F ||Y_c||_F) with K_c = H K_B H "
                                   "(Cortes, Mohri & Rostamizadeh 2012, Def. 4)"),
        "block": ("parameter block", "a path in the parameter pytree (keys joined by /)"),
    }

    def coords(self):
        out = super().coords()
        out.pop("ntk_index", None)
        return out

    def _names(self, ctx):
        return self.resolved if self.resolved is not None else self.names(ctx.params)

    def init(self, ctx):
        return tuple(self._kernel(ctx, ctx.params0, name) for name in self._names(ctx))

    def __call__(self, ctx):
        return self.update(ctx, self.init(ctx))[0]

    def update(self, ctx, k0s):
        y = self._targets(ctx, self.probe_size)
        trace, distance, alignment = [], [], []
        for name, k0 in zip(self._names(ctx), k0s):
            k = self._kernel(ctx, ctx.params, name)
            k = (k + k.T) / 2
            trace.append(jnp.trace(k) / k.shape[0])
            distance.append(kernel_distance(k, k0))
            alignment.append(centred_alignment(k, y.astype(k.dtype)))
        return {"block_ntk_trace": jnp.stack(trace),
                "block_kernel_distance": jnp.stack(distance),
                "block_kernel_alignment": jnp.stack(alignment)}, k0s
