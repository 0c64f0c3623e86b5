"""``solve``: pick a DMFT solver, run it, return a Dataset laid over the simulator's.

Solvers (``kernels.dmft`` has the equations): ``"two_layer"`` (``L = 1``, sampled processes
integrated forward), ``"deep_linear"`` (closed form, identity activation),
``"monte_carlo"`` (alternating, any depth and activation); ``"auto"`` picks
``deep_linear`` for the identity, ``two_layer`` for one hidden layer and
``monte_carlo`` otherwise. ``gamma0 = 0`` is the lazy limit: static kernels and NTK
dynamics (``kernels.predict``'s), whatever the solver.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dynamics.checks import check_float
from kernels.dmft import deep, two_layer
from kernels.dmft.common import to_dataset
from kernels.dmft.problem import make_problem

SOLVERS = ("auto", "two_layer", "deep_linear", "monte_carlo")

# The default ``tol`` (``tol=None``) of the iterative solvers. ``deep_linear`` has no
# sampling error: ``EXACT_TOL``. ``monte_carlo``'s fixed point carries a sampling error of
# order ``S^{-1/2}``, so iterating far below it buys nothing: ``MC_TOL_FRACTION S^{-1/2}``.
# Measured (depth-3 tanh, P = 6, lr = 0.3; what is left to the fixed point, against
# ``tol = 1e-11`` with the same noise, over the gap to another noise seed, the largest of
# the loss, feature kernel and NTK): 0.97% at T = 12, S = 400 and 0.30% at T = 20,
# S = 1000, where the sampling gaps themselves were 0.6% (loss) to 8% (kernels) of their
# scale (``tests/test_dmft.py``).
EXACT_TOL = 1e-6
MC_TOL_FRACTION = 1e-2


def default_tol(solver: str, samples: int) -> float:
    """The ``tol`` of ``solve`` when none is given (the comment above says why)."""
    if solver == "monte_carlo":
        return max(EXACT_TOL, MC_TOL_FRACTION / float(np.sqrt(samples)))
    return EXACT_TOL


def _pick(solver, problem):
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    if solver == "auto":
        if problem.activation == "linear":
            return "deep_linear"
        return "two_layer" if problem.depth == 1 else "monte_carlo"
    if solver == "two_layer" and problem.depth != 1:
        raise ValueError(f"solver='two_layer' needs depth=1, got depth={problem.depth}")
    if solver == "deep_linear" and problem.activation != "linear":
        raise ValueError("solver='deep_linear' needs activation='linear', got "
                         f"{problem.activation!r}")
    return solver


def _rel_gap(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))


def solve(model, x_train, y_train, *, lr: float, steps: int, log_every: int = 1,
          x_test=None, y_test=None, method: str = "gd", substeps: int | None = None,
          hparams: Mapping | None = None, solver: str = "auto", samples: int = 4096,
          seed: int = 0, damping: float = 1.0, tol: float | None = None,
          max_iter: int = 1000,
          warm_start=None, return_state: bool = False, batch: int = 16,
          window: int = 4, mc_error: bool = True, dtype: str = "float64",
          progress: bool = False):
    """The infinite-width limit of ``model`` (a ``dynamics.MLP`` with ``"mup"``, no bias,
    one output) trained from ``(x_train, y_train)`` by full-batch GD with learning rate
    ``lr`` for ``steps`` steps (``method="gd"``), or by gradient flow to ``t = lr * steps``
    (``method="flow"``, ``substeps`` GD steps of ``lr/substeps`` per step; default 8).

    Returns an ``xarray.Dataset`` on ``step = 0, log_every, ..., steps`` (see
    ``kernels.dmft``), with attrs ``solver``, ``iterations`` (and ``window_iterations``,
    per window of the causal continuation), ``converged``, ``change`` and
    the Monte Carlo error estimates ``mc_error_loss`` / ``mc_error_feature_kernel`` (the
    largest relative gap to the solution with half the samples; 0 for the closed form).
    That estimate has the order of the error, not a bound: for a depth-4 tanh network at
    ``S = 1024`` re-solving with other noise seeds scattered the loss by about twice the
    estimate, and the sampled kernels of deep layers carry 5-10% error at step 0 (errors
    grow with depth). Average solves over ``seed`` or raise ``samples`` (``S^{-1/2}``)
    where that matters.
    With ``return_state``, also the internal state (two-time order parameters), which a
    later call accepts as ``warm_start`` (same problem shape, e.g. a smaller ``gamma0``).
    ``samples`` (``S``), ``seed``, ``damping``, ``tol``, ``max_iter``, ``batch`` (samples
    per vectorised chunk of the Jacobians) and ``window`` (GD steps added per stage of the
    causal continuation in time, each stage solved on the grid of its own horizon,
    ``kernels.dmft.deep.run``) tune the iterative solvers.
    Undamped iteration (``damping=1``) converges within each window of a few steps; lower
    ``damping`` or ``window`` if it does not. ``tol`` (the largest relative change of the
    last iteration) defaults to ``1e-6`` for ``deep_linear`` and to ``1e-2 S^{-1/2}`` (at
    least ``1e-6``) for ``monte_carlo``, a few percent of its sampling error
    (``default_tol``).
    """
    if substeps is None:
        substeps = 8 if method == "flow" else 1
    problem = make_problem(model, x_train, y_train, lr=lr, steps=steps, log_every=log_every,
                           x_test=x_test, y_test=y_test, method=method, substeps=substeps,
                           hparams=hparams)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    for name, v, low in (("samples", samples, 2), ("max_iter", max_iter, 1),
                         ("batch", batch, 1), ("seed", seed, 0), ("window", window, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping!r}")
    if tol is not None:
        tol = check_float("tol", tol, 0.0, low_open=True)
    chosen = _pick(solver, problem)
    if tol is None:
        tol = default_tol(chosen, samples)
    with jax.enable_x64(dtype == "float64"):
        jdt = jnp.float64 if dtype == "float64" else jnp.float32
        start = time.perf_counter()
        info = {"iterations": 0, "converged": True, "change": 0.0, "history": []}
        errors = {"mc_error_loss": 0.0, "mc_error_feature_kernel": 0.0}
        state = None
        if problem.gamma == 0:
            chosen = "lazy"
            state = deep.initial_state(problem, jdt)
            f = state["f"]
            phi_t, g_t = deep.equal_time(state, problem)
        elif chosen == "two_layer":
            key = jax.random.PRNGKey(seed)
            (f, phi_t, g_t), halved = two_layer.solve_two_layer(problem, samples, key,
                                                                 half=mc_error)
            if mc_error:
                errors = _errors(problem, f, phi_t, halved[0], halved[1])
        else:
            if warm_start is not None:
                state = _check_warm(warm_start, problem, jdt)
            else:
                state = deep.initial_state(problem, jdt)
            noise = None
            if chosen == "monte_carlo":
                noise = deep.make_noise(jax.random.PRNGKey(seed), problem, samples, jdt)
            report = (lambda i, c: print(f"dmft iteration {i}: change {c:.3e}")) \
                if progress else None
            kw = dict(solver=chosen, dtype=jdt, damping=damping, tol=tol, max_iter=max_iter,
                      batch=batch,
                      windows=int(np.ceil((problem.steps + 1) / window)))
            state, info = deep.run(problem, state, noise, progress=report, **kw)
            f = state["f"]
            phi_t, g_t = deep.equal_time(state, problem)
            if chosen == "monte_carlo" and mc_error:
                half, _ = deep.run(problem, state, deep.half_noise(noise),
                                   **{**kw, "windows": 1})
                phi_h, _ = deep.equal_time(half, problem)
                errors = _errors(problem, f, phi_t, half["f"], phi_h)
        seconds = time.perf_counter() - start
        attrs = {"solver": chosen, "samples": int(samples) if chosen in
                 ("two_layer", "monte_carlo") else 0,
                 "iterations": int(info["iterations"]), "converged": int(info["converged"]),
                 "change": float(info["change"]),
                 "change_history": json.dumps([float(c) for c in info["history"]]),
                 "window_iterations": json.dumps([int(i) for i in
                                                  info.get("window_iterations", [])]),
                 "seconds": round(seconds, 3), **errors}
        if chosen in ("deep_linear", "monte_carlo") and not info["converged"]:
            warnings.warn(f"DMFT ({chosen}) did not converge in {info['iterations']} "
                          f"iterations: last relative change {info['change']:.3g} > tol="
                          f"{tol:g}; raise max_iter, lower damping or warm-start from a "
                          "smaller gamma0", RuntimeWarning, stacklevel=2)
        ds = to_dataset(problem, f, phi_t, g_t, attrs=attrs)
        if return_state:
            host = None if state is None else jax.tree_util.tree_map(np.asarray, state)
            return ds, host
        return ds


def _errors(problem, f, phi, f_half, phi_half):
    tr = slice(0, problem.n_train)
    y = problem.y[None]
    loss = np.mean((np.asarray(f)[:, tr] - y) ** 2, 1)
    loss_h = np.mean((np.asarray(f_half)[:, tr] - y) ** 2, 1)
    return {"mc_error_loss": _rel_gap(loss, loss_h),
            "mc_error_feature_kernel": _rel_gap(np.asarray(phi)[-1], np.asarray(phi_half)[-1])}


def _check_warm(state, problem, dtype):
    ng = (problem.steps + 1) * problem.n
    want = {"phi": (problem.depth, ng, ng), "f": (problem.steps + 1, problem.n)}
    if not isinstance(state, dict) or any(
            np.shape(state.get(k)) != s for k, s in want.items()):
        raise ValueError("warm_start must be the state returned by solve(..., "
                         "return_state=True) for a problem of the same depth, steps and "
                         "examples")
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), state)


def solve_spec(spec, hparams: Mapping | None = None, **kwargs):
    """``solve`` for a ``dynamics.Spec`` (full-batch ``sgd`` on the MSE, an ``MLP`` with
    ``"mup"``): the same learning rate (``scale_lr_by_output_scale`` included), steps,
    log points and train/test data, so that the Dataset lines up with
    ``dynamics.sweep(spec, ...)``."""
    from kernels.predict import check_spec

    c = check_spec(spec, hparams)
    task = spec.task
    return solve(spec.model, np.asarray(task.x_train, np.float64), c["y_train"],
                 lr=c["lr"], steps=spec.steps, log_every=spec.log_every,
                 x_test=np.asarray(task.x_test, np.float64),
                 y_test=np.asarray(task.y_test, np.float64), hparams=c["hparams"], **kwargs)
