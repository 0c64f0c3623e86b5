r"""The linearised network: first-order Taylor expansion in the parameters.

.. math::

    f^{\rm lin}(\theta, x) = f(\theta_0, x) + J(\theta_0, x)\,(\theta - \theta_0)

(Lee et al. 2019, eq. 5). Trained by gradient descent on the MSE it follows the kernel
dynamics of ``kernels.predict`` *exactly*, with the empirical NTK at ``theta_0``
(their eq. 8-9), at any width. Three views of it:

* ``linearize(apply_fn, params0)``: the function ``f_lin(params, x)`` (a ``jvp``, never a
  Jacobian);
* ``Linearized(model)``: a model of the simulator's protocol whose parameters are
  ``{"params": theta, "params0": theta_0}`` (``theta_0`` drawn like ``model``'s initial
  parameters, then held fixed by a ``stop_gradient``), so that ``dynamics.sweep`` trains the
  linearised network of every run of a sweep from that run's own initialisation;
* ``predict_linearized(spec, seed)``: its training in function space, from the
  empirical NTK (full output block, learning-rate multipliers included) at the
  initial parameters the simulator draws for run ``seed``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.models.base import apply_scaled
from kernels.empirical import empirical_ntk
from kernels.predict import check_spec, predict


def linearize(apply_fn, params0):
    """``f_lin(params, x) = f(params0, x) + J(params0, x) (params - params0)``."""

    def f_lin(params, x):
        delta = jax.tree.map(jnp.subtract, params, params0)
        out, tangent = jax.jvp(lambda p: apply_fn(p, x), (params0,), (delta,))
        return out + tangent

    return f_lin


@dataclasses.dataclass(frozen=True, eq=True)
class Linearized:
    """``model`` linearised around its own initialisation (see the module doc). ``apply``
    is the linearised ``g_lin``; the loop's output scale and centering act on it as on
    ``model``."""

    model: Any

    @property
    def output_scale(self):
        return self.model.output_scale

    @property
    def center(self):
        return self.model.center

    @property
    def parametrization(self):
        return getattr(self.model, "parametrization", None)

    def hparams(self):
        return self.model.hparams()

    def init(self, key, x, hparams: Mapping | None = None):
        p = self.model.init(key, x, hparams)
        return {"params": p, "params0": p}

    def apply(self, params, x, hparams: Mapping | None = None):
        p0 = jax.lax.stop_gradient(params["params0"])
        return linearize(lambda p, xx: self.model.apply(p, xx, hparams), p0)(params["params"], x)

    def lr_multipliers(self, params, hparams: Mapping | None = None, family: str = "sgd"):
        m = self.model.lr_multipliers(params["params"], hparams, family=family)
        return {"params": m, "params0": m}

    def config(self):
        return {"model": "Linearized", "base": self.model.config()}


def predict_linearized(spec, seed: int = 0, hparams: Mapping | None = None, *,
                       method: str = "gd", params0=None, batch_size: int | None = None):
    """The linearised network of run ``seed`` of ``spec`` (full-batch ``sgd`` on the MSE)
    trained in function space: ``kernels.predict`` with the empirical NTK at the initial
    parameters (full output block ``(P, P, O, O)``, weighted by the model's learning-rate
    multipliers) and the initial outputs of the simulator (zero when centred). Equals
    ``dynamics.sweep`` of ``Linearized(spec.model)`` to float tolerance, and of the network
    itself as its width goes to infinity in the NTK parametrization."""
    if getattr(spec, "dtype", None) == "float64":
        with jax.enable_x64(True):
            return _predict_linearized(spec, seed, hparams, method, params0, batch_size)
    return _predict_linearized(spec, seed, hparams, method, params0, batch_size)


def _predict_linearized(spec, seed, hparams, method, params0, batch_size):
    from dynamics import init_params

    c = check_spec(spec, hparams)
    hp = c["hparams"]
    model, task = spec.model, spec.task
    if params0 is None:
        params0 = init_params(spec, seed, **(hparams or {}))
    x = jnp.asarray(task.x_train)
    xt = jnp.asarray(task.x_test)
    hpj = {k: jnp.asarray(v, x.dtype) for k, v in hp.items()}

    def f(p, xx):
        return apply_scaled(model, p, xx, hpj)

    mult = model.lr_multipliers(params0, hpj)
    k = empirical_ntk(f, params0, x, method="auto", batch_size=batch_size, lr_multipliers=mult)
    kt = empirical_ntk(f, params0, xt, x, method="auto", batch_size=batch_size,
                       lr_multipliers=mult)
    if model.center:
        f0, f0t = None, None
    else:
        f0, f0t = np.asarray(f(params0, x)), np.asarray(f(params0, xt))
    ds = predict(np.asarray(k), c["y_train"], lr=c["lr"], steps=c["steps"], method=method,
                 ntk_test_train=np.asarray(kt), y_test=np.asarray(task.y_test),
                 f0_train=f0, f0_test=f0t)
    ds.attrs["predictor"] = "linearised network"
    ds.attrs["seed"] = int(seed)
    return ds
