"""What traindyn sets up when it is imported (dynamics.runtime): one CPU device per core
unless asked otherwise, the user's XLA_FLAGS respected, and the persistent compilation
cache."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from dynamics import runtime


def test_cpu_devices_one_per_core_by_default_and_the_users_flags_kept(monkeypatch):
    monkeypatch.setattr(runtime, "_backends_started", lambda: False)
    cores = len(os.sched_getaffinity(0))
    for asked in ({}, {"TRAINDYN_CPU_DEVICES": "cores"}):  # the default is one per core
        env = {"XLA_FLAGS": "--xla_backend_optimization_level=0", **asked}
        count = runtime.cpu_devices(env)
        if cores > 1:
            assert count == cores
            assert env["XLA_FLAGS"] == (f"--xla_backend_optimization_level=0 "
                                        f"--xla_force_host_platform_device_count={cores}")
        else:  # one core: XLA's single device, the flags untouched
            assert count is None and env["XLA_FLAGS"] == "--xla_backend_optimization_level=0"
    # the user's own device count is kept, and so is the rest of their flags
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=3", "TRAINDYN_CPU_DEVICES": "2"}
    assert runtime.cpu_devices(env) is None
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"
    env = {"TRAINDYN_CPU_DEVICES": "1"}
    assert runtime.cpu_devices(env) is None and "XLA_FLAGS" not in env
    env = {"TRAINDYN_CPU_DEVICES": "4"}
    assert runtime.cpu_devices(env) == 4
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"
    for bad in ("0", "two"):
        with pytest.raises(ValueError, match="TRAINDYN_CPU_DEVICES must be a positive"):
            runtime.cpu_devices({"TRAINDYN_CPU_DEVICES": bad})
    # once JAX's backends run, nothing changes
    monkeypatch.setattr(runtime, "_backends_started", lambda: True)
    env = {"TRAINDYN_CPU_DEVICES": "2"}
    assert runtime.cpu_devices(env) is None and "XLA_FLAGS" not in env


def test_the_cache_directory_is_per_user_overridable_and_can_be_off(tmp_path):
    assert runtime.cache_directory({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "traindyn" / "jax"
    assert runtime.cache_directory({"TRAINDYN_COMPILATION_CACHE": str(tmp_path / "c")}) == tmp_path / "c"
    for off in ("off", "0", "false", "none"):
        assert runtime.cache_directory({"TRAINDYN_COMPILATION_CACHE": off}) is None


CHILD = """
import json, sys
import jax
from jax import monitoring
events = {"hits": 0, "compile_seconds": 0.0}
def on_event(name, **kw):
    if name == "/jax/compilation_cache/cache_hits":
        events["hits"] += 1
def on_duration(name, seconds, **kw):
    if name == "/jax/core/compile/backend_compile_duration":
        events["compile_seconds"] += seconds
monitoring.register_event_listener(on_event)
monitoring.register_event_duration_secs_listener(on_duration)
import dynamics as td
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # cache every program
task = td.tasks.teacher_student_linear(dim=4, n_train=16, n_test=8, seed=int(sys.argv[1]))
spec = td.Spec(td.MLP(width=8), task, steps=4, log_every=2)
ds = td.sweep(spec, seed=range(2), lr=[0.1, 0.2])
events["devices"] = jax.device_count()
events["cache"] = jax.config.jax_compilation_cache_dir
events["loss"] = float(ds.train_loss.isel(step=-1).sum())
print(json.dumps(events))
"""


def run_child(cache, task_seed, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TRAINDYN_COMPILATION_CACHE", "TRAINDYN_CPU_DEVICES", "XLA_FLAGS")}
    environ.update(TRAINDYN_COMPILATION_CACHE=str(cache), JAX_PLATFORMS="cpu", **env)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(CHILD), str(task_seed)],
                         env=environ, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_loads_its_programs_from_the_cache_even_for_new_data(tmp_path):
    cache = tmp_path / "cache"
    first = run_child(cache, task_seed=0)
    assert first["hits"] == 0 and first["cache"] == str(cache)
    assert first["devices"] == len(os.sched_getaffinity(0))  # one CPU device per core
    assert any(cache.iterdir())  # programs were written
    again = run_child(cache, task_seed=0)
    # every program of the sweep comes from the cache: the same results, no compile
    assert again["hits"] >= 3 and again["loss"] == first["loss"]
    # another dataset of the same shapes: the data are arguments, so the same programs
    other = run_child(cache, task_seed=1)
    assert other["hits"] == again["hits"] and other["loss"] != first["loss"]
    off = run_child("off", task_seed=0)
    assert off["hits"] == 0 and off["cache"] is None


LAPACK_CHILD = """
import json, re
import jax, jax.numpy as jnp, numpy as np
import dynamics as td
from dynamics import runtime
from dynamics.curvature import trace
from dynamics.observables_collapse import nc1
x = np.random.default_rng(0).standard_normal((6, 5, 5)).astype(np.float32)
x = jnp.asarray(x + x.transpose(0, 2, 1))
f = runtime.unbatched_lapack(jnp.linalg.eigvalsh)
text = jax.jit(jax.vmap(f)).lower(x).as_text()  # StableHLO: a loop is a while
def batched_lapack(fn, *args):  # LAPACK custom calls of vmap(fn) with a batched operand
    text = jax.jit(jax.vmap(fn)).lower(*args).as_text()
    return [line for line in text.splitlines()
            if "lapack" in line and re.search(r"[(]tensor<6x", line)]
# the engine's in-run LAPACK calls: Hutch++'s QR, neural collapse's pseudo-inverse
hutch = lambda a: trace.hutch_plus_plus(lambda v: a @ v, jnp.zeros(5), jax.random.PRNGKey(0),
                                        samples=6).estimate
onehot = jnp.eye(3)[jnp.arange(12) % 3]
h = jnp.asarray(np.random.default_rng(1).standard_normal((6, 12, 4)), jnp.float32)
print(json.dumps({"devices": jax.device_count(), "loop": "while" in text,
                  "equal": bool(jnp.array_equal(jax.jit(jax.vmap(f))(x),
                                                jax.jit(jax.vmap(jnp.linalg.eigvalsh))(x))),
                  "batched": {"eigvalsh": bool(batched_lapack(jnp.linalg.eigvalsh, x)),
                              "hutch++": bool(batched_lapack(hutch, x)),
                              "nc1": bool(batched_lapack(lambda a: nc1(a, onehot), h))}}))
"""


def test_batched_lapack_is_a_loop_only_with_several_cpu_devices():
    """The deadlock of batched LAPACK calls on several CPU devices (dynamics.runtime):
    ``unbatched_lapack`` makes ``vmap`` a loop over the batch there, with the same
    eigenvalues as the batched call (one LAPACK call per matrix either way), and leaves
    a single device (``TRAINDYN_CPU_DEVICES=1``) untouched."""
    for devices in ("1", "2"):
        environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        environ.update(TRAINDYN_CPU_DEVICES=devices, TRAINDYN_COMPILATION_CACHE="off",
                       JAX_PLATFORMS="cpu")
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(LAPACK_CHILD)],
                             env=environ, capture_output=True, text=True, check=True,
                             timeout=300)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        batched = got.pop("batched")
        assert got == {"devices": int(devices), "loop": devices == "2", "equal": True}
        # a plain batched call is seen batched; the engine's calls are only on one device
        assert batched == {"eigvalsh": True, "hutch++": devices == "1",
                           "nc1": devices == "1"}


@pytest.mark.slow
def test_the_main_job_finishes_on_two_cpu_devices(tmp_path):
    """The main job on two CPU devices (``TRAINDYN_CPU_DEVICES=2``): before
    ``unbatched_lapack`` its kernel observables' batched ``eigvalsh`` deadlocked XLA's
    intra-op pool and it never returned (240 s at 0% of the sweep); it takes about 20 s."""
    environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    environ.update(TRAINDYN_CPU_DEVICES="2", TRAINDYN_COMPILATION_CACHE="off",
                   JAX_PLATFORMS="cpu")
    main = ("import sys; from experiments.cli import main; "
            "sys.exit(main(['run', 'lazy-rich', '--preset', 'quick', '--out', sys.argv[1]]))")
    subprocess.run([sys.executable, "-c", main, str(tmp_path)], env=environ,
                   capture_output=True, text=True, check=True, timeout=600)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"], summary
