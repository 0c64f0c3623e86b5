r"""Blocks of parameters, named by their path in the parameter pytree.

A parameter pytree's leaves have paths; a path is written as its keys joined by ``/``
(``"0/w"`` for the weight of the first layer of ``td.MLP``, whose parameters are a tuple
of ``{"w", "b"}`` dicts; ``"Dense_0/kernel"`` for a flax model). A **block** is any
subtree named by a path prefix: a leaf (``"0/w"``), a layer (``"0"``, ``"Dense_0"``) or
a larger subtree. A model's **layers** are the parents of its leaves (the leaf itself
for a leaf at the top level).

``restrict(fn, params, name)`` turns a function of the parameters into a function of the
block's leaves with the other leaves held at their values in ``params``. Differentiating
it twice gives the diagonal block ``H_BB = d^2 L / d theta_B^2`` of the Hessian, the
curvature of the loss along the block with the rest of the network fixed (the per-layer
Hessian asked of PyHessian in its issue #10; the layer-wise Hessians of Sankar et al. 2021,
"A deeper look at the Hessian eigenspectrum of deep neural networks and its applications
to regularization"). Its eigenvalues are those of the ``|B| x |B|`` principal submatrix
of ``H``, not of ``H``: by the Cauchy interlacing theorem (Horn & Johnson, *Matrix
Analysis*, Sec. 4.3) they lie within ``[lambda_min(H), lambda_max(H)]``.
"""

from __future__ import annotations

from typing import Callable

import jax


def _key_text(key) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaf_paths(params) -> tuple[str, ...]:
    """The path of every leaf, in ``jax.tree.leaves`` order (keys joined by ``/``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return tuple("/".join(_key_text(k) for k in path) for path, _ in flat)


def layer_names(params) -> tuple[str, ...]:
    """The parents of the leaves, in order of first appearance (a top-level leaf names
    itself): ``("0", "1", "2")`` for a depth-2 ``td.MLP``."""
    out: list[str] = []
    for path in leaf_paths(params):
        parent = path.rsplit("/", 1)[0] if "/" in path else path
        if parent not in out:
            out.append(parent)
    return tuple(out)


def available_names(params) -> tuple[str, ...]:
    """Every name a block may have: each proper prefix of a leaf path and each leaf path,
    in order of first appearance (``"0"``, ``"0/b"``, ``"0/w"``, ``"1"``, ...)."""
    out: list[str] = []
    for path in leaf_paths(params):
        parts = path.split("/")
        for end in range(1, len(parts) + 1):
            name = "/".join(parts[:end])
            if name not in out:
                out.append(name)
    return tuple(out)


def leaf_indices(params, name: str) -> tuple[int, ...]:
    """Indices (in ``jax.tree.leaves`` order) of the leaves of block ``name``; a
    ``ValueError`` listing the available names when there are none."""
    found = tuple(i for i, path in enumerate(leaf_paths(params))
                  if path == name or path.startswith(name + "/"))
    if not isinstance(name, str) or not name or not found:
        raise ValueError(f"unknown parameter block {name!r}; the available names are "
                         f"{list(available_names(params))}")
    return found


def check_names(params, names) -> tuple[str, ...]:
    """``names`` as a tuple of distinct, known block names (``ValueError`` otherwise)."""
    names = tuple(names)
    if not names:
        raise ValueError(f"blocks must name at least one block; the available names are "
                         f"{list(available_names(params))}")
    for name in names:
        leaf_indices(params, name)
    if len(set(names)) != len(names):
        raise ValueError(f"blocks must be distinct, got {list(names)}")
    return names


def block_leaves(params, name: str) -> tuple:
    """The leaves of block ``name``, a tuple."""
    leaves = jax.tree.leaves(params)
    return tuple(leaves[i] for i in leaf_indices(params, name))


def restrict(fn: Callable, params, name: str) -> Callable:
    """``fn_B(block, *args) = fn(params with block name's leaves replaced by block,
    *args)``: ``fn`` as a function of the block's leaves (a tuple, as ``block_leaves``
    gives them), the other leaves held at their values in ``params``."""
    indices = leaf_indices(params, name)
    leaves, treedef = jax.tree.flatten(params)

    def fn_block(block, *args):
        merged = list(leaves)
        for i, leaf in zip(indices, block):
            merged[i] = leaf
        return fn(jax.tree.unflatten(treedef, merged), *args)

    return fn_block
