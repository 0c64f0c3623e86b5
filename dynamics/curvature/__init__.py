"""Curvature of the training loss, matrix-free and inside the training loop.

* ``operators``: Hessian, Gauss-Newton and empirical-Fisher vector products on parameter
  pytrees, on the training set (optionally accumulated over row-batches) or a batch;
* ``lanczos``: Lanczos with full reorthogonalisation, extreme eigenpairs with residuals,
  and power iteration;
* ``trace``: Hutchinson and Hutch++ trace estimates with standard errors;
* ``density``: spectral density by stochastic Lanczos quadrature;
* ``observables``: ``Sharpness``, ``TopEigenvalues``, ``HessianTrace``,
  ``BatchSharpness``, ``GGNSharpness``, ``SpectralDensity`` for ``Spec.observables``.
"""

from dynamics.curvature import density, lanczos, operators, trace
from dynamics.curvature.observables import (
    BatchSharpness,
    GGNSharpness,
    HessianTrace,
    Sharpness,
    SpectralDensity,
    TopEigenvalues,
)

__all__ = [
    "BatchSharpness",
    "GGNSharpness",
    "HessianTrace",
    "Sharpness",
    "SpectralDensity",
    "TopEigenvalues",
    "density",
    "lanczos",
    "observables",
    "operators",
    "trace",
]
