"""The `npnorm` command (also `python -m npnorm`)."""

from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npnorm",
        description="npnorm: layer normalization and its siblings, derived, checked and run on the CPU.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="the main job: gradcheck every norm on every impl")
    demo.set_defaults(run=_run_demo)

    check = sub.add_parser("check", help="gradcheck every op and norm; non-zero exit on any failure")
    check.add_argument("--norm", action="append", help="only this norm (repeatable)")
    check.add_argument("--impl", action="append", choices=["numba", "numpy", "composed"], help="only this impl")
    check.set_defaults(run=_run_check)

    from . import bench  # cheap: numba and torch are imported only when the benchmark runs

    bench_parser = sub.add_parser("bench", help=bench.DESCRIPTION, description=bench.DESCRIPTION)
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(run=_run_bench)
    return parser


def _run_check(args) -> int:
    from .checks import run_checks

    return 0 if run_checks(norms=args.norm, impls=args.impl) else 1


def _run_demo(args) -> int:
    from .checks import run_checks

    print("npnorm demo: every norm's analytic gradient against finite differences (float64)\n")
    return 0 if run_checks() else 1


def _run_bench(args) -> int:
    from .bench import run_from_args

    return run_from_args(args)


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
