"""Results on disk: ``save(ds, path)`` and ``load(path)`` (netCDF-4).

A sweep's Dataset round-trips exactly: every variable, coordinate (numbers, strings,
booleans) and attribute (the JSON config, versions, root seed, swept axes, each variable's
``long_name`` and ``definition``). ``save`` writes to a temporary file next to ``path``
and renames it into place (``dynamics.integrity.atomic_write``: a reader never sees a
half-written file, and the file gets the mode the user's umask gives a new file).

Two checks guard what ``load`` returns:

* the file's seal (``dynamics.integrity``): the SHA-256 of the file's bytes, written
  after the end of the HDF5 data. ``load`` verifies it before the netCDF library reads
  the file, so a damaged file is refused before it can mislead or hang the parser;
* content checksums, in the attribute ``traindyn_checksums``: the SHA-256 of every
  variable and coordinate (name, dimensions, dtype, shape, values and attributes) and of
  the Dataset's attributes. They are checked on the values ``load`` returns, and they
  survive tools that rewrite the file (``nccopy``, compression) and drop the seal.

A file whose seal does not match, or whose values do not match their checksums, is
refused with a ``ValueError`` naming the file; ``load(path, verify=False)`` reads a file
without either check (a file written by another program, or to rescue what is readable).
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import xarray as xr

from dynamics import integrity

_BOOL_ATTR = "traindyn_bool"
CHECKSUM_ATTR = "traindyn_checksums"


def _canonical_attr(value):
    """An attribute value as netCDF gives it back, in JSON (a scalar and a one-element
    list are the same attribute in netCDF; booleans come back as integers)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    array = np.atleast_1d(np.asarray(value))
    if array.dtype == bool:
        array = array.astype(np.int64)
    if integrity.is_text(array.dtype):
        return [str(v) for v in array.tolist()]
    return array.tolist()


def _attrs_json(attrs) -> str:
    return json.dumps({str(k): _canonical_attr(v) for k, v in attrs.items()},
                      sort_keys=True, allow_nan=True)


def _variable_checksum(name: str, var: xr.Variable, is_coord: bool) -> str:
    """SHA-256 of a variable as ``load`` returns it (strings hashed as text, so that the
    width of a numpy string dtype does not matter)."""
    h = hashlib.sha256()
    h.update(json.dumps([name, is_coord, list(var.dims)]).encode())
    h.update(_attrs_json(var.attrs).encode())
    values = np.asarray(var.values)
    if integrity.is_text(values.dtype):
        h.update(integrity.text_json(values).encode())
    else:
        h.update(integrity.digest(values).encode())
    return h.hexdigest()


def checksums(ds: xr.Dataset) -> dict:
    """Content checksums of ``ds``: one per variable and coordinate, and one of the attrs
    (the ``traindyn_checksums`` attribute itself excluded)."""
    return {
        "algorithm": "sha256",
        "variables": {str(name): _variable_checksum(str(name), var, name in ds.coords)
                      for name, var in ds.variables.items()},
        "attrs": hashlib.sha256(_attrs_json(
            {k: v for k, v in ds.attrs.items() if k != CHECKSUM_ATTR}).encode()).hexdigest(),
    }


def save(ds: xr.Dataset, path) -> pathlib.Path:
    """Write ``ds`` to ``path`` (netCDF-4, atomically, sealed, with content checksums);
    returns the path."""
    if not isinstance(ds, xr.Dataset):
        raise ValueError(f"ds must be an xarray.Dataset, got {type(ds).__name__}")
    path = pathlib.Path(path)
    if path.suffix not in (".nc", ".nc4"):
        raise ValueError(f"path must end in .nc (netCDF-4), got {str(path)!r}")
    out = ds.copy()
    out.attrs[CHECKSUM_ATTR] = json.dumps(checksums(ds), sort_keys=True)
    for name, var in out.variables.items():
        if var.dtype == bool:  # netCDF has no boolean type: store int8 and mark it
            out[name] = var.astype(np.int8)
            out[name].attrs[_BOOL_ATTR] = 1

    def write(tmp):
        out.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        with open(tmp, "ab") as f:
            f.write(integrity.SEAL_PLACEHOLDER)

    integrity.atomic_write(path, write, sealed=True)
    return path


def load(path, *, verify: bool = True) -> xr.Dataset:
    """The Dataset written by ``save``, fully in memory, checked against its seal and its
    content checksums (module doc); ``verify=False`` skips both checks."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"no such results file: {str(path)!r}")
    advice = ("; write it again, or read what is left with dynamics.load(path, verify=False)")
    if verify and integrity.check_seal(path) == integrity.DAMAGED:
        raise ValueError(f"results file {str(path)!r} is damaged: its bytes do not match the "
                         f"SHA-256 that dynamics.save sealed it with (a disk, transfer or "
                         f"editing error){advice}")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except Exception as err:  # whatever the netCDF and HDF5 libraries raise on bad bytes
        raise ValueError(f"results file {str(path)!r} is not a readable netCDF-4 file "
                         f"({type(err).__name__}: {err})") from err
    for name in list(ds.variables):
        var = ds[name]
        if var.attrs.pop(_BOOL_ATTR, None) is not None:
            ds[name] = var.astype(bool)
        elif var.dtype == object and all(isinstance(v, str) for v in var.values.ravel()):
            ds[name] = var.astype(str)  # netCDF strings come back as objects
    stored = ds.attrs.pop(CHECKSUM_ATTR, None)
    if not verify:
        return ds
    if stored is None:
        raise ValueError(f"results file {str(path)!r} has no traindyn checksums: it was not "
                         "written by dynamics.save; dynamics.load(path, verify=False) reads "
                         "it unchecked")
    try:
        stored = json.loads(stored)
        expected, expected_attrs = stored["variables"], stored["attrs"]
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"results file {str(path)!r} is damaged: its checksums are "
                         f"unreadable ({err}){advice}") from None
    found = checksums(ds)
    changed = sorted(k for k in set(expected) | set(found["variables"])
                     if expected.get(k) != found["variables"].get(k))
    if found["attrs"] != expected_attrs:
        changed.append("(the attributes)")
    if changed:
        raise ValueError(f"results file {str(path)!r} is damaged: {', '.join(changed)} "
                         f"changed since dynamics.save wrote it (checksums differ){advice}")
    return ds
