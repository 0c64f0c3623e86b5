"""Curvature of the training loss, matrix-free and inside the training loop.

* ``operators``: Hessian, Gauss-Newton and empirical-Fisher vector products on parameter
  pytrees, on the training set (optionally accumulated over row-batches) or a batch;
* ``lanczos``: Lanczos with full reorthogonalisation, extreme eigenpairs with residuals,
  and power iteration;
* ``trace``: Hutchinson and Hutch++ trace estimates with standard errors;
* ``density``: spectral density by stochastic Lanczos quadrature;
* ``blocks``: blocks of parameters named by path (layers, leaves, subtrees) and
  ``restrict``, a function of the parameters as one of a block's;
* ``observables``: ``Sharpness``, ``TopEigenvalues``, ``HessianTrace``,
  ``BatchSharpness``, ``GGNSharpness``, ``SpectralDensity`` for ``Spec.observables``, and
  per block ``BlockSharpness``, ``BlockTopEigenvalues``, ``BlockHessianTrace``,
  ``BlockSpectralDensity``, and ``PreconditionedSharpness`` (the sharpness an adaptive
  optimizer sees, Cohen et al. 2022);
* ``subspace``: ``GradientInTopSubspace`` and ``TopSubspaceOverlap``, the gradient in
  the top Hessian eigenspace and its turning (Gur-Ari, Roberts & Dyer 2018).
"""

from dynamics.curvature import blocks, density, lanczos, operators, subspace, trace
from dynamics.curvature.observables import (
    BatchSharpness,
    BlockHessianTrace,
    BlockSharpness,
    BlockSpectralDensity,
    BlockTopEigenvalues,
    GGNSharpness,
    HessianTrace,
    PreconditionedSharpness,
    Sharpness,
    SpectralDensity,
    TopEigenvalues,
    TopEigenvectorShare,
)
from dynamics.curvature.subspace import GradientInTopSubspace, TopSubspaceOverlap

__all__ = [
    "BatchSharpness",
    "BlockHessianTrace",
    "BlockSharpness",
    "BlockSpectralDensity",
    "BlockTopEigenvalues",
    "GGNSharpness",
    "GradientInTopSubspace",
    "HessianTrace",
    "PreconditionedSharpness",
    "Sharpness",
    "SpectralDensity",
    "TopEigenvalues",
    "TopEigenvectorShare",
    "TopSubspaceOverlap",
    "blocks",
    "density",
    "lanczos",
    "observables",
    "operators",
    "subspace",
    "trace",
]
