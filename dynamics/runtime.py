"""What traindyn sets up in the process when it is imported: one CPU device per core, and
compiled programs cached on disk.

* **One CPU device per core.** XLA's CPU backend is one device, which runs a program on
  every core through its own thread pool; small programs (the steps of a sweep's runs)
  cannot keep more than one core busy that way. traindyn therefore adds
  ``--xla_force_host_platform_device_count=<cores>`` to ``XLA_FLAGS`` before JAX starts
  its backends, and a sweep's runs are spread over the devices (``dynamics.planning``
  places a ``vmap`` part's runs on a mesh over them, or the single runs of the ``loop``
  strategy on the devices in turn); a single large program (one run, a DMFT solve) still
  uses every core through the pool (one DMFT iteration at ``T = 20``, ``S = 1000``: 0.78 s
  with two devices, 0.88 s with one). ``TRAINDYN_CPU_DEVICES=<n>`` asks for ``n`` devices
  instead (``1``: XLA's single device; ``cores``, the default: one per core). A device
  count already in the user's ``XLA_FLAGS`` is kept, and nothing changes once JAX's
  backends have started (import traindyn first). Accelerator devices are not affected.
  Measured on 2 cores (``traindyn bench sweep``): a 32-run sweep of width-256 MLPs is
  1.51x a loop of single runs with two devices, 1.03x with one.
  With jaxlib 0.10.2 a batched LAPACK call (``jnp.linalg.eigvalsh`` of 12 runs per
  device, as the kernel observables of the main job make) splits its batch over XLA's
  intra-op thread pool and waits for it from a thread of that pool; with every pool
  thread running one device's program inside such a call, nothing is left to run the
  split work and the process hangs, every thread idle (seen in gdb: each ``tf_XLAEigen``
  thread in ``lapack_ssyevd_ffi``, waiting in ``jax::ParallelBatchMap``). The engine's
  LAPACK calls inside runs (Lanczos' and the kernel observables' eigensolvers, Hutch++'s
  QR, the low-rank SVD and QR, neural collapse's pseudo-inverse) therefore go through
  ``unbatched_lapack`` (``tests/test_runtime.py`` checks Hutch++'s and neural
  collapse's lowered programs for batched LAPACK calls).
* **The persistent compilation cache.** JAX's cache of compiled programs on disk
  (``jax_compilation_cache_dir``), so that a second process running the same programs
  loads them instead of compiling; with the data as program arguments
  (``dynamics.loop``), a new dataset of the same shapes hits the cache too. Directory:
  ``$TRAINDYN_COMPILATION_CACHE``, default ``$XDG_CACHE_HOME/traindyn/jax`` (or
  ``~/.cache/traindyn/jax``); ``TRAINDYN_COMPILATION_CACHE=off`` turns it off. A cache
  directory the user configured in JAX is left as it is. Programs that compile in under
  ``MIN_COMPILE_SECONDS`` are not written (they are cheaper to compile than to load).
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.custom_batching

DEVICE_FLAG = "--xla_force_host_platform_device_count"
MIN_COMPILE_SECONDS = 0.2


def _backends_started() -> bool:
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def with_cpu_devices(flags: str, count: int) -> str:
    """``XLA_FLAGS`` text with its CPU device count set to ``count`` (for a child process)."""
    kept = [f for f in flags.split() if not f.startswith(DEVICE_FLAG)]
    return " ".join(kept + [f"{DEVICE_FLAG}={count}"])


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_devices(environ=os.environ) -> int | None:
    """Add one CPU device per core, or as many as ``TRAINDYN_CPU_DEVICES`` asks for, to
    ``XLA_FLAGS`` (module doc); returns the count set, or None when nothing was changed."""
    wanted = environ.get("TRAINDYN_CPU_DEVICES", "").strip().lower() or "cores"
    if wanted == "cores":
        count = cores()
    else:
        try:
            count = int(wanted)
        except ValueError:
            raise ValueError(f"TRAINDYN_CPU_DEVICES must be a positive integer or 'cores', "
                             f"got {wanted!r}") from None
        if count < 1:
            raise ValueError(f"TRAINDYN_CPU_DEVICES must be a positive integer or 'cores', "
                             f"got {wanted!r}")
    flags = environ.get("XLA_FLAGS", "")
    if DEVICE_FLAG in flags or count <= 1 or _backends_started():
        return None
    environ["XLA_FLAGS"] = f"{flags} {DEVICE_FLAG}={count}".strip()
    return count


def unbatched_lapack(fn):
    """``fn`` (a function of positional arrays that calls LAPACK, e.g.
    ``jnp.linalg.eigh``) whose ``vmap`` is a loop over the batch when the process has
    several CPU devices (the deadlock of batched LAPACK calls, module doc), and ``fn``
    itself otherwise. Decided when traced; the results are the same either way (one
    LAPACK call per matrix)."""
    if jax.default_backend() == "cpu" and jax.device_count() > 1:
        # through a lambda: sequential_vmap takes every parameter of ``fn`` for an array,
        # and ``jnp.linalg`` functions have keyword options (eigvalsh's UPLO="L")
        return jax.custom_batching.sequential_vmap(lambda *arrays: fn(*arrays))
    return fn


def cache_directory(environ=os.environ) -> pathlib.Path | None:
    setting = environ.get("TRAINDYN_COMPILATION_CACHE", "")
    if setting.lower() in ("off", "0", "false", "no", "none"):
        return None
    if setting:
        return pathlib.Path(setting).expanduser()
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "traindyn" / "jax"


def compilation_cache(environ=os.environ) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache (module doc); returns its directory."""
    if jax.config.jax_compilation_cache_dir:  # the user's own
        return pathlib.Path(jax.config.jax_compilation_cache_dir)
    directory = cache_directory(environ)
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache
        return None
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return directory


def setup() -> None:
    cpu_devices()
    compilation_cache()
