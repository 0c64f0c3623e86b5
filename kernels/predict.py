r"""Kernel-regression dynamics in function space, in the simulator's normalisation.

With the MSE of ``dynamics.losses`` (``L = (1/P) sum_i ||f_i - y_i||^2``) a network that
stays linear in its parameters (the NTK regime; Jacot, Gabriel & Hongler 2018, Thm 2;
Lee et al. 2019, eq. 8-9) has training residual ``r = f(X) - Y`` obeying

.. math::

    \text{gradient flow:}\quad \frac{dr}{dt} = -\frac{2}{P} \Theta\, r,\quad t = lr\cdot step;
    \qquad \text{GD:}\quad r_{s+1} = \Big(I - \frac{2\,lr}{P}\Theta\Big) r_s,

with ``Theta`` the (learning-rate-weighted) NTK on the training set. With
``Theta = V diag(lambda) V^T`` and ``eta = 2 lr / P``, every eigen-direction decays on
its own: ``d_s(lambda) = exp(-eta lambda s)`` (flow) or ``(1 - eta lambda)^s`` (GD), so

.. math::

    r_s = V\,\mathrm{diag}(d_s)\,V^\top r_0, \qquad
    f_s(x) = f_0(x) - \Theta(x, X)\, V\,\mathrm{diag}\Big(\frac{1 - d_s}{\lambda}\Big)
             V^\top r_0

(Lee et al. 2019, eq. 9 and its discrete-time form, their Sec. 2.3; ``(1 - d)/lambda ->
eta s`` as ``lambda -> 0``). With an NNGP ``K`` the initial function is a Gaussian
process ``f_0 ~ GP(0, K)`` and, writing ``A_s(x) = Theta(x, X) V diag((1 - d_s)/lambda)
V^T``, the infinite ensemble at step ``s`` is Gaussian with (Lee et al. 2019, eq. 15-16)

.. math::

    \mu_s(x) = A_s(x)\, Y, \qquad
    \Sigma_s(x, x') = K(x, x') - A_s(x) K(X, x') - K(x, X) A_s(x')^\top
                      + A_s(x) K(X, X) A_s(x')^\top,

and its expected loss is ``(1/P) sum_i (||mu_i - y_i||^2 + O Sigma_ii)`` (``O`` outputs,
independent and alike). A kernel of shape ``(n, n)`` acts on every output alike; a full
output block ``(n1, n2, O, O)`` (``empirical_ntk(..., trace=False)``) couples them.

Results are ``xarray.Dataset``s with the ``step`` coordinate and variable names of
``dynamics.sweep`` (``train_loss``, ``test_loss``) plus ``train_outputs`` /
``test_outputs`` (dims ``step, train_example|test_example, output``) and, for the
ensemble, ``train_output_variance`` / ``test_output_variance``. The linear algebra runs in
float64 NumPy on the host (kernels are ``P x P``; this is not inside a training loop).
``predict_infinite`` builds everything from a ``dynamics.Spec`` (infinite-width NNGP and
NTK of its MLP); ``kernels.linearize.predict_linearized`` does the same for the
finite-width linearised network.
"""

from __future__ import annotations

import json
from typing import Mapping

import numpy as np
import xarray as xr

METHODS = ("gd", "flow")


def _as_matrix(k, name, n_out):
    """``(n1, n2)`` or ``(n1, n2, O, O)`` -> a matrix on flattened ``(example, output)``
    pairs and whether it is per-output (``(n1, n2)``)."""
    k = np.asarray(k, np.float64)
    if k.ndim == 2:
        return k, True
    if k.ndim == 4 and k.shape[2] == k.shape[3] == n_out:
        n1, n2 = k.shape[:2]
        return k.transpose(0, 2, 1, 3).reshape(n1 * n_out, n2 * n_out), False
    raise ValueError(f"{name} must have shape (n1, n2) or (n1, n2, {n_out}, {n_out}), "
                     f"got {k.shape}")


def _steps(steps):
    s = np.atleast_1d(np.asarray(steps))
    if s.ndim != 1 or s.size == 0 or not np.issubdtype(s.dtype, np.integer) or (s < 0).any():
        raise ValueError(f"steps must be a non-empty 1-D sequence of ints >= 0, got {steps!r}")
    return s.astype(np.int64)


def _decay(eta_lam, s, method):
    """``d_s`` and ``(1 - d_s)`` for every step (rows) and eigenvalue (columns)."""
    s = s[:, None].astype(np.float64)
    x = eta_lam[None, :]
    if method == "flow":
        one_minus = -np.expm1(-x * s)
    else:
        stable = x < 1  # 0 < d < 1 for 0 <= eta lambda < 1: expm1/log1p keep small rates exact
        log = np.log1p(-np.where(stable, x, 0.0))
        one_minus = np.where(stable, -np.expm1(s * log), 1 - (1 - x) ** s)
    return 1 - one_minus, one_minus


def _gain(lam, eta, s, one_minus):
    """``(1 - d_s) / lambda``, with its limit ``eta s`` for ``lambda -> 0``."""
    small = np.abs(eta * lam) < 1e-13
    safe = np.where(small, 1.0, lam)
    return np.where(small[None, :], eta * s[:, None].astype(np.float64), one_minus / safe)


def predict(
    ntk_train,
    y_train,
    *,
    lr: float,
    steps,
    method: str = "gd",
    ntk_test_train=None,
    y_test=None,
    f0_train=None,
    f0_test=None,
    nngp_train=None,
    nngp_test_train=None,
    nngp_test=None,
) -> xr.Dataset:
    """Train (and test) predictions and losses at ``steps`` (see the module doc).

    * ``ntk_train (P, P)`` or ``(P, P, O, O)``; ``y_train (P, O)`` (or ``(P,)``);
    * ``ntk_test_train (Q, P[, O, O])`` and ``y_test`` for test predictions;
    * ``f0_train``, ``f0_test``: the outputs at initialisation (zero if ``None``);
    * ``nngp_train``, ``nngp_test_train``, ``nngp_test`` (``(P, P)``, ``(Q, P)``,
      ``(Q, Q)`` or its diagonal ``(Q,)``): the infinite ensemble of Lee et al. (2019),
      ``f_0 ~ GP(0, K)`` (``f0_*`` must then be ``None``);
    * ``method``: ``"gd"`` (gradient descent with learning rate ``lr``) or ``"flow"``
      (gradient flow at ``t = lr * step``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if not (np.isscalar(lr) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    s = _steps(steps)
    y = np.asarray(y_train, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    p, o = y.shape
    k, shared = _as_matrix(ntk_train, "ntk_train", o)
    if k.shape[0] != (p if shared else p * o) or k.shape[0] != k.shape[1]:
        raise ValueError(f"ntk_train must be ({p}, {p}) or ({p}, {p}, {o}, {o}) for "
                         f"{p} training examples, got {np.shape(ntk_train)}")
    ensemble = nngp_train is not None
    if ensemble and (f0_train is not None or f0_test is not None):
        raise ValueError("f0_train/f0_test must be None with an NNGP (the initial function "
                         "of the ensemble is the Gaussian process f_0 ~ GP(0, K))")
    test = ntk_test_train is not None

    def flat(a):  # (n, O) -> vector matching the kernel's layout
        return a if shared else a.reshape(-1)

    def unflat(a, n):  # (..., n[*O]) -> (..., n, O)
        return a if shared else a.reshape(a.shape[:-1] + (n, o))

    f0 = np.zeros_like(y) if f0_train is None else np.asarray(f0_train, np.float64).reshape(p, o)
    eta = 2.0 * lr / p
    lam, v = np.linalg.eigh((k + k.T) / 2)
    _, one_minus = _decay(eta * lam, s, method)
    gain = _gain(lam, eta, s, one_minus)  # (S, n_eig)

    # A_s(X) = V diag(lambda * gain) V^T on the training set; train outputs.
    r0 = flat(f0 - y)
    vr0 = v.T @ r0  # (n_eig[, O])

    def apply_a(kx_v, rhs_v):
        """``A_s rhs`` for every step, given ``kx_v = K(x, X) V`` and ``rhs_v = V^T rhs``."""
        if shared:
            return np.einsum("qe,se,eo->sqo", kx_v, gain, rhs_v)
        return np.einsum("qe,se,e->sq", kx_v, gain, rhs_v)

    kv = k @ v
    train = f0[None] - unflat(apply_a(kv, vr0), p) if not ensemble else None
    if ensemble:
        vy = v.T @ flat(y)
        train = unflat(apply_a(kv, vy), p)
    data = {"train_outputs": (("step", "train_example", "output"), train)}
    loss = np.sum((train - y[None]) ** 2, axis=(1, 2)) / p
    if ensemble:
        kn, kn_shared = _as_matrix(nngp_train, "nngp_train", o)
        if not kn_shared or not shared:
            raise ValueError("the ensemble takes per-output kernels of shape (n1, n2)")
        var_train = _ensemble_variance(kv, gain, v, kn, kn, np.diag(kn))
        data["train_output_variance"] = (("step", "train_example"), var_train)
        loss = loss + o * var_train.sum(axis=1) / p
    data["train_loss"] = (("step",), loss)

    if test:
        kt, t_shared = _as_matrix(ntk_test_train, "ntk_test_train", o)
        if t_shared != shared or kt.shape[1] != k.shape[0]:
            raise ValueError(f"ntk_test_train must have shape (Q, {p}) like ntk_train's "
                             f"layout, got {np.shape(ntk_test_train)}")
        q = kt.shape[0] if shared else kt.shape[0] // o
        ktv = kt @ v
        if ensemble:
            out = unflat(apply_a(ktv, vy), q)
        else:
            g0 = np.zeros((q, o)) if f0_test is None else np.asarray(f0_test, np.float64).reshape(q, o)
            out = g0[None] - unflat(apply_a(ktv, vr0), q)
        data["test_outputs"] = (("step", "test_example", "output"), out)
        if ensemble:
            if nngp_test_train is None or nngp_test is None:
                raise ValueError("the ensemble's test predictions need nngp_test_train (Q, P) "
                                 "and nngp_test (Q, Q) or its diagonal (Q,)")
            knt = np.asarray(nngp_test_train, np.float64)
            kdiag = np.asarray(nngp_test, np.float64)
            kdiag = np.diag(kdiag) if kdiag.ndim == 2 else kdiag
            var_test = _ensemble_variance(ktv, gain, v, knt, kn, kdiag)
            data["test_output_variance"] = (("step", "test_example"), var_test)
        if y_test is not None:
            yt = np.asarray(y_test, np.float64)
            yt = yt[:, None] if yt.ndim == 1 else yt
            tl = np.sum((out - yt[None]) ** 2, axis=(1, 2)) / q
            if ensemble:
                tl = tl + o * var_test.sum(axis=1) / q
            data["test_loss"] = (("step",), tl)

    ds = xr.Dataset(data, coords={"step": s, "output": np.arange(o)})
    ds.attrs = {"predictor": "kernel regression", "method": method, "lr": float(lr),
                "ensemble": int(ensemble),
                "normalisation": json.dumps("L = (1/P) sum ||f - y||^2; eta = 2 lr / P")}
    return ds


def _ensemble_variance(kx_v, gain, v, k_x_train, k_train, k_diag):
    """``diag Sigma_s`` of Lee et al. (2019), eq. 16, for every step: ``K(x, x) - 2 A_s(x)
    K(X, x) + A_s(x) K(X, X) A_s(x)^T`` with ``A_s(x) = K(x, X) V diag(gain_s) V^T``."""
    kxv = v.T @ k_x_train.T  # V^T K(X, x): (n_eig, Q)
    kvv = v.T @ k_train @ v  # (n_eig, n_eig)
    a = np.einsum("qe,se->sqe", kx_v, gain)  # A_s(x) V: (S, Q, n_eig)
    cross = np.einsum("sqe,eq->sq", a, kxv)
    quad = np.einsum("sqe,ef,sqf->sq", a, kvv, a)
    return k_diag[None] - 2 * cross + quad


# -- from a Spec ------------------------------------------------------------------------------


def check_spec(spec, hparams: Mapping | None = None) -> dict:
    """The learning rate and steps of ``spec`` for a function-space prediction, after
    checking that its training is full-batch plain gradient descent on the MSE."""
    opt = spec.optimizer
    problems = []
    if spec.task.loss != "mse":
        problems.append(f"task loss {spec.task.loss!r} (needs 'mse')")
    hp = {**spec.hparams(), **(hparams or {})}
    problems += opt.departures_from_gradient_descent(hp)
    if spec.batch_size is not None:
        problems.append(f"batch_size={spec.batch_size} (needs None: full batch)")
    if problems:
        raise ValueError("kernel predictions describe full-batch gradient descent on the "
                         "MSE; this spec has " + ", ".join(problems))
    lr = float(hp["lr"])
    if spec.scale_lr_by_output_scale:
        lr = lr / float(hp["output_scale"]) ** 2
    steps = np.arange(spec.n_logs + 1) * spec.log_every
    targets = np.asarray(spec.task.train_targets(hp.get("label_noise", 0.0)), np.float64)
    return {"lr": lr, "steps": steps, "hparams": hp, "y_train": targets}


def predict_infinite(spec, hparams: Mapping | None = None, *, method: str = "gd",
                     ensemble: bool = True) -> xr.Dataset:
    """The infinite-width network of ``spec`` (a ``dynamics.Spec`` of an ``MLP``, full
    batch, ``sgd``, MSE) trained like the simulator trains it: NTK dynamics with the
    learning-rate-weighted NTK (``kernels.ntk(..., lr_weighted=True)``) and, with
    ``ensemble`` and an uncentred model, the ensemble over initialisations (NNGP);
    a centred model starts from ``f_0 = 0`` exactly."""
    from kernels.infinite import kernels as infinite_kernels

    c = check_spec(spec, hparams)
    model, task = spec.model, spec.task
    hp = c["hparams"]
    x, xt = np.asarray(task.x_train, np.float64), np.asarray(task.x_test, np.float64)
    import jax

    with jax.enable_x64(True):
        k_train, t_train = infinite_kernels(model, x, None, hp, lr_weighted=True)
        k_tt, t_tt = infinite_kernels(model, xt, x, hp, lr_weighted=True)
        k_test_diag = None
        if ensemble and not model.center:
            k_test_full, _ = infinite_kernels(model, xt, None, hp)
            k_test_diag = np.diag(np.asarray(k_test_full))
    kw = {}
    if ensemble and not model.center:
        kw = {"nngp_train": np.asarray(k_train), "nngp_test_train": np.asarray(k_tt),
              "nngp_test": k_test_diag}
    ds = predict(np.asarray(t_train), c["y_train"], lr=c["lr"], steps=c["steps"],
                 method=method, ntk_test_train=np.asarray(t_tt),
                 y_test=np.asarray(task.y_test, np.float64), **kw)
    ds.attrs["predictor"] = "infinite width" + (" ensemble" if kw else "")
    return ds
