"""Checkpoints: a part of another sweep or a damaged part is refused with a ValueError that
names the directory and the file and says what to do; files get the user's umask."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

import dynamics as td
from dynamics import programs, sweeps
from dynamics.checkpoint import SweepCheckpoint

LAYOUT = {"plans": [{"strategy": "vmap", "runs_per_chunk": 6, "logs_per_chunk": 1}]}
FINGERPRINT = {"config": {"steps": 4}, "axes": {"seed": [0, 1, 2], "lr": [0.05, 0.1]}}


def arrays(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"state.0": rng.normal(size=(6, 5)).astype(np.float32),
            "first.train_loss": rng.random(6), "traj.train_loss": rng.random((6, 2))}


def written(directory, fingerprint=FINGERPRINT) -> SweepCheckpoint:
    """A checkpoint with a finished run-chunk 0 and run-chunk 1 in progress."""
    ckpt = SweepCheckpoint(directory, fingerprint)
    ckpt.open(LAYOUT)
    ckpt.save_done(0, 0, arrays(0))
    ckpt.save_current(0, 1, 2, arrays(1))
    return ckpt


def assert_arrays_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_parts_round_trip_and_carry_their_place(tmp_path):
    ckpt = written(tmp_path)
    assert_arrays_equal(ckpt.load_done(0, 0), arrays(0))
    logs_done, current = ckpt.load_current(0, 1)
    assert logs_done == 2
    assert_arrays_equal(current, arrays(1))
    assert ckpt.load_current(0, 0) is None  # the chunk in progress is another one
    assert ckpt.load_done(0, 1) is None
    with np.load(tmp_path / "part-0" / "runs-0.npz") as z:  # plain numpy reads it
        assert str(z["__sweep"]) == ckpt.sweep_id and int(z["__chunk"]) == 0


def expect_damaged(ckpt, load, file: str, what: str = ""):
    with pytest.raises(ValueError) as err:
        load()
    message = str(err.value)
    assert f"checkpoint_dir {str(ckpt.dir)!r}: {file} is damaged" in message, message
    assert "delete that file and call the sweep again" in message, message
    assert what in message, message


@pytest.mark.parametrize("name", ["runs-0.npz", "current.npz"])
def test_every_byte_flip_of_a_part_is_refused(tmp_path, name):
    """Each of the ~2,500 bytes of a part file flipped in turn: every one is refused
    before the file is parsed (the seal covers every byte, its own marker included)."""
    ckpt = written(tmp_path)
    path = tmp_path / "part-0" / name
    data = path.read_bytes()
    load = (lambda: ckpt.load_done(0, 0)) if name == "runs-0.npz" else (
        lambda: ckpt.load_current(0, 1))
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0xFF
        path.write_bytes(bytes(damaged))
        expect_damaged(ckpt, load, f"part-0/{name}")
    path.write_bytes(data)
    assert load() is not None


def test_a_truncated_part_is_refused_not_a_zip_error(tmp_path):
    ckpt = written(tmp_path)
    path = tmp_path / "part-0" / "runs-0.npz"
    data = path.read_bytes()
    for size in (0, 10, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:size])
        expect_damaged(ckpt, lambda: ckpt.load_done(0, 0), "part-0/runs-0.npz",
                       "no checksum")


def test_a_moved_part_is_refused(tmp_path):
    ckpt = written(tmp_path)
    part = tmp_path / "part-0"
    (part / "runs-1.npz").write_bytes((part / "runs-0.npz").read_bytes())
    expect_damaged(ckpt, lambda: ckpt.load_done(0, 1), "part-0/runs-1.npz",
                   "holds part 0, run-chunk 0, but lies at part-0/runs-1.npz")


def test_after_sweep_json_is_deleted_another_sweep_is_refused_the_same_resumes(tmp_path):
    written(tmp_path)
    (tmp_path / "sweep.json").unlink()
    other = {**FINGERPRINT, "axes": {"seed": [0, 1, 2], "lr": [0.05, 0.2]}}
    with pytest.raises(ValueError, match=r"part-0/(current|runs-0)\.npz belongs to a "
                                         r"different sweep.*sweep\.json deleted"):
        SweepCheckpoint(tmp_path, other).open(LAYOUT)
    assert not (tmp_path / "sweep.json").exists()  # the directory is left as it was
    with pytest.raises(ValueError, match="belongs to a different sweep"):  # another layout
        SweepCheckpoint(tmp_path, FINGERPRINT).open({"plans": [{**LAYOUT["plans"][0],
                                                                "runs_per_chunk": 3}]})
    same = SweepCheckpoint(tmp_path, FINGERPRINT)
    assert same.open(LAYOUT) == LAYOUT
    assert_arrays_equal(same.load_done(0, 0), arrays(0))


def test_a_damaged_or_old_sweep_json_is_refused(tmp_path):
    written(tmp_path)
    manifest = tmp_path / "sweep.json"
    record = json.loads(manifest.read_text())
    record["layout"]["plans"][0]["runs_per_chunk"] = 3  # valid JSON, wrong checksum
    manifest.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"sweep\.json is damaged.*delete sweep\.json"):
        SweepCheckpoint(tmp_path, FINGERPRINT).open(LAYOUT)
    manifest.write_text('{"format": 1, "fingerp')
    with pytest.raises(ValueError, match=r"sweep\.json is damaged"):
        SweepCheckpoint(tmp_path, FINGERPRINT).open(LAYOUT)
    manifest.write_text(json.dumps({"format": 1, "fingerprint": FINGERPRINT, "layout": LAYOUT}))
    with pytest.raises(ValueError, match=r"format 1 of another version of traindyn"):
        SweepCheckpoint(tmp_path, FINGERPRINT).open(LAYOUT)


def test_checkpoint_dir_must_be_a_directory(tmp_path):
    a_file = tmp_path / "results.nc"
    a_file.write_text("")
    with pytest.raises(ValueError, match=r"checkpoint_dir must be a directory, got the file "
                                         r"'.*results\.nc'"):
        SweepCheckpoint(a_file, FINGERPRINT).open(LAYOUT)
    with pytest.raises(ValueError, match=r"checkpoint_dir must be a directory, got .*a path "
                                         r"through a file"):
        SweepCheckpoint(a_file / "ckpt", FINGERPRINT).open(LAYOUT)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_checkpoint_files_get_the_mode_of_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        written(tmp_path)
    finally:
        os.umask(old)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [
        "part-0/current.npz", "part-0/runs-0.npz", "sweep.json"]  # no temporaries left
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}


# -- end to end, through dynamics.sweep (one compiled program for the whole module) ------

TASK = td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8, seed=0)
SPEC = td.Spec(td.MLP(width=8, depth=1, out_dim=1), TASK, td.optimizers.sgd(0.1),
               steps=8, log_every=2, observables=("loss",))
AXES = dict(seed=range(2), lr=[0.05, 0.1])


def test_the_issue_scenario_sweep_json_deleted_then_another_sweep(tmp_path):
    """A directory whose sweep.json was deleted, resumed by a sweep with other learning
    rates, is refused (it returned the old runs under the new labels); the original sweep
    then resumes from it, equal to a plain sweep."""
    first = td.sweep(SPEC, checkpoint_dir=tmp_path, logs_per_chunk=1, **AXES)
    (tmp_path / "sweep.json").unlink()
    with pytest.raises(ValueError, match="belongs to a different sweep"):
        td.sweep(SPEC, checkpoint_dir=tmp_path, logs_per_chunk=1, seed=range(2),
                 lr=[0.05, 0.2])
    again = td.sweep(SPEC, checkpoint_dir=tmp_path, logs_per_chunk=1, **AXES)
    plain = td.sweep(SPEC, logs_per_chunk=1, **AXES)
    for ds in (first, again):
        np.testing.assert_array_equal(ds.train_loss.values, plain.train_loss.values)


def test_a_damaged_part_stops_the_sweep_until_the_file_is_deleted(tmp_path):
    td.sweep(SPEC, checkpoint_dir=tmp_path, logs_per_chunk=1, **AXES)
    part = tmp_path / "part-0" / "runs-0.npz"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"part-0/runs-0\.npz is damaged \(its bytes do not "
                                         r"match its SHA-256\); delete that file"):
        td.sweep(SPEC, checkpoint_dir=tmp_path, logs_per_chunk=1, **AXES)
    part.unlink()
    resumed = td.sweep(SPEC, checkpoint_dir=tmp_path, logs_per_chunk=1, **AXES)
    plain = td.sweep(SPEC, logs_per_chunk=1, **AXES)
    np.testing.assert_array_equal(resumed.train_loss.values, plain.train_loss.values)


def test_checkpoint_dir_at_a_file_fails_before_compiling(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a program was compiled before the error")

    monkeypatch.setattr(programs, "_functions", refuse)
    monkeypatch.setattr(programs, "_compiled", refuse)
    a_file = pathlib.Path(tmp_path / "ckpt")
    a_file.write_text("")
    with pytest.raises(ValueError, match="checkpoint_dir must be a directory"):
        td.sweep(SPEC, checkpoint_dir=a_file, **AXES)
