"""The last stage of a sweep: trajectories on the host become one ``xarray.Dataset``.

Dimensions are the swept axes in the order given, then ``step``, then an observable's own
dimensions (``Observable.dims``, with ``Observable.coords()``); ``diverged_at`` says at which
step a run was frozen (-1: never); ``attrs`` hold the configuration, the root seed, the
package versions and how the sweep was executed. Every variable carries ``long_name`` and
``definition`` attributes (with its normalisation): the observables declare theirs
(``Observable.descriptions``), the sweep those of ``step``, ``seed`` and ``diverged_at``
(``DESCRIPTIONS``).
"""

from __future__ import annotations

import json
import platform
from importlib import metadata

import jax
import numpy as np
import xarray as xr


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "backend": jax.default_backend()}
    for pkg in ("traindyn", "jax", "jaxlib", "flax", "optax", "numpy", "xarray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _extra_dims(spec, name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    for obs in spec.observables:
        if name in obs.dims:
            return tuple(obs.dims[name])
    return tuple(f"{name}_dim{i}" for i in range(len(shape)))


def part_dataset(spec, grid_names, grid_values, traj, diverged_at) -> xr.Dataset:
    """The Dataset of one part (one combination of static values): runs on the grid of
    seeds and value axes."""
    grid_shape = tuple(len(v) for v in grid_values)
    steps = np.arange(spec.n_logs + 1) * spec.log_every
    data_vars = {}
    for name, arr in traj.items():
        arr = np.asarray(arr).reshape(grid_shape + arr.shape[1:])
        extra = _extra_dims(spec, name, arr.shape[len(grid_shape) + 1:])
        data_vars[name] = (tuple(grid_names) + ("step",) + extra, arr)
    data_vars["diverged_at"] = (
        tuple(grid_names),
        np.asarray(diverged_at).astype(np.int64).reshape(grid_shape),
    )
    coords = {n: v for n, v in zip(grid_names, grid_values)}
    coords["step"] = steps
    for obs in spec.observables:
        coords.update(obs.coords())
    return xr.Dataset(data_vars, coords=coords)


def combine(parts, static_axes: dict, dims: list[str], grid_names: list[str]) -> xr.Dataset:
    """One Dataset from the parts of every combination of static values (nested in the
    order of ``static_axes``), dimensions ordered as swept, unswept ones squeezed."""
    static_names = list(static_axes)
    if static_names:
        nested = np.empty([len(v) for v in static_axes.values()], dtype=object)
        for index, part in zip(np.ndindex(nested.shape), parts):
            nested[index] = part
        # join="outer": a coordinate whose length follows a static axis (the blocks of a
        # depth sweep) is padded with NaN where a part lacks it, not refused
        ds = xr.combine_nested(nested.tolist(), concat_dim=static_names, join="outer",
                               combine_attrs="drop")
        for name in static_names:  # string axes as numpy strings, not objects
            if ds[name].dtype == object:
                ds = ds.assign_coords({name: ds[name].values.astype(str)})
    else:
        ds = parts[0]
    order = [d for d in dims if d in ds.dims]
    rest = [d for d in ds.dims if d not in order and d in grid_names + static_names]
    ds = ds.transpose(*order, *rest, "step", ...)
    for name in list(ds.dims):
        if name not in dims and name != "step" and name in grid_names + static_names:
            ds = ds.squeeze(name)
    return ds


# What a sweep adds to its observables' outputs; each observable describes its own
# (``Observable.descriptions``).
DESCRIPTIONS = {
    "step": ("optimizer step", "number of optimizer updates done (0: the initial state); "
             "a log point every log_every steps"),
    "diverged_at": ("step of divergence", "the optimizer step whose loss or new parameters "
                    "were not finite: the run kept its last finite state and its later log "
                    "points are NaN (-1: never diverged)"),
    "seed": ("run seed", "the run's key is fold_in(PRNGKey(root_seed), seed)"),
}


def describe(ds: xr.Dataset, spec) -> None:
    """``long_name`` and ``definition`` attrs on every variable of ``ds`` that the sweep or
    an observable describes, and a plain name on an output of a user's observable that
    declares none. Applied to the assembled Dataset (combining parts drops attrs)."""
    known = dict(DESCRIPTIONS)
    for obs in spec.observables:
        known.update(getattr(obs, "descriptions", {}))
    for name, var in ds.variables.items():
        if name in known:
            long_name, definition = known[name]
        elif name in ds.data_vars:
            long_name, definition = str(name).replace("_", " "), "not declared by its observable"
        else:
            continue
        var.attrs.update(long_name=long_name, definition=definition)


def attrs(spec, dims, plans) -> dict:
    return {
        "config": spec.config_json(),
        "root_seed": spec.root_seed,
        "hparams": json.dumps(spec.hparams()),
        "versions": json.dumps(versions()),
        "swept": json.dumps(dims),
        "execution": json.dumps({
            "devices": jax.device_count(),
            "processes": jax.process_count(),
            "plans": [p.as_dict() for p in plans],
        }),
    }
