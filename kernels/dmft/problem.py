"""What the DMFT solvers share: the problem in the solver's units, checked once.

``make_problem`` reads a ``dynamics.MLP`` (``parametrization="mup"``) and the training
setup and returns a ``Problem`` at output scale 1 (``gamma = gamma0/alpha``, step
``eta alpha^2``; see ``kernels.dmft``), on the internal time grid of GD steps
(``substeps`` per simulator step for gradient flow).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

METHODS = ("gd", "flow")


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """The DMFT problem in solver units.

    ``x`` holds the training then the test inputs (``n = n_train + n_test`` rows); ``y``
    the training targets ``(n_train,)``; ``steps`` internal GD steps of size ``eta``;
    ``record`` the internal steps reported, ``step_coord`` their simulator steps."""

    activation: str
    depth: int
    sigma: float
    gamma: float
    eta: float
    steps: int
    record: np.ndarray
    step_coord: np.ndarray
    x: np.ndarray
    y: np.ndarray
    n_train: int
    y_test: np.ndarray | None
    alpha: float
    gamma0: float
    lr: float
    method: str

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def phi0(self) -> np.ndarray:
        """``Phi^0 = x . x' / D`` over all examples."""
        return self.x @ self.x.T / self.x.shape[1]

    @property
    def train_mask(self) -> np.ndarray:
        return (np.arange(self.n) < self.n_train).astype(np.float64)

    def config(self) -> dict:
        return {"activation": self.activation, "depth": self.depth, "sigma_w": self.sigma,
                "gamma0": self.gamma0, "output_scale": self.alpha, "lr": self.lr,
                "method": self.method, "internal_steps": self.steps, "n_train": self.n_train,
                "n_test": self.n - self.n_train}


def _check_model(model, hp):
    if not (hasattr(model, "fan_ins") and hasattr(model, "layers")):
        raise ValueError(f"model must be a dynamics.MLP, got {type(model).__name__}")
    problems = []
    if model.parametrization != "mup":
        problems.append(f"parametrization={model.parametrization!r} (needs 'mup')")
    if model.out_dim != 1:
        problems.append(f"out_dim={model.out_dim} (needs 1)")
    if (model.bias or getattr(model, "readout_bias", False)) and hp.get("sigma_b", 0.0) != 0.0:
        problems.append(f"bias=True with sigma_b={hp['sigma_b']} (needs bias=False or "
                        "sigma_b=0)")
    if model.depth < 1:
        problems.append("depth=0 (needs at least one hidden layer)")
    if getattr(model, "zero_readout", False):
        problems.append("zero_readout=True (needs the Gaussian readout)")
    if getattr(model, "init_rank", 0):
        problems.append(f"init_rank={model.init_rank} (needs the i.i.d. Gaussian weights)")
    if problems:
        raise ValueError("the DMFT solver describes the mup MLP of Bordelon & Pehlevan "
                         "(2022) without biases and with one output; this model has "
                         + ", ".join(problems))


def _as_2d(name, x):
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (examples, features), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite entries")
    return x


def _as_targets(name, y, n):
    y = np.asarray(y, np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) or ({n}, 1), got {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"{name} has non-finite entries")
    return y


def make_problem(model, x_train, y_train, *, lr: float, steps: int, log_every: int = 1,
                 x_test=None, y_test=None, method: str = "gd", substeps: int = 1,
                 hparams: Mapping | None = None) -> Problem:
    """Check the inputs (``ValueError`` naming the field) and build the ``Problem``."""
    hp = {**model.hparams(), **(hparams or {})} if hasattr(model, "hparams") else {}
    _check_model(model, hp)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    for name, v in (("steps", steps), ("log_every", log_every), ("substeps", substeps)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if steps % log_every:
        raise ValueError(f"log_every must divide steps={steps}, got log_every={log_every}")
    if method == "gd" and substeps != 1:
        raise ValueError(f"substeps must be 1 with method='gd' (GD is solved at its own "
                         f"step), got {substeps}")
    if not (np.isscalar(lr) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    gamma0 = float(hp.get("gamma0", model.gamma0))
    alpha = float(hp.get("output_scale", model.output_scale))
    sigma = float(hp.get("sigma_w", model.sigma_w))
    if not (np.isfinite(gamma0) and gamma0 >= 0):
        raise ValueError(f"gamma0 must be >= 0, got {gamma0!r}")
    x = _as_2d("x_train", x_train)
    y = _as_targets("y_train", y_train, x.shape[0])
    yt = None
    if x_test is not None:
        xt = _as_2d("x_test", x_test)
        if xt.shape[1] != x.shape[1]:
            raise ValueError(f"x_test must have {x.shape[1]} features like x_train, got "
                             f"{xt.shape[1]}")
        if y_test is not None:
            yt = _as_targets("y_test", y_test, xt.shape[0])
        x_all = np.concatenate([x, xt])
    else:
        if y_test is not None:
            raise ValueError("y_test needs x_test")
        x_all = x
    internal = steps * substeps
    record = np.arange(0, internal + 1, log_every * substeps)
    return Problem(activation=model.activation, depth=model.depth, sigma=sigma,
                   gamma=gamma0 / alpha, eta=float(lr) * alpha**2 / substeps,
                   steps=internal, record=record, step_coord=record // substeps,
                   x=x_all, y=y, n_train=x.shape[0], y_test=yt, alpha=alpha,
                   gamma0=gamma0, lr=float(lr), method=method)
