"""The benchmarks behind ``traindyn bench NAME``: one module each (``sweep``,
``curvature``, ``ntk``, ``dmft``, and ``gpu``, which gathers their accelerator figures), a ``main(quick, seed) -> dict`` that returns JSON-able
results, and the timing they share (``timing``). Speed is reported as ratios taken in one
run, on the same machine, with the compile (first) call timed apart."""

BENCHMARKS = {name: f"experiments.bench.{name}"
              for name in ("sweep", "curvature", "ntk", "dmft", "gpu")}
