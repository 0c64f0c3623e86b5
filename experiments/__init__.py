"""Reproduced results, one module each, and the ``traindyn`` command line.

Every experiment module defines ``NAME``, ``TITLE``, ``PRESETS`` (``"quick"``: under a
minute on 2 CPU cores; ``"full"``: the figure of the paper), ``run(**preset) -> Dataset``,
``check(ds) -> list[Claim]`` and ``plot(ds, path)``; ``experiments.common.execute`` runs
one and writes ``results.nc``, ``figure.png`` and ``summary.json``.
"""

import importlib

EXPERIMENTS = {
    "lazy-rich": "experiments.lazy_rich",
    "saxe": "experiments.saxe",
    "ntk-convergence": "experiments.ntk_convergence",
    "wide-linear": "experiments.wide_linear",
    "edge-of-stability": "experiments.edge_of_stability",
    "sgd-stability": "experiments.sgd_stability",
    "batch-hessian": "experiments.batch_hessian",
    "hessian-outliers": "experiments.hessian_outliers",
    "grokking": "experiments.grokking",
    "dmft-kernels": "experiments.dmft_kernels",
}


def get(name: str):
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])
