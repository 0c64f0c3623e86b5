"""The traindyn command line: list, run NAME, bench NAME."""

from __future__ import annotations

import argparse
import json
import sys

from experiments.bench import BENCHMARKS

DESCRIPTION = """\
traindyn reproduces results of deep-learning theory and checks their claims.

  traindyn list                       the experiments and their expected running times
  traindyn run NAME [--preset full]   run one, check its claims, write results
  traindyn bench NAME                 a benchmark; JSON on stdout
"""



class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose epilog may be a function, called only when the help is
    shown (the table of experiments imports every experiment module)."""

    def format_help(self):
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


def duration(module, preset: str) -> str:
    """The expected running time of ``module``'s ``preset`` (its ``SECONDS``), in words."""
    seconds = getattr(module, "SECONDS", {}).get(preset)
    if seconds is None:
        return "not measured"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def experiments_table() -> str:
    """One aligned line per experiment: name, expected time of each preset, title."""
    from experiments import EXPERIMENTS, get

    modules = {name: get(name) for name in EXPERIMENTS}
    width = max(map(len, modules))
    lines = [f"  {'name':<{width}}  {'quick':>12}  {'full':>12}  title"]
    for name, module in modules.items():
        lines.append(f"  {name:<{width}}  {duration(module, 'quick'):>12}  "
                     f"{duration(module, 'full'):>12}  {module.TITLE}")
    return "\n".join(lines)


def _run_epilog() -> str:
    return ("experiments (expected running time on 2 CPU cores; a GPU is faster):\n"
            + experiments_table()
            + "\n\nquick: a small version of the result, its claims checked in about a "
              "minute;\nfull: the figure of the paper.")


def _list(args) -> int:
    print(experiments_table())
    return 0


def _run(args) -> int:
    import pathlib

    from experiments import get
    from experiments.common import check_writable, execute

    module = get(args.name)
    out = args.out or f"results/{module.NAME}"
    check_writable(pathlib.Path(out))
    expected = duration(module, args.preset)
    print(f"{module.NAME} ({args.preset}): "
          + ("running time not measured yet" if expected == "not measured" else
             f"expected running time about {expected} on 2 CPU cores"), flush=True)
    summary = execute(module, preset=args.preset, out=out)
    for claim in summary["claims"]:
        mark = "PASS" if claim["passed"] else "FAIL"
        print(f"[{mark}] {claim['name']}: measured {claim['measured']:.4g}, "
              f"target {claim['relation']} {claim['target']:.4g}"
              + (f" ± {claim['tolerance']:.3g}" if claim["relation"] == "within" else ""))
    print(f"{module.NAME} ({args.preset}) in {summary['seconds']:.1f} s -> {out}/"
          "{results.nc, figure.png, summary.json}")
    return 0 if summary["passed"] else 1


def _bench(args) -> int:
    import importlib

    from experiments import unknown_name

    if args.name not in BENCHMARKS:
        raise unknown_name("benchmark", args.name, BENCHMARKS)
    module = importlib.import_module(BENCHMARKS[args.name])
    result = module.main(quick=args.quick, seed=args.seed)
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    parser = _Parser(prog="traindyn", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,run,bench}")
    sub.add_parser("list", help="list the experiments and their expected running times",
                   description="List the experiments and their expected running times."
                   ).set_defaults(func=_list)
    p = sub.add_parser("run", help="run an experiment and check its claims",
                       description="Run an experiment, check its claims and write "
                                   "results.nc, figure.png and summary.json to --out.",
                       epilog=_run_epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="the experiment (see below)")
    p.add_argument("--preset", default="quick", choices=["quick", "full"],
                   help="quick (default) or full")
    p.add_argument("--out", default=None, help="output folder (default results/NAME)")
    p.set_defaults(func=_run)
    p = sub.add_parser("bench", help="run a benchmark; JSON on stdout (and --out)",
                       description="Run a benchmark (seeded); its JSON goes to stdout and "
                                   "--out.")
    p.add_argument("name", help=f"one of {', '.join(sorted(BENCHMARKS))}")
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:
        print(f"traindyn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("traindyn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
