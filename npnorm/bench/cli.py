"""The options of `npnorm bench` (also ``python -m npnorm.bench``) and the run they ask for."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from .._outputs import OutputError, check_output, writing
from .engine_rows import ENGINE
from .norm_rows import IMPLS, NORMS, OPS, QUICK_SHAPES, SHAPES
from .report import format_table
from .suite import run, torch_available
from .timing import QUICK_REPS


def _comma_list(choices: tuple[str, ...] | list[str], what: str) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        if text.strip() == "all":
            return list(choices)
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(map(repr, bad)) or repr(text)}; choose from {', '.join(choices)}"
            )
        return list(dict.fromkeys(items))  # drop repeats, keep order

    return parse


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """'8192x1024,64x64' -> [(8192, 1024), (64, 64)]; anything else is an argparse error."""
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(
                f"bad shape {item.strip()!r} in {text!r}: expected ROWSxH with positive integers, e.g. 8192x1024,64x64"
            )
        shapes.append((int(parts[0]), int(parts[1])))
    return list(dict.fromkeys(shapes))


DESCRIPTION = (
    "time the norms (numba, numpy, torch) side by side, as ms and as a share of copy bandwidth, "
    "then the engine (training steps and per-op overhead, npnorm vs torch), then start-up (import, first call, "
    "cold compile)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `npnorm bench`, shared by the CLI subcommand and `python -m npnorm.bench`."""
    default_shapes = ",".join(f"{n}x{h}" for n, h in SHAPES)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_REPS} reps, shapes {','.join(f'{n}x{h}' for n, h in QUICK_SHAPES)} unless --shapes",
    )
    parser.add_argument("--shapes", type=parse_shapes, help=f"ROWSxH,... (default {default_shapes})")
    parser.add_argument(
        "--ops", type=_comma_list(tuple(OPS), "op"), default=list(OPS), help=f"all, or of {','.join(OPS)} (default all)"
    )
    parser.add_argument(
        "--impls",
        type=_comma_list(IMPLS, "impl"),
        help=f"all, or of {','.join(IMPLS)} (default all; torch only if it can be imported)",
    )
    parser.add_argument(
        "--norms",
        type=_comma_list(tuple(NORMS), "norm"),
        default=list(NORMS),
        help=f"all, or of {','.join(NORMS)} (default all)",
    )
    rows = parser.add_mutually_exclusive_group()
    rows.add_argument(
        "--engine",
        nargs="?",
        const=list(ENGINE),
        type=_comma_list(tuple(ENGINE), "engine case"),
        metavar="CASES",
        help=f"only the engine rows: all (also with no value), or CASES of {','.join(ENGINE)} (the norm options "
        "are then ignored)",
    )
    rows.add_argument("--no-engine", action="store_true", help="only the norm rows")
    rows.add_argument(
        "--startup",
        action="store_true",
        help="only the start-up rows: import time, first call with a warm cache and, unless --quick, compiling "
        "every kernel into an empty cache (the full run includes them; --quick leaves them out)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the records and metadata as JSON")


def run_from_args(args: argparse.Namespace) -> int:
    shapes = args.shapes or list(QUICK_SHAPES if args.quick else SHAPES)
    impls = args.impls or list(IMPLS)
    if "torch" in impls and not torch_available():
        if args.impls:  # asked for by name: say why it is missing
            print("npnorm bench: torch cannot be imported; skipping impl torch", file=sys.stderr)
        impls = [impl for impl in impls if impl != "torch"]
    norms = [] if args.engine or args.startup else args.norms
    engine = [] if args.startup else args.engine or ([] if args.no_engine else list(ENGINE))
    everything = not (args.quick or args.engine or args.no_engine)
    startup = ("warm" if args.quick else "all") if args.startup or everything else None
    if not impls and norms:
        print("npnorm bench: no implementation left to run", file=sys.stderr)
        return 2
    one_row = [f"{n}x{h}" for n, h in shapes if n < 2]
    if "batch_norm" in norms and one_row:  # its training statistics need two values per channel
        print(
            f"npnorm bench: error: batch_norm needs at least 2 rows, got --shapes {','.join(one_row)}; "
            "leave it out with --norms, or give more rows",
            file=sys.stderr,
        )
        return 2
    check_output(args.json, "--json")  # before minutes of timing, not after
    result = run(norms, shapes, args.ops, impls, quick=args.quick, engine=engine, startup=startup)
    print(format_table(result))
    if args.json:
        with writing(args.json, "--json"), open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m npnorm.bench``: the same run as `npnorm bench`, with the same checks before it."""
    from ..cli import refuse_bad_impl_setting

    parser = argparse.ArgumentParser(prog="npnorm bench", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if refuse_bad_impl_setting("bench"):
        return 2
    try:
        return run_from_args(args)
    except OutputError as exc:  # as `npnorm bench` reports it
        print(f"npnorm bench: error: {exc}", file=sys.stderr)
        return 1
