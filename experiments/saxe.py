r"""Saxe, McClelland & Ganguli (2014), "Exact solutions to the nonlinear dynamics of
learning in deep linear neural networks" (ICLR 2014): each singular mode of the
input-output correlation is learned along its own sigmoid, stronger modes first.

Setting
-------
A linear network with one hidden layer of width ``N``, ``f(x) = W2 W1 x`` with
``W1`` (N x D) and ``W2`` (K x N), trained by full-batch gradient descent with step
``eta`` on our loss (``dynamics.losses``, no factor 1/2)

.. math::  L = \frac1P \sum_i \|W_2 W_1 x_i - y_i\|^2
             = \mathrm{tr}(W\Sigma_{xx}W^T) - 2\,\mathrm{tr}(W\Sigma_{xy}) + \mathrm{const},
   \qquad W = W_2 W_1,

with ``Sigma_xx = (1/P) sum x x^T`` and ``Sigma_yx = (1/P) sum y x^T``. In the ``td.MLP``
format (``depth=1``, linear, standard parametrization, no bias, ``output_scale=1``)
``params[0]["w"] = W1^T`` and ``params[1]["w"] = W2^T``; the standard parametrization's
forward multipliers and learning-rate multipliers are all 1, so ``eta`` is the plain step.

**Gradient flow.** ``dL/dW = 2 (W Sigma_xx - Sigma_yx)``, so with whitened inputs
(``Sigma_xx = I``) ``dL/dW1 = -2 W2^T (Sigma_yx - W2 W1)`` and
``dL/dW2 = -2 (Sigma_yx - W2 W1) W1^T``. One GD step is

    W1 <- W1 + 2 eta W2^T (Sigma_yx - W2 W1),   W2 <- W2 + 2 eta (Sigma_yx - W2 W1) W1^T,

the forward-Euler step (unit time step = one optimizer step) of

    tau dW1/dt = W2^T (Sigma_yx - W2 W1),   tau dW2/dt = (Sigma_yx - W2 W1) W1^T,
    tau = 1 / (2 eta)  steps,

the paper's gradient-flow equations (Sec. 2) for whitened inputs, with the time constant
``tau = 1/(2 eta)`` of our normalisation (the factor 2 comes from the loss without 1/2).
Time ``t`` is measured in optimizer steps ``k`` and ``t / tau = 2 eta k``.

**Decoupled balanced solution** (paper Sec. 2). Write ``Sigma_yx = U S V^T`` (SVD,
``s_1 > s_2 > ... > s_m > 0``, the other singular values 0) and take any ``N x m``
matrix ``R`` with orthonormal columns (here a seeded random one: the hidden basis is
arbitrary). Start from

    W1 = R diag(a) V_m^T,   W2 = U_m diag(b) R^T      (U_m, V_m: first m singular vectors).

Then ``U^T W2 W1 V = diag(a b)`` (padded with zeros), and, using ``U^T Sigma_yx V = S``,
the GD map keeps this form with each mode ``alpha`` an independent pair

    a' = a + 2 eta b (s - a b),   b' = b + 2 eta a (s - a b)                       (*)

(the off-diagonal entries of ``U^T W2 W1 V`` stay exactly 0 and the modes with
``a = b = 0`` stay 0). With ``a = b`` the pair stays balanced and ``u = a b = a^2``
obeys ``u' = u (1 + 2 eta (s - u))^2``: this is ``discrete_mode_strength``, iterated in
float64. Its continuous limit: ``tau du/dt = b tau da/dt + a tau db/dt
= (a^2 + b^2)(s - u) = 2 u (s - u)``, a logistic equation. Separating variables,
``d ln(u / (s - u)) = (2 s / tau) dt``, so

    u(t) = s e^{2 s t / tau} / (e^{2 s t / tau} - 1 + s / u0)                       (**)

which is the paper's single-mode solution (Sec. 2). Its half time ``u(t_half) = s / 2`` is
``t_half = (tau / (2 s)) ln(s / u0 - 1)``: stronger modes are learned first, the time
scale is ``tau / s``.

**Discretisation error of (*) against (**)** (claim 1). In the logistic coordinate
``z = ln(u / (s - u))`` the flow is a translation, ``dz/dk = 4 eta s``. One step of the
balanced map gives exactly ``z' - z = 2 ln(1 + 2 eta (s - u)) - ln(1 - 4 eta u
- 4 eta^2 u (s - u))``; expanding to second order,

    z' - z = 4 eta s + 4 eta^2 s (3 u - s) + O(eta^3).

Summing the second-order term along the path (``dz = 4 eta s`` per step) gives the lag of
the discrete ``z`` after it has reached ``z``:

    Delta z = eta s [Phi(z) - Phi(z0)] + O(eta^2),   Phi(z) = 3 ln(1 + e^z) - z,

and since ``d ln u / dz = 1 - u/s`` the relative error is
``u_disc / u - 1 = (1 - u/s) Delta z + O(eta^2)``. ``Phi`` decreases from
``Phi(z0) ~ ln(s/u0)`` to its minimum ``3 ln(3/2) + ln 2 = 1.91`` (at ``u = s/3``) and then
grows like ``2 z`` while ``1 - u/s ~ e^{-z}``; hence, for ``u0 << s``,

    max_t |u_disc / u - 1| <= eta s ln(s / u0) (1 + O(eta s)),

the largest ``s`` giving the largest bound (``s ln(s/u0)`` grows with ``s``). The sharp
first-order value ``max_z (1 - sigma(z)) |Phi(z) - Phi(z0)|`` is about 0.63 of this bound
for ``s/u0 = 4000``, which leaves room for the ``O(eta^2)`` terms and float32 rounding.
The error is first order in ``eta`` at fixed ``t / tau``: halving ``eta`` halves it
(claim 4, measured on a second run at ``eta/2`` logged at the same times ``t / tau``).

**Small random initialisation** (the situation of the paper's Fig. 3). With ``W1, W2`` i.i.d.
``N(0, sigma^2)`` entries the modes are neither balanced nor decoupled at ``t = 0``. While
``W2 W1 << Sigma_yx`` the dynamics are linear and exactly decoupled by mode: with
``a_alpha = W1 v_alpha`` and ``b_alpha = W2^T u_alpha`` (vectors in ``R^N``),
``tau da/dt = s b`` and ``tau db/dt = s a``, so ``a, b = c+ e^{st/tau} +- c- e^{-st/tau}``
with ``c+- = (a0 +- b0)/2`` and the mode strength ``(U^T W2 W1 V)_aa = b . a`` is

    u(t) = |c+|^2 e^{2 s t / tau} - |c-|^2 e^{-2 s t / tau}.

The growing part is the balanced solution started from ``|c+|^2 = |a0 + b0|^2 / 4``
(about ``N sigma^2 / 2``). The initial value ``(U^T W2 W1 V)_aa = |c+|^2 - |c-|^2`` itself
has a random sign and mean 0: it is *not* the ``u0`` of the growing mode (clipping it
positive gives an arbitrary time shift; ``random_u0_diag`` holds it for comparison).

The hidden vectors ``c+`` of different modes overlap by ``O(1/sqrt N)``. Once a stronger
mode ``beta`` is learned (``a_beta = b_beta = h``, ``|h|^2 = s_beta``) the weaker mode's
equations gain ``- h (h . a_alpha)`` and ``- h (h . b_alpha)``: its component along ``h``
obeys ``tau dx/dt = (s_alpha - s_beta) x`` and dies, while the orthogonal component keeps
growing at rate ``s_alpha``. So each mode is learned as a decoupled balanced mode started
from ``u0_eff = |P c+|^2``, ``P`` the projection orthogonal to the ``c+`` of the stronger
modes (Gram-Schmidt in order of decreasing ``s``); ``random_u0_unprojected`` keeps
``|c+|^2``. The check compares the simulated half times (first crossing of ``s/2``,
interpolated between log points; the logistic has its inflection there) with

* the formula ``t_half = ln(s/u0_eff - 1) / (4 eta s)`` steps; the Euler lag at ``z = 0``
  is ``Delta z = eta s [Phi(0) - Phi(z0)]``, i.e. a relative delay
  ``eta s (Phi(z0) - Phi(0)) / (-z0) < eta s`` (about 0.83 eta s here): the tolerance is
  ``eta s_max`` plus the allowance for the transients of the next item;
* the discrete balanced recursion ``u' = u (1 + 2 eta (s - u))^2`` from the same
  ``u0_eff``, which removes that O(eta) delay and leaves what the picture neglects
  (``|c-|^2 e^{-2st/tau}``, the decaying overlaps, and the interaction of two modes that
  are nonlinear at the same time through the overlap of their hidden vectors). Over 128
  seeds at eta = 2^-8 and 2^-10 this is below 7e-4 in 99% of the (seed, mode) pairs and
  at most 1.7e-3 (the strongest mode, in a seed where the second one starts larger and
  grows alongside it); the claim allows 3e-3. Without the projection the deviation is up
  to about 4%, so this claim does tell the two pictures apart.

Data: ``P = D`` whitened inputs, the rows of the ``D x D`` Hadamard matrix (entries
``+-1``, so ``Sigma_xx = H^T H / D = I`` exactly in float32; the ``sqrt(D) e_i`` inputs
are whitened as well but ``sqrt(8)`` is not a float32 number), and targets
``y_i = Sigma_yx x_i``, ``Sigma_yx = U diag(s) V^T`` with seeded Haar-random ``U, V``.
The task stores its arrays in float32, so the ``U, s, V`` used for the initialisation,
the observable and the theory are the float64 SVD of the ``Sigma_yx`` of the stored
(rounded) targets: the simulation and the recursion then see the same problem to float64
precision.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy.linalg import hadamard

import dynamics as td
from experiments.common import Claim

NAME = "saxe"
TITLE = "Saxe, McClelland & Ganguli (2014): exact learning dynamics of deep linear networks"

PRESETS = {
    # t/tau = 2 eta steps = 9 in both presets: enough for the slowest mode (s = 1) of the
    # random-init part (u0_eff ~ 1.5e-5) to pass 99% of s. lr and lr/2 are float32 numbers.
    "quick": dict(dim=8, singular_values=(4.0, 3.0, 2.0, 1.0), width=32, lr=2.0**-8,
                  steps=1152, log_every=4, u0=1e-3, init_std=1e-3, random_seeds=4, seed=0),
    "full": dict(dim=8, singular_values=(4.0, 3.0, 2.0, 1.0), width=32, lr=2.0**-10,
                 steps=4608, log_every=8, u0=1e-3, init_std=1e-3, random_seeds=32, seed=0),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 7.9 s and full: 12.1 s,
# measured on 2 shared cores.
SECONDS = {"quick": 8, "full": 12}

# Tolerances of check(). Those of the discretisation are derived from eta (module doc);
# the float32 ones come from two effects of float32 arithmetic (EPS32 = 2^-23):
# * stagnation: an update smaller than half an ulp of a weight (<= EPS32 |w| / 2) is
#   rounded away, so GD stalls with a residual s - u ~ EPS32 / (4 eta) in the mode strength
#   (a' = a + 2 eta a (s - a^2) stops moving) and off-diagonal entries of the same order
#   (|w| <= |W2| = O(1) here): a floor that grows as eta shrinks, reached at the end of a run;
# * during learning, a few roundings (~EPS32 relative) per step, accumulating as a random
#   walk over the ~ln(s/u0)/(4 eta s) steps of the rise: a few 1e-6 (measured).
EPS32 = float(np.finfo(np.float32).eps)
# Simulation vs recursion: the stagnation floor EPS32/(4 eta s_min) with a factor 4 for
# the learning-phase rounding: EPS32 / (eta_min s_min) (6e-5 quick, 2.4e-4 full; measured
# 3e-6 and 2.6e-5).
DISCRETE_FACTOR = 1.0
# Off-diagonal |(U^T W2 W1 V)_ab| <= EPS32 / (4 eta_min) (the stagnation floor; measured
# 0.03 - 0.05 EPS32/eta, i.e. a factor 5 below).
COUPLING_FACTOR = 0.25
# log2(err(eta)/err(eta/2)) = 1 + O(eta s_max): |order - 1| < 0.1 while eta s_max <= 1/64
# (measured 0.964 at eta s_max = 1/64, 0.991 at 1/256).
ORDER_TOL = 0.1
# Random init vs the discrete recursion from the projected u0_eff (module doc): over 128
# seeds and two step sizes, 99% of (seed, mode) below 7e-4, the largest 1.7e-3.
RANDOM_DISCRETE_TOL = 3e-3


# -- the problem --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Modes:
    """The float64 SVD ``Sigma_yx = U diag(s) V^T`` of the task as stored, and the number
    ``m`` of nonzero modes."""

    U: np.ndarray
    s: np.ndarray
    V: np.ndarray
    m: int


def _haar(rng: np.random.Generator, n: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def make_task(dim: int = 8, singular_values=(4.0, 3.0, 2.0, 1.0), seed: int = 0,
              dtype: str = "float32"):
    """``(task, modes)``: Hadamard inputs, targets ``y = Sigma_yx x`` (module doc).

    ``dtype="float64"`` (for runs under ``jax.enable_x64``) converts the task with
    ``Task.astype`` where the task has it; its values stay those of the float32 task, and
    ``modes`` is computed from the stored arrays either way."""
    sv = np.asarray(singular_values, dtype=np.float64)
    if dim < 1 or dim & (dim - 1):
        raise ValueError(f"dim must be a power of 2 (Hadamard inputs), got {dim}")
    if not (sv.ndim == 1 and 1 <= sv.size <= dim and np.all(sv > 0) and np.all(np.diff(sv) < 0)):
        raise ValueError(
            f"singular_values must be 1 to dim={dim} strictly decreasing positive numbers, "
            f"got {singular_values!r}"
        )
    rng = np.random.default_rng([seed, 2014])
    U, V = _haar(rng, dim), _haar(rng, dim)
    s = np.zeros(dim)
    s[: sv.size] = sv
    sigma = U @ np.diag(s) @ V.T
    x = hadamard(dim).astype(np.float64)
    task = td.tasks.from_arrays(x, x @ sigma.T, name="saxe_whitened")
    if dtype != "float32" and hasattr(task, "astype"):
        task = task.astype(dtype)
    x32 = np.asarray(task.x_train, np.float64)
    y32 = np.asarray(task.y_train, np.float64)
    p = x32.shape[0]
    if not np.array_equal(x32.T @ x32 / p, np.eye(dim)):
        raise AssertionError("Hadamard inputs are not exactly whitened")
    u_, s_, vt_ = np.linalg.svd(y32.T @ x32 / p)
    return task, Modes(U=u_, s=s_, V=vt_.T, m=int(sv.size))


def model(width: int, out_dim: int) -> td.MLP:
    return td.MLP(width=width, depth=1, out_dim=out_dim, activation="linear",
                  parametrization="standard", bias=False, output_scale=1.0, center=False)


def _float_dtype():
    """float64 under ``jax.enable_x64``, float32 otherwise. Float64 parameters make the
    loss, the gradients and the updates float64 (by type promotion if the task's arrays
    are float32); the learning rate is the loop's hyperparameter, in the task's dtype."""
    return jax.dtypes.canonicalize_dtype(np.float64)


def decoupled_init(modes: Modes, width: int, u0: float, seed: int = 0):
    """``init(key, x, hparams)`` for ``W1 = R sqrt(u0) V_m^T``, ``W2 = U_m sqrt(u0) R^T``
    with ``R`` (N x m) seeded, orthonormal columns."""
    if width < modes.m:
        raise ValueError(f"width must be >= the number of modes {modes.m}, got {width}")
    R = _haar(np.random.default_rng([seed, 3]), width)[:, : modes.m]
    a0 = np.sqrt(u0) * np.ones(modes.m)
    w1 = R @ np.diag(a0) @ modes.V[:, : modes.m].T  # W1 (N, D)
    w2 = modes.U[:, : modes.m] @ np.diag(a0) @ R.T  # W2 (K, N)

    def decoupled_balanced_init(key, x, hparams):
        del key, x, hparams
        dt = _float_dtype()
        return ({"w": jnp.asarray(w1.T, dt)}, {"w": jnp.asarray(w2.T, dt)})

    return decoupled_balanced_init


def random_init(width: int, out_dim: int, init_std: float):
    """``init(key, x, hparams)``: i.i.d. ``N(0, init_std^2)`` entries in both layers (the
    small random initialisation of Saxe et al., Sec. 3), drawn from the run's key."""

    def small_gaussian_init(key, x, hparams):
        del hparams
        k1, k2 = jax.random.split(key)
        return ({"w": init_std * jax.random.normal(k1, (x.shape[-1], width), x.dtype)},
                {"w": init_std * jax.random.normal(k2, (width, out_dim), x.dtype)})

    return small_gaussian_init


@dataclasses.dataclass(frozen=True)
class ModeStrengths(td.observables.Observable):
    """``mode_strength``: the diagonal ``(U^T W2 W1 V)_aa`` of the first ``n_modes`` modes;
    ``mode_coupling``: the largest off-diagonal ``|(U^T W2 W1 V)_ab|``. ``U`` and ``V`` are
    nested tuples (hashable: the observable is part of the compiled program's key)."""

    U: tuple = ()
    V: tuple = ()
    n_modes: int = 1

    dims = {"mode_strength": ("mode",)}

    @classmethod
    def of(cls, modes: Modes) -> "ModeStrengths":
        def tup(a):
            return tuple(tuple(float(v) for v in row) for row in a)

        return cls(U=tup(modes.U), V=tup(modes.V), n_modes=modes.m)

    def __call__(self, ctx):
        w0, w1 = ctx.params[0]["w"], ctx.params[1]["w"]  # W1^T (D, N), W2^T (N, K)
        U = jnp.asarray(np.array(self.U), w0.dtype)
        V = jnp.asarray(np.array(self.V), w0.dtype)
        mt = V.T @ (w0 @ w1) @ U  # (U^T W2 W1 V)^T
        off = jnp.abs(mt) * (1 - jnp.eye(*mt.shape, dtype=mt.dtype))
        return {"mode_strength": jnp.diagonal(mt)[: self.n_modes],
                "mode_coupling": jnp.max(off)}


# -- theory (float64 numpy) -----------------------------------------------------------------


def continuous_solution(s, u0, t_over_tau):
    """(**): ``u = s / (1 + (s/u0 - 1) e^{-2 s t/tau})``; ``s`` and ``u0`` (shape
    ``(..., modes)``) broadcast against a trailing time axis."""
    s = np.asarray(s, np.float64)[..., None]
    u0 = np.asarray(u0, np.float64)[..., None]
    return s / (1.0 + (s / u0 - 1.0) * np.exp(-2.0 * s * np.asarray(t_over_tau, np.float64)))


def discrete_recursion(s, u0, lr, steps: int, log_every: int):
    """The GD map (*) of each mode's ``(a, b)`` pair from ``a = b = sqrt(u0)``, in float64;
    ``u = a b`` at steps ``0, log_every, ..., steps``, shape ``(modes, steps/log_every+1)``."""
    s = np.asarray(s, np.float64)
    a = np.sqrt(np.asarray(u0, np.float64)) * np.ones_like(s)
    b = a.copy()
    out = [a * b]
    for k in range(1, steps + 1):
        r = s - a * b
        a, b = a + 2.0 * lr * b * r, b + 2.0 * lr * a * r
        if k % log_every == 0:
            out.append(a * b)
    return np.stack(out, axis=-1)


def _phi(z):
    return 3.0 * np.logaddexp(0.0, z) - z


def first_order_error(s, u0, lr, t_over_tau):
    """First-order prediction of ``u_disc / u - 1`` (module doc):
    ``eta s (1 - u/s) [Phi(z) - Phi(z0)]`` along ``z = z0 + 2 s t/tau``."""
    s = np.asarray(s, np.float64)[..., None]
    z0 = np.log(u0) - np.log(s - u0)
    z = z0 + 2.0 * s * np.asarray(t_over_tau, np.float64)
    return lr * s * (_phi(z) - _phi(z0)) / (1.0 + np.exp(z))


def error_bound(s_max, u0, lr):
    """``eta s_max ln(s_max/u0)``: the bound on the relative error of (*) vs (**)."""
    return lr * s_max * math.log(s_max / u0)


def half_times(steps, u, s):
    """First crossing of ``s/2`` by each series ``u[..., :]`` (linear interpolation between
    log points at ``steps``); NaN where never reached. ``s`` broadcasts against
    ``u[..., 0]``."""
    u = np.asarray(u, np.float64)
    half = np.broadcast_to(np.asarray(s, np.float64) / 2.0, u.shape[:-1])
    out = np.full(u.shape[:-1], np.nan)
    for idx in np.ndindex(u.shape[:-1]):
        series, h = u[idx], half[idx]
        above = np.nonzero(series >= h)[0]
        if above.size == 0:
            continue
        j = above[0]
        if j == 0:
            out[idx] = steps[0]
            continue
        f = (h - series[j - 1]) / (series[j] - series[j - 1])
        out[idx] = steps[j - 1] + f * (steps[j] - steps[j - 1])
    return out


def theory_half_time(s, u0, lr):
    """``t_half = (tau / (2 s)) ln(s/u0 - 1)`` in steps, ``tau = 1/(2 eta)``."""
    s = np.asarray(s, np.float64)
    return np.log(s / np.asarray(u0, np.float64) - 1.0) / (4.0 * lr * s)


def discrete_half_time(s, u0, lr, max_steps: int):
    """Half time (steps, interpolated) of the balanced GD map ``u' = u (1 + 2 eta (s-u))^2``
    from ``u0``; ``s`` broadcasts against ``u0``; NaN if not reached in ``max_steps``."""
    u0 = np.asarray(u0, np.float64)
    s = np.broadcast_to(np.asarray(s, np.float64), u0.shape)
    u = u0.copy()
    out = np.where(u0 >= s / 2, 0.0, np.nan)
    for k in range(1, max_steps + 1):
        new = u * (1.0 + 2.0 * lr * (s - u)) ** 2
        hit = np.isnan(out) & (new >= s / 2)
        out[hit] = k - 1 + (s[hit] / 2 - u[hit]) / (new[hit] - u[hit])
        u = new
        if not np.isnan(out).any():
            break
    return out


def projected_u0(a0, b0, s):
    """``u0_eff = |P c+|^2`` per mode (module doc): ``c+ = (a0 + b0)/2`` (shape
    ``(..., modes, N)``) made orthogonal, by Gram-Schmidt in order of decreasing ``s``,
    to the ``c+`` of the stronger modes."""
    c = (np.asarray(a0, np.float64) + np.asarray(b0, np.float64)) / 2.0
    out = np.empty(c.shape[:-1])
    for idx in np.ndindex(c.shape[:-2]):
        basis = []
        for a in np.argsort(-np.asarray(s)):
            v = c[idx][a].copy()
            for q in basis:
                v -= (q @ v) * q
            out[idx + (a,)] = v @ v
            basis.append(v / np.linalg.norm(v))
    return out


# -- simulations ----------------------------------------------------------------------------


def _spec(task, modes, width, steps, log_every, init):
    return td.Spec(model(width, task.out_dim), task, td.optimizers.sgd(), steps=steps,
                   log_every=log_every, init=init, observables=(ModeStrengths.of(modes),))


def simulate_decoupled(task, modes, *, width, u0, lr, steps, log_every, seed=0):
    """Mode strengths ``(mode, log)`` and coupling ``(log,)`` of the decoupled run."""
    spec = _spec(task, modes, width, steps, log_every, decoupled_init(modes, width, u0, seed))
    ds = td.run(spec, seed=0, lr=lr)
    if int(ds["diverged_at"]) >= 0:
        raise RuntimeError(f"decoupled run diverged at step {int(ds['diverged_at'])}")
    return ds["mode_strength"].transpose("mode", "step").values, ds["mode_coupling"].values


def simulate_random(task, modes, *, width, init_std, lr, steps, log_every, seeds):
    """The small-random-init runs ``seed = 0..seeds-1`` (one vmapped program): a dict of
    mode strengths ``(seed, mode, log)``, coupling ``(seed, log)``, the initial ``a0 = W1 v``
    and ``b0 = W2^T u`` ``(seed, mode, N)`` and ``diverged_at``."""
    init = random_init(width, task.out_dim, init_std)
    spec = _spec(task, modes, width, steps, log_every, init)
    ds, states = td.sweep(spec, seed=list(range(seeds)), lr=lr, return_state=True)
    p0 = states[()].params0  # leaves (seed, lr, ...)
    w1t = np.asarray(p0[0]["w"], np.float64)
    w2t = np.asarray(p0[1]["w"], np.float64)
    w1t, w2t = (w.reshape((seeds,) + w.shape[-2:]) for w in (w1t, w2t))
    m = modes.m
    return {
        "u": ds["mode_strength"].transpose("seed", "mode", "step").values.reshape(seeds, m, -1),
        "coupling": ds["mode_coupling"].transpose("seed", "step").values.reshape(seeds, -1),
        "a0": np.einsum("zdn,da->zan", w1t, modes.V[:, :m]),  # W1 v_a
        "b0": np.einsum("znk,ka->zan", w2t, modes.U[:, :m]),  # W2^T u_a
        "diverged_at": np.asarray(ds["diverged_at"]).reshape(seeds),
    }


# -- the experiment -----------------------------------------------------------------------


def run(dim=8, singular_values=(4.0, 3.0, 2.0, 1.0), width=32, lr=2.0**-8, steps=1152,
        log_every=4, u0=1e-3, init_std=1e-3, random_seeds=4, seed=0) -> xr.Dataset:
    if float(np.float32(lr)) != lr or float(np.float32(lr / 2)) != lr / 2:
        # The loop's hyperparameters are float32 (the dtype of the task's arrays); the
        # recursion must use the same step.
        raise ValueError(f"lr and lr/2 must be float32 numbers (e.g. 2**-8), got {lr!r}")
    task, modes = make_task(dim, singular_values, seed)
    s = modes.s[: modes.m]
    step = np.arange(steps // log_every + 1) * log_every
    t_over_tau = 2.0 * lr * step

    sim, coupling = simulate_decoupled(task, modes, width=width, u0=u0, lr=lr, steps=steps,
                                       log_every=log_every, seed=seed)
    sim_half, coupling_half = simulate_decoupled(task, modes, width=width, u0=u0, lr=lr / 2,
                                                 steps=2 * steps, log_every=2 * log_every,
                                                 seed=seed)
    rnd = simulate_random(task, modes, width=width, init_std=init_std, lr=lr, steps=steps,
                          log_every=log_every, seeds=random_seeds)
    u0_eff = projected_u0(rnd["a0"], rnd["b0"], s)
    u0_unprojected = np.sum((rnd["a0"] + rnd["b0"]) ** 2, axis=-1) / 4.0

    mode_step = ("mode", "step")
    seed_mode = ("seed", "mode")
    ds = xr.Dataset(
        {
            "mode_strength": (mode_step, sim),
            "theory_mode_strength": (mode_step, continuous_solution(s, u0, t_over_tau)),
            "discrete_mode_strength": (mode_step,
                                       discrete_recursion(s, u0, lr, steps, log_every)),
            "first_order_error": (mode_step, first_order_error(s, u0, lr, t_over_tau)),
            "mode_coupling": (("step",), coupling),
            "mode_strength_half_lr": (mode_step, sim_half),
            "discrete_mode_strength_half_lr": (
                mode_step, discrete_recursion(s, u0, lr / 2, 2 * steps, 2 * log_every)),
            "mode_coupling_half_lr": (("step",), coupling_half),
            "random_mode_strength": (("seed", "mode", "step"), rnd["u"]),
            "random_mode_coupling": (("seed", "step"), rnd["coupling"]),
            "random_u0_eff": (seed_mode, u0_eff),
            "random_u0_unprojected": (seed_mode, u0_unprojected),
            "random_u0_diag": (seed_mode, np.sum(rnd["a0"] * rnd["b0"], axis=-1)),
            "random_theory_mode_strength": (("seed", "mode", "step"),
                                            continuous_solution(s, u0_eff, t_over_tau)),
            "random_t_half": (seed_mode, half_times(step, rnd["u"], s)),
            "random_t_half_theory": (seed_mode, theory_half_time(s, u0_eff, lr)),
            "random_t_half_discrete": (seed_mode,
                                       discrete_half_time(s, u0_eff, lr, 4 * steps)),
            "random_t_half_theory_unprojected": (seed_mode,
                                                 theory_half_time(s, u0_unprojected, lr)),
            "random_diverged_at": (("seed",), rnd["diverged_at"].astype(np.int64)),
        },
        coords={
            "mode": np.arange(modes.m),
            "step": step,
            "seed": np.arange(random_seeds),
            "singular_value": (("mode",), s),
            "t_over_tau": (("step",), t_over_tau),
        },
    )
    ds.attrs.update(
        lr=lr, u0=u0, init_std=init_std, width=width, dim=dim, steps=steps,
        log_every=log_every, task_seed=seed,
        half_lr_note="*_half_lr: the same decoupled run at lr/2 with 2x the steps, logged "
                     "at the same t/tau (its own step = 2 * step)",
        config=_spec(task, modes, width, steps, log_every, None).config_json(),
    )
    return ds


def _max_rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) / np.asarray(b) - 1.0)))


def check(ds: xr.Dataset) -> list[Claim]:
    lr, u0 = float(ds.attrs["lr"]), float(ds.attrs["u0"])
    s = ds["singular_value"].values
    s_max = float(s.max())
    theory = ds["theory_mode_strength"]
    err = _max_rel(ds["mode_strength"], theory)
    err_half = _max_rel(ds["mode_strength_half_lr"], theory)
    discrete = max(_max_rel(ds["mode_strength"], ds["discrete_mode_strength"]),
                   _max_rel(ds["mode_strength_half_lr"], ds["discrete_mode_strength_half_lr"]))
    coupling = float(max(ds["mode_coupling"].max(), ds["mode_coupling_half_lr"].max()))
    lr_min = lr / 2  # the decoupled runs are at lr and lr/2

    t_sim = ds["random_t_half"].values  # (seed, mode), NaN if never reached
    t_sorted = t_sim[:, np.argsort(-s)]  # strongest mode first
    pairs = [(i, j) for i in range(len(s)) for j in range(i + 1, len(s))]
    ordered = np.mean([t_sorted[:, i] < t_sorted[:, j] for i, j in pairs])
    finite_runs = bool(np.all(ds["random_diverged_at"].values < 0))
    half_err = _max_rel(t_sim, ds["random_t_half_theory"]) if finite_runs else math.nan
    half_disc = _max_rel(t_sim, ds["random_t_half_discrete"]) if finite_runs else math.nan

    return [
        Claim("decoupled_vs_continuous_max_rel_error", err, error_bound(s_max, u0, lr), "<=",
              description="max over modes and log points of |u_sim/u(t) - 1| against the "
                          "continuous solution (**) from the decoupled balanced init; bound "
                          "eta s_max ln(s_max/u0) on the Euler error (module doc)"),
        Claim("decoupled_vs_discrete_max_rel_error", discrete,
              DISCRETE_FACTOR * EPS32 / (lr_min * float(s.min())), "<=",
              description="float32 simulation vs the float64 GD recursion (*) of each mode, "
                          "at lr and lr/2: equal up to float32 rounding; bound "
                          "EPS32/(eta_min s_min) from the float32 stagnation floor"),
        Claim("decoupled_max_mode_coupling", coupling, COUPLING_FACTOR * EPS32 / lr_min, "<=",
              description="largest off-diagonal |(U^T W2 W1 V)_ab| over both decoupled runs "
                          "(0 in exact arithmetic); bound EPS32/(4 eta_min), the float32 "
                          "stagnation floor"),
        Claim("discretisation_error_order", math.log2(err / err_half), 1.0, "within",
              tolerance=ORDER_TOL,
              description="log2 of the max relative error vs (**) at lr over that at lr/2, "
                          "at the same t/tau: 1 for the first-order Euler error"),
        Claim("random_init_learning_order", float(ordered), 1.0, ">=",
              description="small random init: fraction of (seed, mode pair) in which the "
                          "stronger mode reaches s/2 first"),
        Claim("random_init_half_time_vs_formula", half_err,
              lr * s_max + RANDOM_DISCRETE_TOL, "<=",
              description="small random init: max |t_half_sim / t_half - 1|, t_half = "
                          "ln(s/u0_eff - 1)/(4 eta s) with the projected u0_eff; bound "
                          "eta s_max on the Euler delay plus the allowance for the "
                          "decoupling transients of the next claim"),
        Claim("random_init_half_time_vs_recursion", half_disc, RANDOM_DISCRETE_TOL, "<=",
              description="small random init: max |t_half_sim / t_half_disc - 1| against the "
                          "balanced GD recursion from the projected u0_eff"),
    ]


def plot(ds: xr.Dataset, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lr = float(ds.attrs["lr"])
    step = ds["step"].values
    s = ds["singular_value"].values
    every = max(1, len(step) // 48)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    panels = [
        (axes[0], ds["mode_strength"].values, ds["theory_mode_strength"].values, None,
         f"(a) decoupled balanced init, u0 = {float(ds.attrs['u0']):g}"),
        (axes[1], ds["random_mode_strength"].values[0],
         ds["random_theory_mode_strength"].values[0], ds["random_t_half"].values[0],
         f"(b) small random init (std {float(ds.attrs['init_std']):g}, width "
         f"{int(ds.attrs['width'])}, seed 0); theory from the projected u0_eff"),
    ]
    for ax, sim, th, t_half, title in panels:
        for a in range(len(s)):
            c = colors[a % len(colors)]
            ax.plot(step, th[a], "-", color=c, lw=1.5, label=f"theory, s = {s[a]:.3g}")
            ax.plot(step[::every], sim[a, ::every], "o", color=c, ms=4, mfc="none",
                    label=f"simulation, s = {s[a]:.3g}")
            if t_half is not None:
                ax.axvline(t_half[a], color=c, ls=":", lw=0.8)
        ax.set_title(title, fontsize=10)
        exponent = math.log2(lr)
        eta = f"2^{int(exponent)}" if exponent == int(exponent) else f"{lr:g}"
        ax.set_xlabel(f"optimizer step k   (eta = {eta}, t/tau = 2 eta k)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mode strength u_a = (U^T W2 W1 V)_aa")
    axes[0].legend(fontsize=7, ncol=2, loc="center right")
    axes[1].text(0.98, 0.03, "dotted: simulated half times", transform=axes[1].transAxes,
                 ha="right", fontsize=8)
    fig.suptitle("Saxe et al. (2014), linear network with one hidden layer, full-batch GD: "
                 "markers simulation, lines u(t) = s e^{2st/tau} / (e^{2st/tau} - 1 + s/u0), "
                 "tau = 1/(2 eta)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
