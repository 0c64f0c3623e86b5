"""Sweeps that outgrow one device and one sitting: devices, memory chunks, checkpoints and
resume, results on disk, float64."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
import xarray as xr

import dynamics as td
from dynamics import memory, planning, programs, runtime, sweeps

# A sweep small enough to compile in seconds; defined once so that a child process builds
# exactly the same spec.
SPEC_SOURCE = """
import dynamics as td
task = td.tasks.teacher_student_linear(dim=6, n_train=32, n_test=16, out_dim=2, seed=3)
model = td.MLP(width=16, depth=1, out_dim=2, activation="tanh")
def make_spec(steps=40, log_every=2, **kw):
    kw.setdefault("optimizer", td.optimizers.sgd(0.1))
    return td.Spec(model, task, steps=steps, log_every=log_every, **kw)
AXES = dict(seed=range(3), lr=[0.05, 0.1])
"""
namespace: dict = {}
exec(SPEC_SOURCE, namespace)
make_spec, AXES = namespace["make_spec"], namespace["AXES"]


def child_env(devices: int = 1) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = runtime.with_cpu_devices(env.get("XLA_FLAGS", ""), devices)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def run_child(code: str, devices: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
    script = SPEC_SOURCE + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], env=child_env(devices),
                          capture_output=True, text=True, timeout=timeout, check=True)


def assert_same_values(a: xr.Dataset, b: xr.Dataset, rtol: float = 0.0) -> None:
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        if rtol == 0.0:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        else:
            np.testing.assert_allclose(a[name].values, b[name].values, rtol=rtol, atol=1e-7,
                                       err_msg=name)


def test_one_device_and_four_devices_agree(tmp_path):
    code = """
    import sys, jax, dynamics as td
    ds = td.sweep(make_spec(strategy="vmap"), **AXES)
    plans = __import__("json").loads(ds.attrs["execution"])
    assert jax.device_count() == int(sys.argv[1]) == plans["devices"], plans
    td.save(ds, sys.argv[2])
    """
    for n in (1, 4):
        script = SPEC_SOURCE + textwrap.dedent(code)
        subprocess.run([sys.executable, "-c", script, str(n), str(tmp_path / f"d{n}.nc")],
                       env=child_env(n), check=True, timeout=300)
    one, four = td.load(tmp_path / "d1.nc"), td.load(tmp_path / "d4.nc")
    # 6 runs on 4 devices: padded to 8, sharded two per device. The same per-run program
    # in a batch of another size: float32 round-off in the batched matmuls at most.
    assert_same_values(one, four, rtol=1e-5)
    assert json.loads(four.attrs["execution"])["plans"][0]["runs_per_chunk"] == 8


@pytest.mark.slow
def test_two_processes_under_jax_distributed_merge_their_runs(tmp_path):
    """Two CPU processes (gloo collectives), one device each: every process returns the
    whole sweep, equal to the single-process one."""
    code = """
    import sys, jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2,
                               process_id=int(sys.argv[2]))
    import dynamics as td
    ds = td.sweep(make_spec(), **AXES)
    assert jax.process_count() == 2 and jax.device_count() == 2
    td.save(ds, sys.argv[3])
    """
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    script = SPEC_SOURCE + textwrap.dedent(code)
    procs = [subprocess.Popen([sys.executable, "-c", script, address, str(i),
                               str(tmp_path / f"p{i}.nc")], env=child_env(1))
             for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    single = td.sweep(make_spec(), **AXES)
    for i in range(2):
        # sharded over two processes vs one batch: float32 round-off at most
        assert_same_values(single, td.load(tmp_path / f"p{i}.nc"), rtol=1e-5)


def test_resume_after_sigkill_is_bitwise_the_uninterrupted_sweep(tmp_path):
    # The child runs 40 chunks of one log point, checkpointing after each; it is killed
    # with SIGKILL as soon as a checkpoint of the chunk in progress exists.
    killed = tmp_path / "killed"
    code = f"""
    import dynamics as td
    td.sweep(make_spec(steps=400, log_every=10), checkpoint_dir={str(killed)!r},
             logs_per_chunk=1, progress=False, **AXES)
    """
    child = subprocess.Popen([sys.executable, "-c", SPEC_SOURCE + textwrap.dedent(code)],
                             env=child_env(jax.device_count()))  # the parent's devices
    current = killed / "part-0" / "current.npz"
    deadline = time.time() + 240
    while not current.exists() and child.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    with np.load(current) as z:
        logs_done = int(z["__logs_done"])
    assert 1 <= logs_done < 40
    spec = make_spec(steps=400, log_every=10)
    resumed = td.sweep(spec, checkpoint_dir=killed, logs_per_chunk=1, progress=False, **AXES)
    fresh = td.sweep(spec, checkpoint_dir=tmp_path / "fresh", logs_per_chunk=1, **AXES)
    plain = td.sweep(spec, logs_per_chunk=1, **AXES)
    assert_same_values(resumed, fresh)  # bitwise
    assert_same_values(resumed, plain)  # checkpointing changes nothing
    # a finished checkpoint is read back, not recomputed
    again = td.sweep(spec, checkpoint_dir=killed, logs_per_chunk=1, **AXES)
    assert_same_values(again, fresh)


def test_a_checkpoint_of_another_sweep_is_refused(tmp_path):
    td.sweep(make_spec(steps=4), checkpoint_dir=tmp_path, **AXES)
    with pytest.raises(ValueError, match="different sweep.*axes"):
        td.sweep(make_spec(steps=4), checkpoint_dir=tmp_path, seed=range(3), lr=[0.05, 0.2])
    with pytest.raises(ValueError, match="different sweep.*config"):
        td.sweep(make_spec(steps=6), checkpoint_dir=tmp_path, **AXES)


def needed_bytes(spec, runs):
    """What XLA says the vmapped program of ``runs`` runs needs (the planner's measure)."""
    compiled = programs.compiled(spec, "vmap", spec.n_logs, runs, planning.part_mesh("vmap"))
    return memory.program_bytes(compiled[-1])


def test_a_sweep_over_its_memory_budget_is_chunked_and_unchanged():
    spec = make_spec(strategy="vmap")
    whole = td.sweep(spec, logs_per_chunk=spec.n_logs, **AXES)
    # a budget that holds the program of one run per device and not of two: chunks of one
    # run per device (XLA reports a sharded program's bytes per device; CPU devices share
    # the host's memory, so the budget is for all of them)
    n_dev = jax.device_count()
    budget = n_dev * needed_bytes(spec, n_dev)
    assert needed_bytes(spec, 2 * n_dev) > needed_bytes(spec, n_dev)
    chunked = td.sweep(spec, memory_budget=budget, logs_per_chunk=spec.n_logs, **AXES)
    plan = json.loads(chunked.attrs["execution"])["plans"][0]
    assert plan["runs_per_chunk"] == n_dev
    assert json.loads(whole.attrs["execution"])["plans"][0]["runs_per_chunk"] == 6
    # each run's program is the same; batches of 2 vs 6 round alike to within float32
    assert_same_values(whole, chunked, rtol=1e-6)
    overridden = td.sweep(spec, max_runs_per_chunk=4, **AXES)
    assert json.loads(overridden.attrs["execution"])["plans"][0]["runs_per_chunk"] == 4  # 2 x 2
    assert_same_values(whole, overridden, rtol=1e-6)


def test_the_memory_estimate_is_the_compiled_programs_own():
    """XLA counts the program's outputs (the new carry and the chunk's trajectory) and
    arguments (the runs' carry and hyperparameters, the data, the chunk's first log point)
    byte for byte; temporaries come on top."""
    spec = make_spec(strategy="vmap")
    runs, logs = 6, 5
    ds, states = td.run(spec, return_state=True)
    carry = sum(np.asarray(a).nbytes for a in jax.tree.leaves(states[()]))  # one run
    per_log = sum(ds[v].isel(step=0).values.nbytes for v in ds.data_vars if "step" in ds[v].dims)
    data = sum(a.nbytes for a in spec.task.arrays().values())
    hp = 4 * len(spec.hparams())  # float32 scalars per run
    # on one device (a sharded program reports each device's share)
    advance = programs.compiled(spec, "vmap", logs, runs, None)[-1]
    m = advance.memory_analysis()
    n_outputs = len(jax.tree.leaves(states[()])) + sum(
        1 for v in ds.data_vars if "step" in ds[v].dims)
    # the CPU backend's output tuple holds one 8-byte pointer per output buffer
    assert m.output_size_in_bytes == runs * (carry + logs * per_log) + 8 * n_outputs
    # every argument, less what the program does not read and jit prunes: here the runs'
    # keys (uint32[2] each; nothing random in this spec)
    full = runs * (carry + hp) + data + 4  # + log_start (int32)
    assert full - runs * 8 - 4 <= m.argument_size_in_bytes <= full
    assert memory.program_bytes(advance) == (m.argument_size_in_bytes + m.output_size_in_bytes
                                             + m.temp_size_in_bytes - m.alias_size_in_bytes)


def test_save_load_round_trips_exactly(tmp_path):
    spec = make_spec(steps=4, observables=("loss", "accuracy", "param_norm"))
    ds = td.sweep(spec, seed=range(2), lr=[0.05, 0.1], activation=["tanh", "relu"],
                  center=[False, True])
    path = td.save(ds, tmp_path / "sweep.nc")
    back = td.load(path)
    xr.testing.assert_identical(ds, back)
    assert back.center.dtype == bool and back.activation.dtype.kind in "UO"
    for name in ds.variables:
        assert back[name].dtype == ds[name].dtype
    with pytest.raises(ValueError, match=r"\.nc"):
        td.save(ds, tmp_path / "sweep.zarr")


def test_float64_runs_in_float64_and_leaves_the_global_setting_alone():
    """Spec(dtype="float64") on a float32 task: GD on linear regression equals its float64
    closed-form recursion, w <- w - lr (2/P) X^T (X w - y), to float64 rounding."""
    before = jax.config.read("jax_enable_x64")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 5)).astype(np.float32)
    y = (X @ rng.normal(size=(5, 1))).astype(np.float32)
    task = td.tasks.from_arrays(X, y, X[:4], y[:4], loss="mse")
    model = td.MLP(depth=0, out_dim=1, parametrization="standard", bias=False)
    spec = td.Spec(model, task, td.optimizers.sgd(0.05), steps=30, log_every=10,
                   dtype="float64")
    assert spec.task.dtype == "float64" and task.dtype == "float32"
    ds, states = td.run(spec, return_state=True)
    assert jax.config.read("jax_enable_x64") == before
    assert ds.train_loss.dtype == np.float64
    assert all(a.dtype != np.float32 for a in jax.tree.leaves(states[()]))
    X, y = X.astype(np.float64), y.astype(np.float64)
    w = np.asarray(states[()].params0[0]["w"]).reshape(5, 1)
    losses = []
    for t in range(31):
        if t % 10 == 0:
            losses.append(np.mean((X @ w - y) ** 2))
        w = w - 0.05 * (2 / 20) * X.T @ (X @ w - y)
    # float64 throughout: rounding of a 30-step recursion
    np.testing.assert_allclose(ds.train_loss.values, losses, rtol=1e-12)
    with pytest.raises(ValueError, match="dtype must be"):
        make_spec(dtype="float16")
