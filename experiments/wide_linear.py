r"""Wide networks evolve as linear models (Lee et al. 2019, "Wide Neural Networks of Any
Depth Evolve as Linear Models Under Gradient Descent").

A network in the NTK parametrization trained by full-batch gradient descent on the MSE
(``L = (1/P) sum_i ||f_i - y_i||^2``, ``dynamics.losses``) follows, as its width ``N``
grows, its linearisation ``f_lin(theta) = f(theta_0) + J_0 (theta - theta_0)`` (Lee et al.
eq. 5), whose function-space dynamics are closed-form kernel regression with the NTK
(their eq. 8-9, in discrete time ``r_{s+1} = (I - (2 lr / P) Theta) r_s``; see
``kernels.predict``). Their Thm 2.1 bounds the gap by
``sup_t ||f_t - f_t^lin|| = O(N^{-1/2})``, and the empirical NTK differs from its
infinite-width limit by ``O(N^{-1/2})`` (Jacot et al. 2018; ``ntk-convergence``).

Here the network is centred (``MLP(center=True)``: ``f = g(theta) - g(theta_0)``, zero at
initialisation; Chizat, Oyallon & Bach 2019, Sec. 2.2), so that the infinite-width
prediction is deterministic: ``f_s(x) = Theta(x, X) Theta^{-1} (I - (I - (2 lr/P)
Theta)^s) Y`` with the infinite NTK (``kernels.predict_infinite``). One
``dynamics.sweep(spec, seed=..., width=[...])`` logs the network's outputs on the train
and test sets; against it are laid

* the infinite-width kernel prediction (``kernels.predict_infinite``): the sup over
  training of ``||f_t - f_t^inf||_F / ||y||_F`` on the train and test points falls with
  width at the rate of the kernel's fluctuations, ``N^{-1/2}``;
* each run's own linearisation (``kernels.predict_linearized``: ``kernels.predict`` with
  the empirical NTK at that run's initial parameters), which removes the kernel's
  fluctuation at initialisation and leaves only the kernel's motion during training:
  much smaller, and falling with width at least as fast.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

import dynamics as td
import kernels
from dynamics.observables import Observable
from experiments.common import Claim, loglog_slope
from experiments.ntk_convergence import local_slopes

NAME = "wide-linear"
TITLE = "Wide networks evolve as linear models (Lee et al. 2019)"

PRESETS = {
    "quick": dict(depth=1, widths=(64, 256, 1024, 4096), seeds=4, n_train=32, n_test=64,
                  steps=200, log_every=10, lr=0.4),
    "full": dict(depth=2, widths=(64, 128, 256, 512, 1024, 2048), seeds=8, n_train=64,
                 n_test=128, steps=400, log_every=10, lr=0.4),
}

# Running times (SECONDS, see experiments/__init__.py): quick: 47 s, measured on 2 shared
# cores; full: 155 s on 2 otherwise idle cores, 905 s while other jobs used them (it ran
# out of memory, 34 GB, while the empirical NTKs of every seed were computed at once).
SECONDS = {"quick": 50, "full": 155}


@dataclasses.dataclass(frozen=True)
class Outputs(Observable):
    """``train_outputs`` and ``test_outputs``: the trained outputs ``f`` (output scale and
    centering included) on every example, dims named like ``kernels.predict``'s."""

    dims: ClassVar = {"train_outputs": ("train_example", "output"),
                      "test_outputs": ("test_example", "output")}

    def __call__(self, ctx):
        return {"train_outputs": ctx.outputs(ctx.params, "train"),
                "test_outputs": ctx.outputs(ctx.params, "test")}


# Examples per block of the empirical NTK: a block's Jacobian at width 2048, depth 2 is
# NTK_BATCH x 4.2M parameters (0.5 GB in float32).
NTK_BATCH = 32


def make_spec(depth, n_train, n_test, steps, log_every, lr, width=64) -> td.Spec:
    task = td.tasks.teacher_student_mlp(dim=8, n_train=n_train, n_test=n_test,
                                        activation="tanh", seed=0)
    model = td.MLP(width=width, depth=depth, activation="relu", parametrization="ntk",
                   sigma_w=2.0**0.5, sigma_b=0.1, center=True)
    return td.Spec(model, task, td.optimizers.sgd(lr), steps=steps, log_every=log_every,
                   observables=("loss", Outputs()))


def _gap(net, pred, split):
    """``||f_t - f_t^pred||_F`` over examples and outputs, for every step."""
    name = f"{split}_outputs"
    return np.sqrt(((net[name] - pred[name]) ** 2).sum((f"{split}_example", "output")))


def linearized_predictions(spec: td.Spec, params0, seeds) -> xr.Dataset:
    """``kernels.predict_linearized(spec, seed)`` for every seed at once: the empirical NTKs
    (full output block, learning-rate multipliers included) at the initial parameters
    ``params0`` (leaves with a leading seed axis, as ``dynamics.sweep`` returns them) in
    one compiled program (seed after seed, in blocks of examples), then ``kernels.predict`` per seed (centred: ``f_0 = 0``)."""
    model, task = spec.model, spec.task
    x, xt = jnp.asarray(task.x_train), jnp.asarray(task.x_test)
    hp = {k: jnp.asarray(v, x.dtype) for k, v in spec.hparams().items()}

    def ntks(p0):
        def f(p, xx):
            return td.models.apply_scaled(model, p, xx, hp)

        mult = model.lr_multipliers(p0, hp)
        kw = dict(method="jacobian", lr_multipliers=mult, batch_size=NTK_BATCH)
        return (kernels.empirical_ntk(f, p0, x, **kw), kernels.empirical_ntk(f, p0, xt, x, **kw))

    # One seed after another (lax.map), in blocks of NTK_BATCH examples: the Jacobians of
    # all seeds and examples at once took 34 GB at width 2048 (full preset).
    k, kt = jax.jit(lambda p: jax.lax.map(ntks, p))(params0)
    steps = np.arange(spec.n_logs + 1) * spec.log_every
    lr = float(spec.hparams()["lr"])
    return xr.concat([kernels.predict(np.asarray(k[i]), np.asarray(task.y_train), lr=lr,
                                      steps=steps, ntk_test_train=np.asarray(kt[i]),
                                      y_test=np.asarray(task.y_test))
                      for i in range(len(seeds))], dim="seed").assign_coords(seed=list(seeds))


def run(depth, widths, seeds, n_train, n_test, steps, log_every, lr):
    spec = make_spec(depth, n_train, n_test, steps, log_every, lr)
    ds, states = td.sweep(spec, seed=range(seeds), width=list(widths), return_state=True)
    infinite = kernels.predict_infinite(spec)
    linear = xr.concat([linearized_predictions(spec.with_static("width", int(w)),
                                               states[(w,)].params0, range(seeds))
                        for w in widths], dim="width").assign_coords(width=list(widths))
    y_norm = {"train": np.linalg.norm(spec.task.y_train), "test": np.linalg.norm(spec.task.y_test)}
    for split in ("train", "test"):
        ds[f"{split}_gap_infinite"] = _gap(ds, infinite, split) / y_norm[split]
        ds[f"{split}_gap_linearized"] = _gap(ds, linear, split) / y_norm[split]
        ds[f"infinite_{split}_loss"] = infinite[f"{split}_loss"]
        ds[f"infinite_{split}_outputs"] = infinite[f"{split}_outputs"]
    ds.attrs["depth"] = depth
    ds.attrs["lr"] = lr
    return ds.transpose("seed", "width", "step", ...)


def _sup_gap(ds, name):
    """Seed mean of the largest gap over training, per width."""
    return ds[name].max("step").mean("seed")


def check(ds) -> list[Claim]:
    widths = ds.width.values
    claims = []
    for split in ("train", "test"):
        inf = _sup_gap(ds, f"{split}_gap_infinite").values
        lin = _sup_gap(ds, f"{split}_gap_linearized").values
        claims += [
            Claim(f"{split}_gap_infinite_slope", loglog_slope(widths, inf), -0.5, "within",
                  0.15, f"log-log slope against width of sup_t ||f_t - f_t^inf|| / ||y|| on "
                  f"the {split} points (network vs kernels.predict with the infinite NTK; "
                  "kernel fluctuations O(N^-1/2))"),
            Claim(f"{split}_gap_linearized_slope", loglog_slope(widths, lin), -0.5, "<=",
                  description=f"log-log slope against width of sup_t ||f_t - f_t^lin|| / "
                  f"||y|| on the {split} points (network vs its linearisation, Lee et al. "
                  "2019 Thm 2.1: at least as fast as N^-1/2)"),
        ]
    inf = _sup_gap(ds, "test_gap_infinite").values
    lin = _sup_gap(ds, "test_gap_linearized").values
    claims += [
        Claim("gap_falls_monotonically", float(local_slopes(widths, inf).max()), -0.25, "<=",
              description="largest log-log slope of the test gap to the infinite-width "
              "prediction between consecutive widths (it falls everywhere, at least at half "
              "the N^-1/2 rate)"),
        Claim("linearized_closer_than_infinite", float(np.max(lin / inf)), 0.5, "<=",
              description="largest ratio, over widths, of the test gap to the own "
              "linearisation over the gap to the infinite-width prediction"),
        Claim("widest_test_gap", float(inf[-1]), 0.05, "<=",
              description=f"sup_t ||f_t - f_t^inf|| / ||y|| on the test points at width "
              f"{widths[-1]}"),
    ]
    return claims


def plot(ds, path) -> None:
    import matplotlib.pyplot as plt

    widths = ds.width.values
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(widths)))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for w, c in zip(widths, colors):
        ax.plot(ds.step, ds.test_loss.sel(width=w).mean("seed"), color=c, label=f"N={w}")
    ax.plot(ds.step, ds.infinite_test_loss, "k--", label="kernels.predict (N=inf)")
    ax.set(yscale="log", xlabel="step", ylabel="test loss", title="test loss: network vs kernel")
    ax.legend(fontsize=8)
    ax = axes[1]
    example = 0
    x = ds.infinite_test_outputs.isel(test_example=example, output=0)
    for w, c in zip(widths, colors):
        ax.plot(ds.step, ds.test_outputs.sel(width=w).isel(test_example=example, output=0,
                                                           seed=0), color=c)
    ax.plot(ds.step, x, "k--")
    ax.set(xlabel="step", ylabel="f(x_test[0])", title="one test output, seed 0")
    ax = axes[2]
    for name, style in (("test_gap_infinite", "o-"), ("test_gap_linearized", "s-"),
                        ("train_gap_infinite", "o--"), ("train_gap_linearized", "s--")):
        v = ds[name].max("step")
        ax.errorbar(widths, v.mean("seed"), yerr=v.std("seed"), fmt=style, label=name)
    v0 = _sup_gap(ds, "test_gap_infinite").values[0]
    ax.plot(widths, v0 * np.sqrt(widths[0] / widths), "k:", label="N^-1/2")
    ax.set(xscale="log", yscale="log", xlabel="width N",
           ylabel="sup_t ||f_t - f_t^pred|| / ||y||", title="function-space gap")
    ax.legend(fontsize=7)
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
