"""Results on disk: ``save(ds, path)`` and ``load(path)`` (netCDF-4).

A sweep's Dataset round-trips exactly: every variable, coordinate (numbers, strings,
booleans) and attribute (the JSON config, versions, root seed, swept axes). ``save`` writes
to a temporary file next to ``path`` and renames it into place, so a reader never sees a
half-written file; ``load`` reads everything into memory and closes the file.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np
import xarray as xr

_BOOL_ATTR = "traindyn_bool"


def save(ds: xr.Dataset, path) -> pathlib.Path:
    """Write ``ds`` to ``path`` (netCDF-4, atomically); returns the path."""
    if not isinstance(ds, xr.Dataset):
        raise ValueError(f"ds must be an xarray.Dataset, got {type(ds).__name__}")
    path = pathlib.Path(path)
    if path.suffix not in (".nc", ".nc4"):
        raise ValueError(f"path must end in .nc (netCDF-4), got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    out = ds.copy()
    for name, var in out.variables.items():
        if var.dtype == bool:  # netCDF has no boolean type: store int8 and mark it
            out[name] = var.astype(np.int8)
            out[name].attrs[_BOOL_ATTR] = 1
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        out.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load(path) -> xr.Dataset:
    """The Dataset written by ``save``, fully in memory."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ValueError(f"no such results file: {str(path)!r}")
    with xr.open_dataset(path, engine="netcdf4") as ds:
        ds = ds.load()
    for name in list(ds.variables):
        var = ds[name]
        if var.attrs.pop(_BOOL_ATTR, None) is not None:
            ds[name] = var.astype(bool)
        elif var.dtype == object and all(isinstance(v, str) for v in var.values.ravel()):
            ds[name] = var.astype(str)  # netCDF strings come back as objects
    return ds
