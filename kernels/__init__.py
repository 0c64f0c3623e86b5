"""Function-space theory for the networks traindyn simulates.

* ``empirical_ntk`` / ``empirical_nngp`` (``kernels.empirical``): finite-width kernels of
  any pure ``apply(params, x)`` by Jacobian contraction, NTK-vector products or structured
  derivatives (``kernels.structured``), chosen by a cost model; batched over data,
  vmappable over runs.
* ``nngp`` / ``ntk`` (``kernels.infinite``, duals in ``kernels.activation_duals``):
  infinite-width kernels of the same ``dynamics.MLP`` the simulator trains, and of its
  ``ResidualMLP`` (``kernels.residual``) and ``ConvNet`` (``kernels.convolutional``, the
  CNTK with global average pooling).
* ``predict`` (``kernels.predict``): kernel-regression dynamics under gradient flow and
  gradient descent with the simulator's MSE normalisation, the infinite ensemble's mean
  and covariance, and the linearised network (``kernels.linearize``), as Datasets laid
  over ``dynamics.sweep`` results.
* ``KernelObservables`` and ``BlockKernels`` (``kernels.observables``): NTK observables
  (whole, and decomposed by blocks of parameters) inside the training
  loop, for every run of a sweep.
* ``kernels.dmft``: the infinite-width feature-learning limit (DMFT) of the ``mup`` MLP,
  its order parameters as Datasets and as an observable of finite networks.
* Closed forms that reproductions check simulations against, one module per theory:
  ``marchenko_pastur`` (linear regression's learning curves), ``criticality`` (kernel
  and four-point vertex recursions at initialisation), ``neural_collapse`` (the global
  minimiser of deep linear unconstrained features), ``low_rank`` (kernel alignment and
  lazy weight change of low-rank initial weights), ``random_feature_ridge`` (the
  random-feature ridge risk estimate) with its exact simulation in ``random_features``,
  ``river_valley`` (the noise floor of SGD in a quadratic valley and its recursion under a
  learning-rate schedule).
"""

from kernels import activation_duals, dmft, structured
from kernels.empirical import (
    empirical_nngp,
    empirical_ntk,
    mlp_empirical_nngp,
    mlp_features,
    ntk_cost,
)
from kernels.infinite import nngp, ntk
from kernels.linearize import Linearized, linearize, predict_linearized
from kernels.observables import BlockKernels, KernelObservables
from kernels.predict import predict, predict_infinite

__all__ = [
    "BlockKernels",
    "KernelObservables",
    "Linearized",
    "activation_duals",
    "dmft",
    "empirical_nngp",
    "empirical_ntk",
    "linearize",
    "mlp_empirical_nngp",
    "mlp_features",
    "nngp",
    "ntk",
    "ntk_cost",
    "predict",
    "predict_infinite",
    "predict_linearized",
    "structured",
]
