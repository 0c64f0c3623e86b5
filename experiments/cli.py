"""The ``traindyn`` command line: ``list``, ``run NAME``, ``bench NAME``."""

from __future__ import annotations

import argparse
import json
import sys

BENCHMARKS = {"sweep": "experiments.bench_sweep", "curvature": "experiments.bench_curvature",
              "ntk": "experiments.bench_ntk", "dmft": "experiments.bench_dmft"}


def _list(args) -> int:
    from experiments import EXPERIMENTS, get

    for name in EXPERIMENTS:
        module = get(name)
        print(f"{name:12s} {module.TITLE}  (presets: {', '.join(module.PRESETS)})")
    return 0


def _run(args) -> int:
    from experiments import get
    from experiments.common import execute

    module = get(args.name)
    summary = execute(module, preset=args.preset, out=args.out)
    for claim in summary["claims"]:
        mark = "PASS" if claim["passed"] else "FAIL"
        print(f"[{mark}] {claim['name']}: measured {claim['measured']:.4g}, "
              f"target {claim['relation']} {claim['target']:.4g}"
              + (f" ± {claim['tolerance']:.3g}" if claim["relation"] == "within" else ""))
    out = args.out or f"results/{module.NAME}"
    print(f"{module.NAME} ({args.preset}) in {summary['seconds']:.1f} s -> {out}/"
          "{results.nc, figure.png, summary.json}")
    return 0 if summary["passed"] else 1


def _bench(args) -> int:
    import importlib

    if args.name not in BENCHMARKS:
        print(f"unknown benchmark {args.name!r}; known: {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[args.name])
    result = module.main(quick=args.quick, seed=args.seed)
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="traindyn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments").set_defaults(func=_list)
    p = sub.add_parser("run", help="run an experiment and check its claims")
    p.add_argument("name")
    p.add_argument("--preset", default="quick", choices=["quick", "full"])
    p.add_argument("--out", default=None, help="output folder (default results/NAME)")
    p.set_defaults(func=_run)
    p = sub.add_parser("bench", help="run a benchmark; JSON on stdout (and --out)")
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"traindyn: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
