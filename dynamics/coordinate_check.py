r"""The coordinate check: how every layer's activations move with width.

A parametrization is checked by training the same network at several widths for a few
steps at a large learning rate and looking at the size of each layer's activations
(Yang et al. 2022, "Tensor Programs V", Sec. D.1 and Fig. 5; microsoft/mup's
``get_coord_data``). For a layer's outputs ``h`` on a fixed probe batch, at step ``t``,

.. math::

    \mathrm{l1}_t = \mathrm{mean}\,|h_t|, \qquad
    \Delta\mathrm{l1}_t = \mathrm{mean}\,|h_t - h_0|,

the mean over every entry (examples, positions and features): microsoft/mup's "l1"
convention, which is the root-mean-square's order of magnitude and does not grow with
the number of entries. Under muP both are flat in width for every layer; under the
standard parametrization the change of the output (and, with Adam, of every layer)
grows with width; under the NTK parametrization the hidden features' change falls like
``width^-1/2`` (kernel regime). :func:`slopes` fits these exponents.

* :class:`CoordinateCheck`: the observable, for every run of a sweep, on any model that
  provides ``activations(params, x, hparams) -> {name: array}`` (the model protocol,
  ``dynamics.models.base``);
* :func:`coord_check`: the standard check of a spec over a width sweep, returning the
  Dataset and the standard figure;
* :func:`slopes`: the log-log slope in width of each layer's values at each step;
* :func:`loglog_slope`: the least-squares slope of ``log y`` against ``log x``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from dynamics.checks import check_int
from dynamics.observables import Observable

SPLITS = ("train", "test")


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def _model_activations(model, params, x, hparams):
    if not hasattr(model, "activations"):
        raise ValueError(f"the coordinate check needs the model's activations(params, x, "
                         f"hparams) (the model protocol); {type(model).__name__} has none")
    return model.activations(params, x, hparams)


@dataclasses.dataclass(frozen=True)
class CoordinateCheck(Observable):
    """``activation_l1`` and ``activation_change_l1`` (dimension ``module``, the model's
    layers in forward order) on the first ``probe_size`` examples of ``split``: the
    module doc's ``l1_t`` and ``Δl1_t``. The initial activations are computed once per
    run (its ``init``) and carried."""

    probe_size: int = 32
    split: str = "train"
    modules: tuple[str, ...] | None = None   # filled in by ``bind``

    dims: ClassVar = {"activation_l1": ("module",), "activation_change_l1": ("module",)}
    descriptions: ClassVar = {
        "activation_l1": ("mean absolute activation", "mean |h_t| over every entry "
                          "(examples, positions, features) of each module's outputs h_t on "
                          "the first `probe_size` examples of `split` (microsoft/mup's l1 "
                          "coordinate check)"),
        "activation_change_l1": ("mean absolute activation change", "mean |h_t - h_0| over "
                                 "every entry of each module's outputs on the probe "
                                 "examples, h_0 at the initial parameters"),
        "module": ("layer", "the model's layers in forward order (its activations()); the "
                   "last is the network's raw output g"),
    }

    def __post_init__(self):
        check_int("CoordinateCheck.probe_size", self.probe_size)
        if self.split not in SPLITS:
            raise ValueError(f"CoordinateCheck.split must be one of {list(SPLITS)}, got "
                             f"{self.split!r}")

    def bind(self, spec):
        n = spec.task.n_train if self.split == "train" else spec.task.n_test
        if self.probe_size > n:
            raise ValueError(f"CoordinateCheck.probe_size must be <= the {self.split} set's "
                             f"{n} examples, got {self.probe_size}")
        x = jax.ShapeDtypeStruct((self.probe_size, *spec.task.input_shape),
                                 spec.task.x_train.dtype)
        hp = {k: jax.ShapeDtypeStruct((), np.dtype(spec.dtype)) for k in spec.hparams()}
        names: list[str] = []

        def activations(p, x, hp):  # records the layers' forward order (a pytree sorts)
            acts = _model_activations(spec.model, p, x, hp)
            names.extend(acts)
            return acts

        jax.eval_shape(activations, spec.param_shapes(), x, hp)
        return dataclasses.replace(self, modules=tuple(names))

    def coords(self) -> dict[str, Any]:
        return {"module": list(self.modules or ())}

    def _activations(self, ctx, params):
        x = ctx.data["x_train" if self.split == "train" else "x_test"][: self.probe_size]
        acts = _model_activations(ctx.model, params, x, ctx.hparams)
        return tuple(acts[m] for m in self.modules)

    def init(self, ctx):
        return self._activations(ctx, ctx.params0)

    def update(self, ctx, state):
        acts = self._activations(ctx, ctx.params)
        l1 = jnp.stack([jnp.mean(jnp.abs(a)) for a in acts])
        change = jnp.stack([jnp.mean(jnp.abs(a - a0)) for a, a0 in zip(acts, state)])
        return {"activation_l1": l1, "activation_change_l1": change}, state


def slopes(ds: xr.Dataset, variable: str = "activation_change_l1", axis: str = "width",
           step=None) -> xr.DataArray:
    """The log-log slope in ``axis`` of ``variable`` (averaged over seeds first) for every
    module and every remaining coordinate (e.g. parametrization, lr), at every step or at
    ``step`` (a step value)."""
    if axis not in ds.dims:
        raise ValueError(f"the Dataset has no {axis!r} dimension to fit a slope in; its "
                         f"dimensions are {list(ds.dims)}")
    da = ds[variable]
    if "seed" in da.dims:
        da = da.mean("seed")
    if step is not None:
        da = da.sel(step=step)
    widths = np.asarray(ds[axis].values, float)

    def fit(y):
        y = np.asarray(y, float)
        return loglog_slope(widths, y) if np.all(y > 0) and np.all(np.isfinite(y)) else np.nan

    return xr.apply_ufunc(fit, da, input_core_dims=[[axis]], vectorize=True)


def plot(ds: xr.Dataset, path=None, axis: str = "width", title: str | None = None):
    """The standard coordinate-check figure: for each step after the first, each module's
    ``activation_change_l1`` against width (log-log, mean over seeds), and the
    ``activation_l1`` at initialisation; one row per value of any other dimension (e.g.
    parametrization). Returns the figure (saved to ``path`` when given)."""
    import matplotlib.pyplot as plt

    steps = [s for s in ds.step.values if s > 0]
    da = ds.activation_change_l1
    l1 = ds.activation_l1
    if "seed" in da.dims:
        da, l1 = da.mean("seed"), l1.mean("seed")
    other = [d for d in da.dims if d not in (axis, "module", "step")]
    rows = [dict(zip(other, values)) for values in
            np.array(np.meshgrid(*[da[d].values for d in other], indexing="ij")).reshape(
                len(other), -1).T] if other else [{}]
    ncols = len(steps) + 1
    fig, axes = plt.subplots(len(rows), ncols, figsize=(3.2 * ncols, 2.8 * len(rows)),
                             squeeze=False)
    widths = ds[axis].values
    for r, sel in enumerate(rows):
        label = ", ".join(f"{k}={v}" for k, v in sel.items())
        panels = [(l1.sel(sel).sel(step=0), "t=0: mean |h|")] + [
            (da.sel(sel).sel(step=s), f"t={s}: mean |h_t - h_0|") for s in steps]
        for c, (values, name) in enumerate(panels):
            ax = axes[r, c]
            for module in values.module.values:
                ax.loglog(widths, values.sel(module=module).values, "o-", ms=3,
                          label=str(module))
            ax.set_title(f"{label}\n{name}" if label else name, fontsize=8)
            ax.set_xlabel(axis)
        axes[r, 0].legend(fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def coord_check(spec, widths: Sequence[int], steps: int = 3, *, seeds=(0, 1, 2),
                probe_size: int | None = None, axis: str = "width", path=None,
                progress: bool | None = None, **axes):
    """The standard coordinate check of ``spec`` (Yang et al. 2022, Sec. D.1): the spec
    trained ``steps`` steps at every width of ``widths`` (the model's static field
    ``axis``) and seed, logging :class:`CoordinateCheck` at every step. Further keyword
    axes (``lr=[...]``, ``parametrization=[...]``) are swept as well. Returns ``(Dataset,
    figure)``; fit the exponents with :func:`slopes`."""
    check_int("steps", steps)
    widths = [check_int("width", w) for w in widths]
    if len(widths) < 2:
        raise ValueError(f"widths must hold at least two widths to compare, got {widths}")
    probe = probe_size if probe_size is not None else min(32, spec.task.n_train)
    observables = ("loss", CoordinateCheck(probe_size=probe))
    check_spec = dataclasses.replace(spec, steps=steps, log_every=1, observables=observables)
    from dynamics.sweeps import sweep

    ds = sweep(check_spec, seed=list(seeds), progress=progress, **{axis: widths}, **axes)
    return ds, plot(ds, path, axis=axis)
