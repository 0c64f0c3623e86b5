r"""``RiverValley``: a toy river-valley loss landscape as a least-squares "model".

Wen, Li, Wang, Hall, Liang & Ma (2024), "Understanding warmup-stable-decay learning rates:
a river valley loss landscape perspective" (arXiv:2410.05192), Sec. 3: the pretraining
loss is pictured as a deep valley with a river at its bottom; the loss along the river
falls slowly (flat directions), across the valley it rises steeply (sharp directions). The
toy here has one river coordinate ``x`` and ``k`` valley coordinates ``y`` and a straight
river (``y = 0``):

.. math::

    L(x, y) = \ell(x) + \frac{a}{2} \lVert y \rVert^2, \qquad
    \ell(x) = \mathrm{softplus}(-x / s) = \log(1 + e^{-x/s}),

``a`` the valley's curvature (``curvature``), ``s`` the river's length scale
(``river_scale``): the river's slope is at most ``1/s`` and its curvature at most
``1/(4 s^2)``, far below ``a``. ``\ell(x)`` is the *river loss* (the loss on the river at
the iterate's river position, Sec. 3's "river" component) and ``(a/2)||y||^2`` the
*excess* (the "hill" component the stable phase's oscillations add,
``RiverValleyLoss``). Because the valley does not bend with ``x``, under SGD with additive
Gaussian gradient noise (``dynamics.optimizers.gradient_noise``) each valley coordinate is
an exact linear-Gaussian recursion whose second moment has the closed form of
``kernels.river_valley``.

The engine trains on outputs and targets, so the landscape is written as residuals: the
model's output (one per example, inputs ignored) is ``r = (sqrt(a/2) y, sqrt(ell(x)))``
and the task (``river_valley_task``) has zero targets, so that the ``mse`` loss ``sum_j
r_j^2`` (``dynamics.losses``) is ``L(x, y)``. The parameters start at ``x = river_start``
and ``y = valley_start (1, ..., 1) / sqrt(k)`` (deterministic: runs differ only in their
gradient noise).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.checks import check_float, check_int
from dynamics.observables import Observable


@dataclasses.dataclass(frozen=True)
class RiverValley:
    """The toy landscape of the module doc: ``valley_dims`` valley coordinates of
    curvature ``curvature``, one river coordinate of length scale ``river_scale``."""

    valley_dims: int = 10
    curvature: float = 1.0
    river_scale: float = 10.0
    river_start: float = 0.0
    valley_start: float = 1.0
    out_dim: int = 0  # the task's: valley_dims + 1

    def __post_init__(self):
        check_int("valley_dims", self.valley_dims)
        check_float("curvature", self.curvature, 0.0, low_open=True)
        check_float("river_scale", self.river_scale, 0.0, low_open=True)

    def hparams(self) -> dict[str, float]:
        return {}

    def init(self, key, x, hparams: Mapping | None = None):
        del key
        dtype = jnp.asarray(x).dtype if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) \
            else jnp.float32
        k = self.valley_dims
        return {"river": jnp.full((1,), self.river_start, dtype),
                "valley": jnp.full((k,), self.valley_start / np.sqrt(k), dtype)}

    def river_loss(self, params):
        """``ell(x) = softplus(-x / s)``."""
        return jax.nn.softplus(-params["river"][0] / self.river_scale)

    def excess(self, params):
        """``(a / 2) ||y||^2``: the loss above the river at the iterate's river position."""
        return 0.5 * self.curvature * jnp.sum(params["valley"] ** 2)

    def apply(self, params, x, hparams: Mapping | None = None):
        residuals = jnp.concatenate([np.sqrt(0.5 * self.curvature) * params["valley"],
                                     jnp.sqrt(self.river_loss(params))[None]])
        return jnp.broadcast_to(residuals, (jnp.shape(x)[0], residuals.shape[0]))

    def lr_multipliers(self, params, hparams: Mapping | None = None, family: str = "sgd"):
        return jax.tree.map(lambda p: 1.0, params)

    def roles(self, params):
        return jax.tree.map(lambda p: "hidden", params)

    def config(self) -> dict:
        return {"model": "RiverValley", **dataclasses.asdict(self)}


def river_valley_task(model: RiverValley, dtype: str = "float32"):
    """One example (input ignored), zero targets of ``valley_dims + 1`` outputs under
    ``mse``: the training loss is the landscape ``L(x, y)`` (module doc)."""
    from dynamics.tasks import from_arrays

    zeros = np.zeros((1, model.valley_dims + 1))
    return from_arrays(np.zeros((1, 1)), zeros, np.zeros((1, 1)), zeros, loss="mse",
                       name="river-valley", dtype=dtype)


@dataclasses.dataclass(frozen=True)
class RiverValleyLoss(Observable):
    """The landscape's two parts at the current iterate (module doc), for a spec whose
    model is a ``RiverValley``."""

    descriptions: ClassVar = {
        "river_loss": ("river loss", "ell(x) = softplus(-x / s): the loss on the river at the "
                                     "iterate's river position"),
        "valley_excess": ("excess loss", "(a / 2) ||y||^2: the loss above the river at the "
                                         "iterate's river position"),
        "river_position": ("river position", "the river coordinate x"),
    }

    def bind(self, spec):
        if not isinstance(spec.model, RiverValley):
            raise ValueError(f"RiverValleyLoss needs a RiverValley model, got "
                             f"{type(spec.model).__name__}")
        return self

    def __call__(self, ctx):
        return {"river_loss": ctx.model.river_loss(ctx.params),
                "valley_excess": ctx.model.excess(ctx.params),
                "river_position": ctx.params["river"][0]}
