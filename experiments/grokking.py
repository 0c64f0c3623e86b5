r"""Grokking as the transition from lazy to rich training (Kumar, Bordelon, Gershman &
Pehlevan 2024, "Grokking as the transition from lazy to rich training dynamics", ICLR).

The model (their Sec. 5, the polynomial-regression example of their Fig. 1)
---------------------------------------------------------------------------
A two-layer network with fixed unit readouts and a quadratic-plus-linear activation,

.. math::  f(x) = \frac{\alpha}{N} \sum_{i=1}^{N} \phi(w_i \cdot x), \qquad
           \phi(h) = h + \frac{\varepsilon}{2} h^2,

only the first-layer weights ``w_i in R^D`` trained, the output centred
(``f(theta) - f(theta0)``, zero at initialisation; Chizat, Oyallon & Bach 2019, Sec. 2.2),
by full-batch gradient descent on the MSE of ``dynamics.losses``,
``L = (1/P) sum_mu (f(x_mu) - y_mu)^2``. ``alpha = output_scale`` sets the laziness:
with the learning rate ``lr = eta0 / alpha^2`` (``Spec.scale_lr_by_output_scale``) the
function-space dynamics at initialisation do not depend on ``alpha`` while the weights
move by ``O(1/alpha)`` (Chizat et al. 2019, Thm 2.3), so large ``alpha`` is lazy. Each
``w_i`` has the mean-field learning-rate multiplier ``N`` (``lr_multipliers``): the
gradient of ``f`` in one unit is ``O(1/N)``, and the multiplier makes the dynamics of the
empirical distribution of the ``w_i`` independent of ``N`` (Mei, Montanari & Nguyen 2018).

Data (the authors' convention): inputs ``x ~ N(0, I_D / D)`` (so ``w . x = O(1)`` for
``w ~ N(0, I_D)``), a teacher ``beta* ~ N(0, I_D)``, targets ``y = (beta* . x)^2 / 2``;
``P`` training and ``P_test`` test points drawn with numpy from the seed
(``quadratic_task``). Initial weights ``w_i ~ N(0, I_D)``, as in the paper.

Two knobs set the alignment of the initial NTK with the task. The paper's is ``eps``
(their phase diagram is over ``alpha`` and ``eps``, the latter labelled "kernel
alignment"): the initial NTK (below) is ``(x . x')`` times ``1 + O(eps) + eps^2 x^T M x'``,
a linear kernel plus an ``eps^2``-weighted quadratic one, so for small ``eps`` its top
eigenfunctions are linear while the target is quadratic. The second, ours, moves the
initial weights toward the teacher direction ``u = beta* / |beta*|``:
``w_i = sqrt(1 - rho^2) g_i + rho s_i u`` with ``g_i ~ N(0, I_D)``, ``s_i ~ N(0, 1)``, so
that ``E[w w^T] = (1 - rho^2) I + rho^2 u u^T`` (``init_overlap = rho``; ``rho = 0`` is
the paper's initialisation). Both are swept hyperparameters (traced, one compile).

Sufficient statistics and their closed recursion (the oracle)
-------------------------------------------------------------
With ``w_bar = (1/N) sum_i w_i`` and ``M = (1/N) sum_i w_i w_i^T`` the network is
``f(x) = alpha (w_bar . x + (eps/2) x^T M x) - f_0(x)`` exactly, at any ``N``. The paper
identifies ``(w_bar, M)`` as the sufficient statistics of the test loss (Sec. 5); here we
show that they also obey a closed recursion at any ``N``, so they are an exact oracle for
the simulator. Write ``X (P, D)`` for the training inputs, ``r = f(X) - y`` for the
residuals, ``v = X^T r`` and ``Q = X^T diag(r) X``. The loss gradient in one unit is
``dL/dw_i = (2 alpha / (P N)) sum_mu r_mu phi'(w_i . x_mu) x_mu
= (2 alpha / (P N)) (v + eps Q w_i)``, so one step of gradient descent with the learning
rate ``N eta0 / alpha^2`` (the multiplier times ``lr``) is

.. math::  w_i \leftarrow B w_i + c\, v, \qquad B = I + c\,\varepsilon\, Q, \qquad
           c = -\frac{2 \eta_0}{\alpha P},

affine in ``w_i`` with coefficients that depend on the units only through ``r``, i.e.
through ``(w_bar, M)``. Averaging over ``i``:

.. math::  \bar w \leftarrow B \bar w + c\, v, \qquad
           M \leftarrow B M B + c\,(B\bar w\, v^\top + v\, (B \bar w)^\top) + c^2 v v^\top.

This is the discrete-time recursion the simulator follows step for step
(``sufficient_statistics_recursion``; one ``lax.scan`` over log points, jitted). Its
``eta0 -> 0`` limit at fixed ``t = eta0 x steps`` is the gradient flow

.. math::  \frac{d\bar w}{dt} = -\frac{2}{\alpha P}(v + \varepsilon Q \bar w), \qquad
           \frac{dM}{dt} = -\frac{2}{\alpha P}\big(\varepsilon (Q M + M Q)
                            + \bar w v^\top + v \bar w^\top\big),

the discrete map being its explicit Euler step plus the ``O(eta0^2)`` terms
``c^2 (eps^2 Q M Q + eps (Q w_bar v^T + v w_bar^T Q) + v v^T)``.

Loss decomposition (the paper's three terms)
--------------------------------------------
For ``x ~ N(0, I/D)`` and the centred network, put ``dw = w_bar - w_bar_0``,
``dM = M - M_0`` and ``A = (alpha eps / 2) dM - beta* beta*^T / 2``; the error is
``f - y = alpha dw . x + x^T A x`` and Gaussian moments (Isserlis 1918:
``E[(x^T A x)^2] = (tr A)^2/D^2 + 2 ||A||_F^2 / D^2``, odd moments vanish) give the population test loss as the sum of

* ``variance_term = (tr A / D)^2``: the mismatch of the isotropic part (the mean of the
  quadratic part of ``f`` against that of ``y``);
* ``misalignment_term = 2 ||A||_F^2 / D^2``: how far ``alpha eps dM`` is from the
  teacher's ``beta* beta*^T``, which falls only once the features align with ``beta*``;
* ``linear_term = alpha^2 |dw|^2 / D``: the power in the linear part of ``f`` (the target
  has none),

the decomposition (and names) of the paper (the "variance", "misalignment" and "linear
power" terms). Lazy training fits the training set partly with the linear features,
raising ``linear_term``; grokking is the late fall of ``misalignment_term`` and
``linear_term`` as ``M`` aligns with ``beta* beta*^T``.

The initial NTK, with the multiplier ``N``, is exactly
``Theta(x, x') = alpha^2 (x . x') (1 + eps w_bar . (x + x') + eps^2 x^T M x')``
(``ntk_from_statistics``). Its centred alignment with the targets (Cortes, Mohri &
Rostamizadeh 2012, Def. 4) rises with ``eps``, by about 2% over the presets' range, as the
large linear block dominates its norms; ``rho`` barely moves it, and shows instead in the
test loss of regression with the initial NTK (where lazy training ends), which it lowers.

The experiment and its claims
-----------------------------
One ``dynamics.sweep`` over ``output_scale x eps x init_overlap`` (float32, one compile),
and beside it the recursion from every run's own initial ``(w_bar, M)`` in float64
(``predict``). The delay of a run is the number of steps between its train loss and its
test loss each first falling below ``drop_fraction`` of its initial value, the crossing
interpolated in ``log loss`` between log points (the paper's phase diagram takes the same
difference of threshold-crossing steps, with the absolute threshold 0.1 on an initial
loss of about 0.75; we take ``drop_fraction = 0.2``, crossed by every run of the
presets). Claims:

* the delay grows with ``alpha`` (local log-log slope >= 0.5 everywhere; measured about
  1: the delay is roughly proportional to ``alpha``);
* it grows with the initial misalignment: it falls as ``eps`` (the paper's knob, which
  does raise the centred NTK-target alignment) and as ``init_overlap`` (which lowers the
  test loss of regression with the initial NTK) grow;
* the float32 simulation equals the float64 recursion to a relative ``1e-3`` (float32
  rounding gives about ``3e-5`` over the quick preset).

``quick`` (D = 20, P = 100, N = 64, 36 runs) takes about 20 s on 2 CPU cores; ``full``
keeps the paper's ratio ``P / D = 5.5`` of its Fig. 1 at D = 40, N = 128, two
initialisation seeds (72 runs, about 3.5 min; the paper's D = 100, N = 500 is out of reach
of a CPU).

Why here and not in ``dynamics``: the model is a one-paper toy whose interest is its
closed recursion, and the recursion's loss decomposition needs the teacher; like the
closed forms of the other reproductions it lives with its experiment, and ``dynamics``
keeps the general models.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

import dynamics as td
from dynamics import parametrization
from dynamics.observables import Observable
from experiments.common import Claim
from kernels.observables import centred_alignment

NAME = "grokking"
TITLE = "Grokking as the lazy-to-rich transition (Kumar et al. 2024)"

PRESETS = {
    "quick": dict(dim=20, n_train=100, n_test=500, width=64, seeds=1, lr=6.0,
                  alphas=(0.5, 1.0, 2.0, 4.0), epss=(0.02, 0.05, 0.1),
                  overlaps=(0.0, 0.6, 0.9), steps=5000, log_every=10, drop_fraction=0.2),
    "full": dict(dim=40, n_train=220, n_test=1000, width=128, seeds=2, lr=12.0,
                 alphas=(0.5, 1.0, 2.0, 4.0), epss=(0.02, 0.05, 0.1),
                 overlaps=(0.0, 0.6, 0.9), steps=8000, log_every=20, drop_fraction=0.2),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 33 s on 2 shared cores (23
# s on a quieter machine); full: 197 s, measured.
SECONDS = {"quick": 35, "full": 197}

# Teacher, train and test inputs each from their own sub-stream of the seed (the
# convention of dynamics.tasks): the test set does not depend on n_train.
_STREAMS = {"teacher": 0, "train": 1, "test": 2}


def _require(cond: bool, field: str, value, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{field} must be {allowed}, got {value!r}")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


# -- data ---------------------------------------------------------------------------------


def quadratic_task(dim: int, n_train: int, n_test: int, seed: int = 0,
                   dtype: str = "float32"):
    """``(task, beta)``: ``x ~ N(0, I/dim)``, ``beta ~ N(0, I_dim)``,
    ``y = (beta . x)^2 / 2`` (Kumar et al. 2024, Sec. 5), ``beta`` as float64 numpy."""
    _require(_is_int(dim) and dim >= 1, "dim", dim, "a positive int")
    _require(_is_int(n_train) and n_train >= 1, "n_train", n_train, "a positive int")
    _require(_is_int(n_test) and n_test >= 1, "n_test", n_test, "a positive int")
    _require(_is_int(seed) and seed >= 0, "seed", seed, "an int >= 0")
    beta = np.random.default_rng([seed, _STREAMS["teacher"]]).standard_normal(dim)
    xs = {split: np.random.default_rng([seed, _STREAMS[split]]).standard_normal((n, dim))
          / math.sqrt(dim) for split, n in (("train", n_train), ("test", n_test))}
    ys = {split: 0.5 * (x @ beta) ** 2 for split, x in xs.items()}
    task = td.tasks.from_arrays(xs["train"], ys["train"], xs["test"], ys["test"],
                                name="quadratic_teacher", dtype=dtype)
    return task, beta


# -- the model ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class QuadraticNetwork:
    r"""``f(x) = (alpha / N) sum_i phi(w_i . x)``, ``phi(h) = h + (eps/2) h^2``, only the
    ``w_i`` trained, with the mean-field learning-rate multiplier ``N`` (module doc;
    Kumar et al. 2024, Sec. 5). Follows the ``dynamics.models.Model`` protocol.

    * ``width``: ``N`` (static); ``params = {"w": (N, D)}``.
    * ``output_scale`` (``alpha``), ``eps`` and, when ``target_direction`` is given,
      ``init_overlap`` (``rho``): swept hyperparameters.
    * ``target_direction``: the direction ``u`` that ``init_overlap`` mixes into the
      initial weights, ``w_i = sqrt(1 - rho^2) g_i + rho s_i u / |u|``; ``None``: Gaussian
      ``w_i ~ N(0, I)`` only.
    * ``center``: train ``alpha (g(theta) - g(theta0))`` (the loop subtracts).
    """

    width: int = 256
    output_scale: float = 1.0
    eps: float = 0.05
    init_overlap: float = 0.0
    target_direction: tuple | None = None
    center: bool = True

    def __post_init__(self):
        _require(_is_int(self.width) and self.width > 0, "width", self.width, "a positive int")
        _require(isinstance(self.center, bool), "center", self.center, "True or False")
        u = self.target_direction
        if u is not None:
            try:
                arr = np.asarray(u, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"target_direction must be a 1-D sequence of reals or None, "
                                 f"got {u!r}") from None
            _require(arr.ndim == 1 and arr.size >= 1, "target_direction", u,
                     "a non-empty 1-D sequence of reals or None")
            _require(bool(np.all(np.isfinite(arr))) and float(np.linalg.norm(arr)) > 0,
                     "target_direction", u, "finite and non-zero")
            object.__setattr__(self, "target_direction", tuple(float(a) for a in arr))
        self.check_hparams({k: getattr(self, k) for k in ("output_scale", "eps", "init_overlap")})

    def check_hparams(self, values: Mapping[str, Any]) -> None:
        """Range checks of concrete hyperparameter values (``ValueError`` naming the field)."""
        for name, v in values.items():
            if not (_is_real(v) and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite real number, got {v!r}")
            if name == "output_scale" and not v > 0:
                raise ValueError(f"output_scale must be > 0, got {v!r}")
            if name == "init_overlap":
                if not 0.0 <= v <= 1.0:
                    raise ValueError(f"init_overlap must be in [0, 1], got {v!r}")
                if v != 0.0 and self.target_direction is None:
                    raise ValueError(f"init_overlap must be 0 without a target_direction, "
                                     f"got {v!r}")

    # -- the protocol -----------------------------------------------------------------

    def hparams(self) -> dict[str, float]:
        names = ["output_scale", "eps"] + (["init_overlap"] if self.target_direction else [])
        return {n: float(getattr(self, n)) for n in names}

    def _hp(self, hparams: Mapping | None) -> dict:
        hp = self.hparams()
        if hparams:
            hp.update({k: v for k, v in hparams.items() if k in hp})
        return hp

    def init(self, key, x, hparams: Mapping | None = None):
        hp = self._hp(hparams)
        dim = x.shape[-1]
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        g = jax.random.normal(jax.random.fold_in(key, 0), (self.width, dim), dtype)
        if self.target_direction is None:
            return {"w": g}
        self.validate_data(x, 1)
        u = jnp.asarray(self.target_direction, dtype)
        u = u / jnp.linalg.norm(u)
        s = jax.random.normal(jax.random.fold_in(key, 1), (self.width,), dtype)
        rho = jnp.asarray(hp["init_overlap"], dtype)
        return {"w": jnp.sqrt(1.0 - rho**2) * g + rho * s[:, None] * u[None, :]}

    def apply(self, params, x, hparams: Mapping | None = None):
        hp = self._hp(hparams)
        h = x @ params["w"].T
        return jnp.mean(h + 0.5 * hp["eps"] * h * h, axis=-1, keepdims=True)

    def lr_multipliers(self, params, hparams: Mapping | None = None, family: str = "sgd"):
        """``N`` for SGD; 1 for Adam: the readout ``1/N`` is the NTK's ``1/sqrt(N)`` divided
        by ``theta = sqrt(N)``, whose learning rate is ``theta^2`` for SGD and ``theta``
        times the NTK's ``1/sqrt(N)`` for Adam (``dynamics.parametrization``, the
        abc-symmetry)."""
        return {"w": float(self.width) if parametrization.check_family(family) == "sgd"
                else 1.0}

    def config(self) -> dict:
        return {"model": "QuadraticNetwork", **dataclasses.asdict(self)}

    def validate_data(self, x, out_dim: int) -> None:
        if x.ndim != 2:
            raise ValueError(f"QuadraticNetwork inputs must be 2-D (examples, features), got "
                             f"shape {x.shape}")
        if out_dim != 1:
            raise ValueError(f"out_dim must be 1 (QuadraticNetwork has one output), got "
                             f"{out_dim}")
        u = self.target_direction
        if u is not None and len(u) != x.shape[1]:
            raise ValueError(f"target_direction must have as many entries as the inputs have "
                             f"features ({x.shape[1]}), got {len(u)}")


# -- sufficient statistics -------------------------------------------------------------------


def sufficient_statistics(w):
    """``(w_bar, M) = (mean_i w_i, mean_i w_i w_i^T)`` of ``w (..., N, D)``."""
    n = w.shape[-2]
    return jnp.mean(w, axis=-2), jnp.einsum("...nd,...ne->...de", w, w) / n


def statistics_outputs(x, w_bar, m, output_scale, eps):
    """``alpha (w_bar . x + (eps/2) x^T M x)`` for the rows of ``x``: the network's
    uncentred output, exactly (module doc)."""
    return output_scale * (x @ w_bar + 0.5 * eps * jnp.einsum("pd,de,pe->p", x, m, x))


def ntk_from_statistics(x1, x2, w_bar, m, output_scale, eps):
    """The empirical NTK with the learning-rate multiplier ``N``,
    ``alpha^2 (x . x') (1 + eps w_bar . (x + x') + eps^2 x^T M x')`` (module doc)."""
    a, b = x1 @ w_bar, x2 @ w_bar
    quad = x1 @ m @ x2.T
    return output_scale**2 * (x1 @ x2.T) * (1.0 + eps * (a[:, None] + b[None, :])
                                           + eps**2 * quad)


def loss_terms(dw, dm, beta, output_scale, eps):
    """The paper's decomposition of the population test loss for ``x ~ N(0, I/D)``
    (module doc): ``variance_term``, ``misalignment_term``, ``linear_term``, from the
    changes ``dw = w_bar - w_bar_0`` and ``dm = M - M_0`` (centred network)."""
    dim = beta.shape[-1]
    a = 0.5 * output_scale * eps * dm - 0.5 * jnp.outer(beta, beta)
    return {
        "variance_term": (jnp.trace(a) / dim) ** 2,
        "misalignment_term": 2.0 * jnp.sum(a * a) / dim**2,
        "linear_term": output_scale**2 * jnp.sum(dw * dw) / dim,
    }


@dataclasses.dataclass(frozen=True)
class LossDecomposition(Observable):
    """The three population loss terms (``loss_terms``) of the network's own
    ``(w_bar, M)`` at each log point. ``beta``: the teacher (a tuple, so that the observable
    is hashable); ``center``: the model's."""

    beta: tuple = ()
    center: bool = True

    def __call__(self, ctx):
        w, w0 = ctx.params["w"], ctx.params0["w"]
        if self.center:  # the changes, from the weight change (no cancellation)
            delta = w - w0
            n = w.shape[0]
            dw = jnp.mean(delta, axis=0)
            dm = (delta.T @ w + w0.T @ delta) / n
        else:
            dw, dm = sufficient_statistics(w)
        beta = jnp.asarray(self.beta, w.dtype)
        return loss_terms(dw, dm, beta, ctx.hparams["output_scale"], ctx.hparams["eps"])


@dataclasses.dataclass(frozen=True)
class Outputs(Observable):
    """``train_outputs`` and ``test_outputs``: the trained (centred, scaled) outputs."""

    dims: ClassVar = {"train_outputs": ("train_example",), "test_outputs": ("test_example",)}

    def __call__(self, ctx):
        return {"train_outputs": ctx.outputs(ctx.params, "train")[:, 0],
                "test_outputs": ctx.outputs(ctx.params, "test")[:, 0]}


# -- the oracle ---------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("steps", "log_every", "center", "outputs"))
def sufficient_statistics_recursion(x_train, y_train, x_test, y_test, w_bar0, m0,
                                    output_scale, eps, lr, beta=None, *, steps: int,
                                    log_every: int, center: bool = True,
                                    outputs: bool = False):
    r"""The closed recursion of ``(w_bar, M)`` under full-batch GD (module doc), from
    ``(w_bar0, m0)`` for ``steps`` steps with the base learning rate ``lr = eta0`` (the
    per-unit step is ``N eta0 / alpha^2``). Returns, at steps ``0, log_every, ...,
    steps`` (leading axis), ``train_loss`` and ``test_loss`` in the normalisation of
    ``dynamics.losses``, with ``outputs`` the centred ``train_outputs``/``test_outputs``,
    and with the teacher ``beta`` the three ``loss_terms``. Pure; ``vmap`` over runs."""
    x, xt = x_train, x_test
    y, yt = y_train.reshape(-1), y_test.reshape(-1)
    p, dim = x.shape
    eye = jnp.eye(dim, dtype=x.dtype)
    c = -2.0 * lr / (output_scale * p)

    def uncentred(w_bar, m, rows):
        return statistics_outputs(rows, w_bar, m, output_scale, eps)

    f0 = uncentred(w_bar0, m0, x) if center else jnp.zeros_like(y)
    f0t = uncentred(w_bar0, m0, xt) if center else jnp.zeros_like(yt)

    def step(_, state):
        w_bar, m = state
        r = uncentred(w_bar, m, x) - f0 - y
        v = x.T @ r
        b = eye + (c * eps) * ((x * r[:, None]).T @ x)
        bw = b @ w_bar
        m = b @ m @ b + c * (jnp.outer(bw, v) + jnp.outer(v, bw)) + (c * c) * jnp.outer(v, v)
        return bw + c * v, m

    def observe(state):
        w_bar, m = state
        f, ft = uncentred(w_bar, m, x) - f0, uncentred(w_bar, m, xt) - f0t
        out = {"train_loss": jnp.mean((f - y) ** 2), "test_loss": jnp.mean((ft - yt) ** 2)}
        if outputs:
            out.update(train_outputs=f, test_outputs=ft)
        if beta is not None:
            dw, dm = (w_bar - w_bar0, m - m0) if center else (w_bar, m)
            out.update(loss_terms(dw, dm, beta, output_scale, eps))
        return out

    def outer(state, _):
        state = jax.lax.fori_loop(0, log_every, step, state)
        return state, observe(state)

    state0 = (w_bar0, m0)
    _, traj = jax.lax.scan(outer, state0, None, length=steps // log_every)
    first = observe(state0)
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, traj)


def _check_oracle_spec(spec: td.Spec) -> None:
    opt = spec.optimizer
    problems = []
    if not isinstance(spec.model, QuadraticNetwork):
        problems.append(f"model must be a QuadraticNetwork, got {type(spec.model).__name__}")
    problems += [f"the optimizer must be plain gradient descent, got {d}"
                 for d in opt.departures_from_gradient_descent(spec.hparams())]
    if spec.batch_size is not None:
        problems.append(f"batch_size must be None (full batch), got {spec.batch_size!r}")
    if not spec.scale_lr_by_output_scale:
        problems.append("scale_lr_by_output_scale must be True (lr = eta0 / alpha^2)")
    if spec.task.loss != "mse" or spec.task.label_noise != 0:
        problems.append("the task must have loss 'mse' and no label noise")
    if spec.init is not None:
        problems.append("spec.init must be None (the oracle starts from given weights)")
    if problems:
        raise ValueError("the recursion describes this spec only if: " + "; ".join(problems))


def predict(spec: td.Spec, w0, *, output_scale, eps, lr=None, beta=None,
            outputs: bool = False, dtype: str | None = None) -> dict:
    """The recursion for the runs whose initial weights are ``w0 (..., N, D)`` and whose
    hyperparameters ``output_scale``, ``eps`` (and ``lr``, default the spec's) broadcast
    to the leading shape ``...``: one vmapped, jitted program. The spec's data, steps,
    ``log_every`` and centring; ``dtype`` (default the spec's) is that of the recursion
    (``"float64"`` runs under ``jax.enable_x64``). Returns numpy arrays of leading shape
    ``(..., steps // log_every + 1)``."""
    _check_oracle_spec(spec)
    dtype = dtype or spec.dtype
    _require(dtype in ("float32", "float64"), "dtype", dtype, "'float32' or 'float64'")
    w0 = np.asarray(w0)
    _require(w0.ndim >= 2 and w0.shape[-1] == spec.task.in_dim, "w0", w0.shape,
             f"an array (..., N, {spec.task.in_dim})")
    lead = w0.shape[:-2]
    lr = spec.hparams()["lr"] if lr is None else lr
    hp = {k: np.broadcast_to(np.asarray(v, np.float64), lead).reshape(-1)
          for k, v in (("output_scale", output_scale), ("eps", eps), ("lr", lr))}
    task = spec.task
    with jax.enable_x64(dtype == "float64"):
        cast = functools.partial(jnp.asarray, dtype=dtype)
        w_bar0, m0 = sufficient_statistics(cast(w0.reshape((-1,) + w0.shape[-2:])))
        data = [cast(a) for a in (task.x_train, task.y_train, task.x_test, task.y_test)]
        b = None if beta is None else cast(beta)
        run = functools.partial(sufficient_statistics_recursion, steps=spec.steps,
                                log_every=spec.log_every, center=spec.model.center,
                                outputs=outputs)
        batched = jax.jit(jax.vmap(lambda wb, m, a, e, l: run(*data, wb, m, a, e, l, b)))
        out = batched(w_bar0, m0, *(cast(hp[k]) for k in ("output_scale", "eps", "lr")))
        out = jax.device_get(out)
    return {k: np.asarray(v).reshape(lead + v.shape[1:]) for k, v in out.items()}


# -- the experiment ---------------------------------------------------------------------------


def make_spec(dim, n_train, n_test, width, lr, steps, log_every, seed=0, dtype="float32",
              outputs=False, init_overlap=None, eps=0.05) -> tuple[td.Spec, np.ndarray]:
    """``(spec, beta)``: the quadratic task, ``QuadraticNetwork`` (centred), full-batch GD
    with ``lr / alpha^2``, observables: losses and the loss decomposition (and with
    ``outputs`` the outputs). ``init_overlap`` not None: the teacher direction is given
    to the model, so that ``init_overlap`` can be swept."""
    task, beta = quadratic_task(dim, n_train, n_test, seed=seed, dtype=dtype)
    direction = None if init_overlap is None else tuple(beta / np.linalg.norm(beta))
    model = QuadraticNetwork(width=width, eps=eps, target_direction=direction,
                             init_overlap=init_overlap or 0.0)
    observables = ("loss", LossDecomposition(beta=tuple(float(b) for b in beta),
                                             center=model.center))
    if outputs:
        observables += (Outputs(),)
    spec = td.Spec(model, task, td.optimizers.sgd(lr), steps=steps, log_every=log_every,
                   scale_lr_by_output_scale=True, observables=observables, dtype=dtype)
    return spec, beta


def crossing_step(steps, loss, fraction):
    """The first step at which ``loss`` falls below ``fraction * loss[0]``, interpolated
    linearly in ``log loss`` between log points; NaN if it never does."""
    steps, loss = np.asarray(steps, float), np.asarray(loss, float)
    level = fraction * loss[0]
    below = np.nonzero(loss < level)[0]
    if not below.size or below[0] == 0:
        return np.nan
    k = below[0]
    a, b = np.log(loss[k - 1]), np.log(loss[k])
    return float(steps[k - 1] + (steps[k] - steps[k - 1]) * (a - np.log(level)) / (a - b))


def _crossings(ds, name, fraction):
    return xr.apply_ufunc(lambda loss: crossing_step(ds.step.values, loss, fraction),
                          ds[name], input_core_dims=[["step"]], vectorize=True)


def initial_alignment(task, w0, eps):
    """Centred kernel-target alignment (Cortes, Mohri & Rostamizadeh 2012, Def. 4) of the
    initial NTK on the training set with the training targets, for initial weights
    ``w0 (N, D)`` (from their ``(w_bar, M)``; independent of ``alpha``), in float64."""
    with jax.enable_x64(True):
        x = jnp.asarray(task.x_train, jnp.float64)
        w_bar, m = sufficient_statistics(jnp.asarray(w0, jnp.float64))
        k = ntk_from_statistics(x, x, w_bar, m, 1.0, eps)
        return float(centred_alignment(k, jnp.asarray(task.y_train, jnp.float64)))


def kernel_regression_test_loss(task, w0, eps):
    """Test MSE of ridgeless regression with the initial NTK, ``Theta(x, X) Theta(X, X)^+ y``:
    where the centred network ends as ``alpha -> infinity`` (lazy training; the horizontal
    line of the paper's Fig. 1), in float64."""
    with jax.enable_x64(True):
        x, xt = (jnp.asarray(a, jnp.float64) for a in (task.x_train, task.x_test))
        w_bar, m = sufficient_statistics(jnp.asarray(w0, jnp.float64))
        k = ntk_from_statistics(x, x, w_bar, m, 1.0, eps)
        kt = ntk_from_statistics(xt, x, w_bar, m, 1.0, eps)
        pred = kt @ jnp.linalg.lstsq(k, jnp.asarray(task.y_train, jnp.float64))[0]
        return float(jnp.mean((pred - jnp.asarray(task.y_test, jnp.float64)) ** 2))


def run(dim, n_train, n_test, width, seeds, lr, alphas, epss, overlaps, steps, log_every,
        drop_fraction):
    """The sweep ``seed x output_scale x eps x init_overlap`` (float32), the float64
    recursion from every run's initial weights (``oracle_*``), the drop steps and delays,
    and per initialisation the initial-NTK alignment and its regression test loss."""
    spec, beta = make_spec(dim, n_train, n_test, width, lr, steps, log_every, init_overlap=0.0)
    grid = dict(output_scale=list(alphas), eps=list(epss), init_overlap=list(overlaps))
    ds, states = td.sweep(spec, seed=range(seeds), **grid, return_state=True)
    dims = ("seed", *grid)
    w0 = np.asarray(states[()].params0["w"])  # (seed, alpha, eps, rho, N, D)
    a = np.reshape(alphas, [len(alphas) if d == "output_scale" else 1 for d in dims])
    e = np.reshape(epss, [len(epss) if d == "eps" else 1 for d in dims])
    oracle = predict(spec, w0, output_scale=a, eps=e, beta=beta, dtype="float64")
    for name, value in oracle.items():
        ds[f"oracle_{name}"] = (dims + ("step",), value)
    for split in ("train", "test"):
        ds[f"{split}_drop_step"] = _crossings(ds, f"{split}_loss", drop_fraction)
    ds["delay"] = ds.test_drop_step - ds.train_drop_step
    # The initial weights depend on the seed and rho only (alpha and eps are not used by
    # init): the initial-NTK quantities per (seed, eps, rho).
    w_init = w0[:, 0]  # (seed, eps, rho, N, D)
    index = list(np.ndindex(w_init.shape[:3]))
    align = np.zeros(w_init.shape[:3])
    kernel_loss = np.zeros(w_init.shape[:3])
    for s_, j, k in index:
        align[s_, j, k] = initial_alignment(spec.task, w_init[s_, j, k], epss[j])
        kernel_loss[s_, j, k] = kernel_regression_test_loss(spec.task, w_init[s_, j, k], epss[j])
    ds["initial_alignment"] = (("seed", "eps", "init_overlap"), align)
    ds["kernel_test_loss"] = (("seed", "eps", "init_overlap"), kernel_loss)
    ds.attrs.update(dim=dim, n_train=n_train, n_test=n_test, width=width, lr=lr,
                    drop_fraction=drop_fraction)
    return ds.transpose(*dims, "step")


def _local_slopes(x, y):
    """``d log y / d log x`` between consecutive points, along the last axis."""
    return np.diff(np.log(y), axis=-1) / np.diff(np.log(x))


def check(ds) -> list[Claim]:
    alphas, epss = ds.output_scale.values, ds.eps.values
    delay = ds.delay.mean("seed")
    by_alpha = delay.transpose("eps", "init_overlap", "output_scale").values
    by_eps = delay.transpose("output_scale", "init_overlap", "eps").values
    by_rho = delay.transpose("output_scale", "eps", "init_overlap").values
    align = ds.initial_alignment.mean("seed").transpose("init_overlap", "eps").values
    kernel = ds.kernel_test_loss.mean("seed").transpose("eps", "init_overlap").values
    gap = max(float(np.max(np.abs(ds[f"{split}_loss"] - ds[f"oracle_{split}_loss"])
                           / ds[f"oracle_{split}_loss"])) for split in ("train", "test"))
    return [
        Claim("delay_grows_with_alpha", float(np.min(_local_slopes(alphas, by_alpha))), 0.5,
              ">=", description="smallest local log-log slope d log(delay) / d log(alpha) "
              "between consecutive output scales, over every eps and init_overlap (delay = "
              "steps from the train loss to the test loss falling below drop_fraction of "
              "their initial values): at least sqrt growth everywhere, lazier networks learn "
              "their features later (Kumar et al. 2024)"),
        Claim("delay_grows_with_misalignment", float(np.min(-_local_slopes(epss, by_eps))),
              0.2, ">=", description="smallest local slope -d log(delay) / d log(eps) between "
              "consecutive eps (the paper's alignment knob), over every alpha and "
              "init_overlap: the less aligned the initial NTK, the longer the delay"),
        Claim("initial_alignment_grows_with_eps", float(np.min(align[:, 1:] / align[:, :-1])),
              1.0, ">=", description="smallest ratio of the centred alignment of the initial "
              "NTK with the training targets between consecutive eps (at every "
              "init_overlap): eps raises it, through the eps^2-weighted quadratic block (a "
              "few percent: the linear block dominates the alignment's norms)"),
        Claim("delay_falls_with_init_overlap", float(np.min(by_rho[..., :-1] / by_rho[..., 1:])),
              1.02, ">=", description="smallest ratio delay(rho_k) / delay(rho_k+1) between "
              "consecutive init_overlap levels, over every alpha and eps: initial weights "
              "tilted toward the teacher grok sooner (2% is above the resolution of the "
              "interpolated crossings, < 1 step each)"),
        Claim("kernel_loss_falls_with_init_overlap", float(np.max(kernel[:, 1:] / kernel[:, :-1])),
              0.95, "<=", description="largest ratio between consecutive init_overlap levels "
              "of the test MSE of ridgeless regression with the initial NTK (the lazy limit), "
              "at every eps: tilting the initial weights toward the teacher aligns the kernel "
              "with the task, its regression generalizes better (by >= 5% a level; computed "
              "in float64, so any drop is real)"),
        Claim("simulation_equals_recursion", gap, 1e-3, "<=",
              description="largest relative gap |L_sim - L_rec| / L_rec of the train and test "
              "losses over every run and log point, float32 simulation against the float64 "
              "recursion of (w_bar, M) from the same initial weights (float32 rounding, "
              "~1e-7 a step, grows to ~1e-5 over a run; a wrong learning rate, multiplier or "
              "centring gives O(1))"),
        Claim("no_divergence", float((ds.diverged_at >= 0).sum()), 0.0, "<=",
              description="runs frozen by a non-finite loss"),
    ]


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    alphas, epss, rhos = ds.output_scale.values, ds.eps.values, ds.init_overlap.values
    step = np.maximum(ds.step.values, 1)
    c_alpha = plt.cm.viridis(np.linspace(0, 0.9, len(alphas)))
    c_eps = plt.cm.plasma(np.linspace(0, 0.8, len(epss)))
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    d0 = ds.isel(seed=0).sel(init_overlap=rhos[0])
    e_min, a_max = epss[0], alphas[-1]

    ax = axes[0, 0]
    for a, c in zip(alphas, c_alpha):
        r = d0.sel(output_scale=a, eps=e_min)
        ax.plot(step, r.train_loss, "--", color=c)
        ax.plot(step, r.test_loss, "-", color=c, label=f"alpha={a:g}")
        ax.plot(step, r.oracle_test_loss, ":", color="k", lw=0.8)
    ax.axhline(float(d0.kernel_test_loss.sel(eps=e_min)), color="r", lw=0.8,
               label="initial-NTK regression (test)")
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="MSE",
           title=f"train (--), test (-) loss, eps={e_min:g}; recursion (:)")
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    for e, c in zip(epss, c_eps):
        r = d0.sel(output_scale=a_max, eps=e)
        ax.plot(step, r.train_loss, "--", color=c)
        ax.plot(step, r.test_loss, "-", color=c, label=f"eps={e:g}")
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="MSE",
           title=f"alignment sweep (eps) at alpha={a_max:g}")
    ax.legend(fontsize=7)

    ax = axes[0, 2]
    r = d0.sel(output_scale=a_max, eps=e_min)
    total = r.variance_term + r.misalignment_term + r.linear_term
    ax.plot(step, r.test_loss, color="tab:orange", lw=2, label="test loss (test set)")
    ax.plot(step, total, "k", lw=1, label="population loss (sum of the terms)")
    for name, color in (("variance_term", "r"), ("misalignment_term", "g"),
                        ("linear_term", "b")):
        ax.plot(step, r[name], "--", color=color, label=name)
        ax.plot(step, r[f"oracle_{name}"], ":", color="k", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="MSE", ylim=(1e-4, None),
           title=f"test loss decomposition, alpha={a_max:g}, eps={e_min:g}")
    ax.legend(fontsize=7)

    delay = ds.delay.mean("seed")
    ax = axes[1, 0]
    for e, c in zip(epss, c_eps):
        ax.plot(alphas, delay.sel(eps=e, init_overlap=rhos[0]), "o-", color=c,
                label=f"eps={e:g}")
    d_ref = float(delay.sel(eps=e_min, init_overlap=rhos[0])[0])
    ax.plot(alphas, d_ref * alphas / alphas[0], "k:", label="~ alpha")
    ax.set(xscale="log", yscale="log", xlabel="alpha (output scale)", ylabel="delay (steps)",
           title=f"grokking delay vs laziness (init_overlap={rhos[0]:g})")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    align = ds.initial_alignment.mean("seed").sel(init_overlap=rhos[0])
    for a, c in zip(alphas, c_alpha):
        ax.plot(epss, delay.sel(output_scale=a, init_overlap=rhos[0]), "o-", color=c,
                label=f"alpha={a:g}")
        ax.plot(epss, delay.sel(output_scale=a, init_overlap=rhos[-1]), "s--", color=c, ms=4)
    ax.set(xscale="log", yscale="log", xlabel="eps (initial NTK alignment)",
           ylabel="delay (steps)")
    ax.set_title(f"delay vs alignment: init_overlap={rhos[0]:g} (-), {rhos[-1]:g} (--)\n"
                 "initial-NTK alignment " + ", ".join(
                     f"{v:.4f}" for v in align.values) + f" at eps={list(map(float, epss))}",
                 fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[1, 2]
    for split, style in (("train", "--"), ("test", "-")):
        rel = (np.abs(ds[f"{split}_loss"] - ds[f"oracle_{split}_loss"])
               / ds[f"oracle_{split}_loss"])
        ax.plot(step, rel.max([d for d in rel.dims if d != "step"]), style, label=split)
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="max |L_sim - L_rec| / L_rec",
           title="float32 simulation vs float64 recursion (all runs)")
    ax.legend(fontsize=7)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
