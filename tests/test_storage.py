"""Results on disk: a damaged file is refused, never loaded with changed values; files get
the user's umask; errors name the file."""

from __future__ import annotations

import hashlib
import os
import pathlib

import numpy as np
import pytest
import xarray as xr

import dynamics as td
from dynamics import integrity, storage


def small_results() -> xr.Dataset:
    """A Dataset with every kind of variable a sweep writes: float32 trajectories with
    NaN, int64, booleans, strings, attrs (JSON text, numbers, non-ASCII definitions)."""
    rng = np.random.default_rng(0)
    loss = rng.normal(size=(2, 3, 4)).astype(np.float32)
    loss[1, 2, 3] = np.nan
    return xr.Dataset(
        {
            "train_loss": (("seed", "lr", "step"), loss,
                           {"long_name": "training loss", "definition": "L = (1/P) Σ_i ℓ_i"}),
            "relative_weight_change": (("seed", "lr", "step"), rng.random((2, 3, 4)),
                                       {"definition": "||θ - θ0|| / ||θ0||"}),
            "diverged_at": (("seed", "lr"), np.array([[-1, 30, -1], [-1, -1, 40]])),
            "converged": ("lr", np.array([True, False, True])),
        },
        coords={"seed": [0, 1], "lr": [0.05, 0.1, 0.2], "step": [0, 10, 20, 30],
                "activation": ("lr", np.array(["tanh", "relu", "tanh"]))},
        attrs={"config": '{"steps": 30}', "root_seed": 0, "swept": '["seed", "lr"]'},
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    ds = small_results()
    path = td.save(ds, tmp_path_factory.mktemp("saved") / "results.nc")
    return ds, path, path.read_bytes()


def load_outcome(path: pathlib.Path, ds: xr.Dataset) -> str:
    """``"refused"`` (a ValueError naming the file), ``"identical"``, or ``"changed"``."""
    try:
        back = td.load(path)
    except ValueError as err:
        assert str(path) in str(err), err
        return "refused"
    try:
        xr.testing.assert_identical(back, ds)
    except AssertionError:
        return "changed"
    return "identical"


def flip_outcomes(saved, tmp_path, offsets, reseal=False) -> dict[str, int]:
    ds, _, data = saved
    counts = {"refused": 0, "identical": 0, "changed": 0}
    for i in offsets:
        damaged = bytearray(data)
        damaged[i] ^= 0xFF
        if reseal:
            damaged = resealed(bytes(damaged))
        path = tmp_path / "flipped.nc"
        path.write_bytes(bytes(damaged))
        counts[load_outcome(path, ds)] += 1
    return counts


def resealed(data: bytes) -> bytes:
    """``data`` with a seal that matches its (possibly damaged) bytes: what a file would look
    like had it been damaged before ``save`` sealed it."""
    body = data[:-64] + b"0" * 64
    return data[:-64] + hashlib.sha256(body).hexdigest().encode()


NUMERIC = ("train_loss", "relative_weight_change", "diverged_at", "lr", "step")


def data_region(saved) -> list[int]:
    """The offsets of the raw values of the numeric variables in the file (located by
    their bytes, unique for these random values)."""
    ds, _, data = saved
    offsets = []
    for name in NUMERIC:
        raw = np.ascontiguousarray(ds[name].values).tobytes()
        assert data.count(raw) == 1, name
        offsets.extend(range(data.index(raw), data.index(raw) + len(raw)))
    return offsets


def test_round_trip_is_exact_and_sealed(saved):
    ds, path, data = saved
    xr.testing.assert_identical(td.load(path), ds)
    assert data[-80:-64] == integrity.SEAL_PREFIX
    assert integrity.check_seal(path) == integrity.SEALED


def test_byte_flips_in_a_dense_sample_are_refused(saved, tmp_path):
    """Every 13th byte of the file and every byte of the seal: each flip is refused, except
    flips of the seal's marker, which leave a file without a seal whose values still
    match their content checksums (it loads unchanged)."""
    _, _, data = saved
    offsets = sorted(set(range(0, len(data), 13)) | set(range(len(data) - 80, len(data))))
    counts = flip_outcomes(saved, tmp_path, offsets)
    assert counts["changed"] == 0
    marker = range(len(data) - 80, len(data) - 64)
    assert counts["identical"] == sum(i in marker for i in offsets) == 16


@pytest.mark.slow
def test_every_byte_flip_is_refused(saved, tmp_path):
    _, _, data = saved
    counts = flip_outcomes(saved, tmp_path, range(len(data)))
    assert counts == {"refused": len(data) - 16, "identical": 16, "changed": 0}


@pytest.mark.parametrize("stride", [pytest.param(1, marks=pytest.mark.slow), 8])
def test_changed_values_under_a_valid_seal_are_refused(saved, tmp_path, stride):
    """The content checksums alone: bytes of the data region flipped and the file resealed
    (damage before the seal was written) are refused, every byte with ``stride=1`` (each
    load parses the file: 25 ms), and the message names the variable."""
    region = data_region(saved)[::stride]
    counts = flip_outcomes(saved, tmp_path, region, reseal=True)
    assert counts == {"refused": len(region), "identical": 0, "changed": 0}
    ds, _, data = saved
    damaged = bytearray(data)
    damaged[data.index(np.float32(ds.train_loss.values[0, 0, 0]).tobytes())] ^= 1
    path = tmp_path / "one.nc"
    path.write_bytes(resealed(bytes(damaged)))
    with pytest.raises(ValueError, match=r"one\.nc' is damaged: train_loss changed"):
        td.load(path)


def test_a_file_rewritten_without_its_seal_is_checked_by_content(saved, tmp_path):
    """A tool that rewrites the file keeps the attributes but not the seal: the content
    checksums still verify it, and still catch a changed value."""
    ds, _, data = saved
    path = tmp_path / "rewritten.nc"
    path.write_bytes(data[:-80])
    assert integrity.check_seal(path) == integrity.UNSEALED
    xr.testing.assert_identical(td.load(path), ds)
    damaged = bytearray(data[:-80])
    damaged[data_region(saved)[0]] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="is damaged"):
        td.load(path)


def test_a_file_not_written_by_save_needs_verify_false(tmp_path):
    ds = small_results().drop_vars("converged")  # netCDF itself has no booleans
    path = tmp_path / "foreign.nc"
    ds.to_netcdf(path, engine="netcdf4")
    with pytest.raises(ValueError, match=r"foreign\.nc' has no traindyn checksums.*"
                                         r"verify=False"):
        td.load(path)
    xr.testing.assert_identical(td.load(path, verify=False), ds)
    path.write_bytes(b"not a netCDF file at all" * 10)
    with pytest.raises(ValueError, match=r"foreign\.nc' is not a readable netCDF-4 file"):
        td.load(path)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_results_get_the_mode_of_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = td.save(small_results(), tmp_path / "sub" / "results.nc")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(mode)
    assert [p.name for p in path.parent.iterdir()] == ["results.nc"]  # no temporary left


def refuse_creating_in(monkeypatch, folder: pathlib.Path) -> None:
    """Make ``folder`` unwritable for ``integrity`` even to root (who ignores chmod)."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and pathlib.Path(path).parent == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(integrity.os, "open", fake_open)


def test_saving_to_a_read_only_place_names_the_target(tmp_path, monkeypatch):
    target = tmp_path / "results.nc"
    refuse_creating_in(monkeypatch, tmp_path)
    with pytest.raises(PermissionError) as err:
        td.save(small_results(), target)
    assert err.value.filename == str(target) and ".tmp" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_checksums_ignore_how_netcdf_gives_back_attrs():
    """A one-element list comes back from netCDF as a scalar, a bool as an int, a string
    array as objects: equal content, equal checksums; a changed number is not."""
    ds = small_results()
    same = ds.copy()
    same.attrs.update(root_seed=np.int64(0))
    same = same.assign_coords(activation=("lr", np.array(["tanh", "relu", "tanh"], object)))
    assert storage.checksums(same) == storage.checksums(ds)
    ds.attrs["listed"], same.attrs["listed"] = [3], 3
    assert storage.checksums(same) == storage.checksums(ds)
    same.attrs["listed"] = 4
    assert storage.checksums(same)["attrs"] != storage.checksums(ds)["attrs"]


# -- every variable of a sweep describes itself, on disk too ---------------------------

OWN_COORDS = ("step", "seed", "eigen_index", "eigenvalue", "ntk_index", "layer")


def assert_described(ds: xr.Dataset, spec) -> None:
    """``long_name`` and ``definition`` on every data variable and on the coordinates the
    sweep and its observables define; every declared description names a variable."""
    for name in [*ds.data_vars, *(c for c in OWN_COORDS if c in ds.coords)]:
        attrs = ds[name].attrs
        assert attrs.get("long_name") and attrs.get("definition"), name
        assert attrs["definition"] != "not declared by its observable", name
    for obs in spec.observables:
        for name in obs.descriptions:
            assert name in ds.variables or not obs.applies_to(spec.classification), \
                f"{type(obs).__name__} describes {name!r}, which it does not output"


def save_and_load(ds: xr.Dataset, path) -> xr.Dataset:
    back = td.load(td.save(ds, path))
    xr.testing.assert_identical(back, ds)  # attrs included
    return back


def test_a_default_sweep_over_a_static_axis_describes_its_variables(tmp_path):
    task = td.tasks.gaussian_mixture(n_classes=3, dim=4, n_train=12, n_test=6, seed=0)
    spec = td.Spec(td.MLP(width=4, out_dim=3), task, td.optimizers.sgd(0.1), steps=2,
                   log_every=1)
    ds = td.sweep(spec, seed=range(2), lr=[0.1, 0.2], width=[4, 8])  # parts combined
    assert {"train_accuracy", "relative_weight_change", "diverged_at"} <= set(ds.data_vars)
    assert_described(save_and_load(ds, tmp_path / "default.nc"), spec)
    assert ds.relative_weight_change.attrs["definition"].startswith("||θ - θ0|| / ||θ0|| "
                                                                    "(Frobenius norm")


def test_every_observable_of_the_package_declares_descriptions():
    """Without running anything (the sweeps below check the outputs themselves, slow):
    each Observable class declares (long_name, definition) pairs, at least for its
    outputs with dimensions of their own."""
    import inspect

    from dynamics import curvature, observables
    from kernels import dmft, observables as kernel_observables

    found = {cls for module in (observables, curvature.observables, kernel_observables,
                                dmft.observables)
             for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, observables.Observable) and cls is not observables.Observable}
    assert len(found) >= 13  # 5 default, 6 curvature, kernels, DMFT order parameters
    for cls in found:
        assert cls.descriptions, cls.__name__
        assert set(cls.dims) <= set(cls.descriptions), cls.__name__
        for name, pair in cls.descriptions.items():
            assert len(pair) == 2 and all(isinstance(t, str) and t for t in pair), name


@pytest.mark.slow
def test_curvature_kernel_and_dmft_observables_describe_their_variables(tmp_path):
    from dynamics import curvature
    from kernels import KernelObservables, dmft

    task = td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8, seed=0)
    spec = td.Spec(td.MLP(width=6, out_dim=1), task, td.optimizers.sgd(0.1), steps=2,
                   log_every=1, observables=(
                       "loss", curvature.Sharpness(iterations=3),
                       curvature.TopEigenvalues(k=2, iterations=3),
                       curvature.HessianTrace(samples=2), curvature.GGNSharpness(iterations=3),
                       curvature.BatchSharpness(batch_size=8, iterations=3),
                       curvature.SpectralDensity(points=5, probes=1, iterations=3),
                       KernelObservables(probe_size=4, top_k=2)))
    ds = td.sweep(spec, seed=range(2))
    assert {"spectral_density", "kernel_alignment", "hessian_trace_stderr"} <= set(ds.data_vars)
    assert_described(save_and_load(ds, tmp_path / "curvature.nc"), spec)

    model = td.MLP(width=8, depth=1, activation="tanh", parametrization="mup", gamma0=1.0,
                   bias=False, center=True)
    spec = td.Spec(model, task, td.optimizers.sgd(0.5), steps=2, log_every=1,
                   observables=("loss", dmft.OrderParameters(activation="tanh", depth=1)))
    ds = td.sweep(spec, seed=range(2))
    assert {"feature_kernel", "gradient_kernel", "ntk"} <= set(ds.data_vars)
    assert_described(save_and_load(ds, tmp_path / "dmft.nc"), spec)


def test_strings_of_numpy_2s_string_dtype_are_saved_and_checked_as_text(tmp_path):
    """pandas 3 gives string labels numpy's variable-width ``StringDType`` (kind ``T``),
    whose buffer holds pointers: the checksum must hash the text, the same text as a
    fixed-width ``U`` array gives, and the file must load back with the same strings."""
    string_dtype = np.dtypes.StringDType()
    ds = small_results()
    ds = ds.assign_coords(activation=("lr", np.array(["tanh", "relu", "tanh"],
                                                    dtype=string_dtype)))
    assert ds["activation"].dtype.kind == "T"
    assert storage.checksums(ds) == storage.checksums(small_results())
    path = tmp_path / "strings.nc"
    td.save(ds, path)
    back = td.load(path)
    assert [str(v) for v in back["activation"].values] == ["tanh", "relu", "tanh"]
    # two text arrays that differ only in their contents digest differently
    assert integrity.digest(np.array(["a", "b"], dtype=string_dtype)) != \
        integrity.digest(np.array(["a", "c"], dtype=string_dtype))
    assert integrity.digest(np.array(["a", "b"], dtype=string_dtype)) == \
        integrity.digest(np.array(["a", "b"]))
