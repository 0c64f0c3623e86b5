"""Reproduced results, one module each, and the ``traindyn`` command line.

Every experiment module defines ``NAME``, ``TITLE``, ``PRESETS`` (``"quick"``: under a
minute on 2 CPU cores; ``"full"``: the figure of the paper), ``SECONDS`` (each preset's
measured running time on 2 CPU cores, ``None`` where not measured; ``traindyn list`` and
``traindyn run`` show it), ``run(**preset) -> Dataset``,
``check(ds) -> list[Claim]`` and ``plot(ds, path)``; ``experiments.common.execute`` runs
one and writes ``results.nc``, ``figure.png`` and ``summary.json``.
"""

import difflib
import importlib

EXPERIMENTS = {
    "lazy-rich": "experiments.lazy_rich",
    "saxe": "experiments.saxe",
    "ntk-convergence": "experiments.ntk_convergence",
    "wide-linear": "experiments.wide_linear",
    "edge-of-stability": "experiments.edge_of_stability",
    "adaptive-edge-of-stability": "experiments.adaptive_edge_of_stability",
    "sgd-stability": "experiments.sgd_stability",
    "batch-hessian": "experiments.batch_hessian",
    "hessian-outliers": "experiments.hessian_outliers",
    "tiny-subspace": "experiments.tiny_subspace",
    "grokking": "experiments.grokking",
    "dmft-kernels": "experiments.dmft_kernels",
    "mup-transfer": "experiments.mup_transfer",
    "residual-depth": "experiments.residual_depth",
    "softmax-collapse": "experiments.softmax_collapse",
    "small-scale-proxies": "experiments.small_scale_proxies",
    "opposing-signals": "experiments.opposing_signals",
    "generalization-dynamics": "experiments.generalization_dynamics",
    "criticality": "experiments.criticality",
    "neural-collapse": "experiments.neural_collapse",
    "rich-lazy-rank": "experiments.rich_lazy_rank",
    "more-is-better": "experiments.more_is_better",
    "grokking-corrupted": "experiments.grokking_corrupted",
    "river-valley": "experiments.river_valley",
    "grokking-scaling": "experiments.grokking_scaling",
}


def unknown_name(kind: str, name: str, known) -> ValueError:
    """The error for a ``name`` that is not in ``known``, suggesting the closest."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})")


def get(name: str):
    if name not in EXPERIMENTS:
        raise unknown_name("experiment", name, EXPERIMENTS)
    return importlib.import_module(EXPERIMENTS[name])
