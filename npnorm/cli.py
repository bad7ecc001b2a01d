"""The `npnorm` command (also `python -m npnorm`)."""

from __future__ import annotations

import argparse
import os
import sys

from ._outputs import OutputError, check_output, writing


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npnorm",
        description="npnorm: layer normalization and its siblings, derived, checked and run on the CPU.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    _add_demo(sub)
    _add_train(sub)
    _add_reproduce(sub)

    check = sub.add_parser("check", help="gradcheck every norm in every implementation; non-zero exit on any failure")
    from .checks import CASES

    norms = sorted({case.norm for case in CASES})
    check.add_argument("--norm", action="append", choices=norms, help="only this norm (repeatable)")
    check.add_argument("--impl", action="append", choices=["numba", "numpy", "composed"], help="only this impl")
    check.set_defaults(run=_run_check)

    warmup = sub.add_parser(
        "warmup",
        help="compile every Numba kernel now, into the on-disk cache",
        description="Call every norm forward and backward with impl='numba' on small inputs that reach the serial "
        "and the parallel kernels, in float32 and float64, so that every kernel is compiled and cached on disk; "
        "later processes then load them instead of compiling on their first call.",
    )
    warmup.add_argument(
        "--dtype", action="append", choices=["float32", "float64"], help="only this dtype (repeatable; default: both)"
    )
    warmup.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="processes compiling at once, at most (default: as many as finish soonest, at most one per CPU)",
    )
    warmup.set_defaults(run=_run_warmup)

    from . import bench  # cheap: numba and torch are imported only when the benchmark runs

    bench_parser = sub.add_parser("bench", help=bench.DESCRIPTION, description=bench.DESCRIPTION)
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(run=_run_bench)
    return parser


def _run_check(args) -> int:
    from .checks import run_checks

    return 0 if run_checks(norms=args.norm, impls=args.impl) else 1


def _run_warmup(args) -> int:
    from .warmup import DTYPES, WarmupError, jit_disabled, plain_compile_errors, warmup

    plain_compile_errors()  # this process only warms up (see there)

    if jit_disabled():
        print("npnorm warmup: the JIT is off (NUMBA_DISABLE_JIT): the kernels run as plain Python, nothing to compile")
        return 0
    dtypes = list(dict.fromkeys(args.dtype or DTYPES))
    print(f"npnorm warmup: compiling every kernel for {', '.join(dtypes)} (loaded from the cache if already there)")
    try:
        result = warmup(dtypes=dtypes, jobs=args.jobs, require_cache=True)
    except WarmupError as exc:
        print(f"npnorm warmup: error: {exc}", file=sys.stderr)
        return 1
    print(f"done in {result['seconds']:.1f} s ({result['jobs']} process{'es' if result['jobs'] > 1 else ''})")
    return 0


# ------------------------------------------------------------------------ demo and train: the experiments

DEFAULT_OUT = "npnorm-out"


class UsageError(ValueError):
    """Options that argparse accepts one by one but that cannot go together: exit code 2, as argparse's."""


def _one_line_errors() -> tuple:
    """Errors whose message says everything: printed as one line, exit code 1, no traceback."""
    from .data import MissingExtraError
    from .experiments import NonFiniteLossError

    return (MissingExtraError, NonFiniteLossError, OutputError)


def _int_at_least(minimum: int, words: str):
    """An argparse type: an integer >= minimum, else a one-line error saying what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_seed = _int_at_least(0, "a non-negative integer")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _add_demo(sub) -> None:
    description = (
        "The main job, in under a minute: gradcheck every norm on every implementation, then train a "
        "LayerNorm MLP (64-256-256-10) on scikit-learn's digits with a progress bar, print its test accuracy "
        "and write a loss-curve PNG. Exits 1 if a gradient check fails."
    )
    demo = sub.add_parser(
        "demo", help="gradcheck every norm, then train a LayerNorm MLP on digits", description=description
    )
    demo.add_argument(
        "--out", default=DEFAULT_OUT, metavar="DIR", help="folder for the loss-curve PNG (default: ./%(default)s)"
    )
    demo.add_argument("--seed", type=_seed, default=0, help="seed of the weights and batch order (default: 0)")
    demo.add_argument("--epochs", type=_positive_int, default=None, help="training epochs (default: 20)")
    demo.add_argument("--skip-checks", action="store_true", help="skip the gradient-check table")
    demo.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # a tiny model, for the tests
    demo.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    import os
    import time

    from .checks import run_checks
    from .data import require
    from .experiments import run_demo
    from .plots import plot_training

    require("sklearn", "npnorm demo")  # fail now, not after the checks
    require("matplotlib", "npnorm demo")
    check_output(args.out, "--out", folder=True)
    checks_ok = True
    if not args.skip_checks:
        print("npnorm demo 1/2: every norm's analytic gradient against finite differences (float64)\n")
        checks_ok = run_checks()
        print()
    print("npnorm demo 2/2: a LayerNorm MLP on scikit-learn's digits (LN on the hidden layers, Adam)")
    start = time.perf_counter()
    history = run_demo(seed=args.seed, epochs=args.epochs, quick=args.quick)
    elapsed = time.perf_counter() - start
    cfg = history["config"]
    accuracy = 1 - history["test_error"][-1]
    right = round(accuracy * cfg["n_test"])
    print(
        f"model 64-{cfg['hidden']}-{cfg['hidden']}-10, {cfg['n_train']} training images, batch {cfg['batch_size']}, "
        f"{cfg['epochs']} epochs, seed {cfg['seed']}: {elapsed:.1f}s"
    )
    print(f"final training loss {history['train_loss'][-1]:.4f}, test loss {history['test_loss'][-1]:.4f}")
    print(f"test accuracy: {100 * accuracy:.1f}% ({right}/{cfg['n_test']})")
    title = f"LayerNorm MLP 64-{cfg['hidden']}-{cfg['hidden']}-10 on digits (seed {cfg['seed']})"
    with writing(args.out, "--out"):
        path = plot_training(history, os.path.join(args.out, "demo_loss.png"), title=title)
    print(f"loss curve: {path}")
    if not checks_ok:
        print("npnorm demo: error: some gradient checks FAILED (see the table above)", file=sys.stderr)
        return 1
    return 0


def _add_train(sub) -> None:
    from .experiments import mlp as mlp_preset
    from .experiments import variants as variants_preset
    from .experiments.mlp import NORMS

    train = sub.add_parser(
        "train",
        help="run an experiment: mlp (batch size, Ba et al.), rnn (recurrent, Ba et al.) or variants (Xu et al.)",
        description="Run one of the reproducible experiments; --seed makes a run repeatable to the last digit.",
    )
    tasks = train.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True

    mlp = tasks.add_parser(
        "mlp",
        help="Ba et al. 2016 §6.6: no norm / BatchNorm / LayerNorm at batch sizes 128 and 4",
        description="Ba et al. 2016 §6.6 at toy scale: an MLP 64-H-H-10 on digits, the norm on the hidden layers "
        "(not on the logits), Adam; training NLL and test error per epoch for each norm and batch size, "
        "mean and min..max over several seeds.",
    )
    _train_arguments(mlp, NORMS, "none, batch and layer", mlp_preset.DEFAULTS)
    mlp.add_argument(
        "--batch-size", type=_positive_int, action="append", help="mini-batch size (repeatable; default: 128 and 4)"
    )
    mlp.add_argument("--hidden", type=_positive_int, default=None, help="width H of the hidden layers (default: 256)")
    mlp.set_defaults(run=_run_train_mlp)

    variants = tasks.add_parser(
        "variants",
        help="Xu et al. 2019: LayerNorm, LayerNorm-simple, DetachNorm, AdaNorm, no norm",
        description="Xu et al. 2019 at toy scale: a 6-hidden-layer MLP on digits with each LayerNorm variant; "
        "training vs test loss, and the mean and variance of dL/d(norm input) per layer.",
    )
    _train_arguments(variants, NORMS, ", ".join(variants_preset.VARIANTS), variants_preset.DEFAULTS)
    variants.add_argument("--batch-size", type=_positive_int, default=32, help="mini-batch size (default: 32)")
    variants.add_argument("--hidden", type=_positive_int, default=None, help="width of each hidden layer (default: 64)")
    variants.set_defaults(run=_run_train_variants)

    _add_train_rnn(tasks)


def _train_arguments(parser, norms, default_norms: str, defaults: dict) -> None:
    parser.add_argument(
        "--norm",
        action="append",
        choices=list(norms),
        metavar="NORM",
        help=f"normalization to train with (repeatable; one of {', '.join(norms)}; default: {default_norms})",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=None, help=f"epochs per run (default: {defaults['epochs']})"
    )
    parser.add_argument(
        "--seeds", type=_positive_int, default=None, help=f"seeds per setting (default: {defaults['seeds']})"
    )
    parser.add_argument("--seed", type=_seed, default=0, help="the first seed (default: 0)")
    parser.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam's learning rate (default: 0.001)")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of the curves here")
    parser.add_argument("--json", metavar="PATH", help="write every number as JSON here")
    parser.add_argument("--quick", action="store_true", help="a tiny run that takes seconds (for a smoke test)")


def _run_train_mlp(args) -> int:
    from .experiments.mlp import run_batch_size

    norms, batch_sizes = args.norm or ["none", "batch", "layer"], args.batch_size or [128, 4]
    _check_batch_norm_batch_size(norms, batch_sizes)
    _check_outputs(args)
    result = run_batch_size(
        norms,
        batch_sizes,
        epochs=args.epochs,
        seeds=args.seeds,
        seed=args.seed,
        hidden=args.hidden,
        lr=args.lr,
        quick=args.quick,
    )
    _print_batch_size(result)
    return _write_outputs(args, result, "plot_batch_size")


def _run_train_variants(args) -> int:
    from .experiments.variants import VARIANTS, run_variants

    _check_batch_norm_batch_size(args.norm or VARIANTS, [args.batch_size])
    _check_outputs(args)
    result = run_variants(
        args.norm or VARIANTS,
        epochs=args.epochs,
        seeds=args.seeds,
        seed=args.seed,
        hidden=args.hidden,
        batch_size=args.batch_size,
        lr=args.lr,
        quick=args.quick,
    )
    _print_variants(result)
    return _write_outputs(args, result, "plot_variants")


def _add_train_rnn(tasks) -> None:
    from .experiments import recurrent as rnn_preset

    rnn = tasks.add_parser(
        "rnn",
        help="Ba et al. 2016: LSTM/GRU vs LN-LSTM/LN-GRU on digit rows, permuted pixels, the adding problem",
        description="Ba et al. 2016 §3 and §6 at toy scale: one-layer LSTMs and GRUs with and without layer "
        "normalization on digits by rows (8 steps), permuted pixel digits (64 steps) and the adding problem; "
        "Adam, clipped gradients; the training loss per step, steps to a target, the final test accuracy or "
        "MSE, over several seeds.",
    )
    rnn_defaults = rnn_preset.DEFAULTS
    # dest "tasks", not "task": the subparsers above keep the chosen experiment under "task"
    rnn.add_argument(
        "--task", dest="tasks", action="append", choices=rnn_preset.TASKS, help="task (repeatable; default: all)"
    )
    rnn.add_argument(
        "--model", dest="models", action="append", choices=rnn_preset.MODELS, help="model (repeatable; default: all)"
    )
    rnn.add_argument(
        "--steps", type=_positive_int, default=None, help=f"Adam steps per run (default: {rnn_defaults['steps']})"
    )
    rnn.add_argument(
        "--seeds", type=_positive_int, default=None, help=f"seeds per setting (default: {rnn_defaults['seeds']})"
    )
    rnn.add_argument("--seed", type=_seed, default=0, help="the first seed (default: 0)")
    rnn.add_argument(
        "--hidden", type=_positive_int, default=None, help=f"hidden units H (default: {rnn_defaults['hidden']})"
    )
    rnn.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help=f"mini-batch size (default: {rnn_defaults['batch_size']})",
    )
    rnn.add_argument(
        "--length",
        type=_int_at_least(2, "an integer >= 2"),
        default=None,
        help=f"length T of the adding problem's sequences (default: {rnn_defaults['adding_length']})",
    )
    rnn.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam's learning rate (default: 0.001)")
    rnn.add_argument("--plot", metavar="PATH", help="write a PNG of the curves here")
    rnn.add_argument("--json", metavar="PATH", help="write every number as JSON here")
    rnn.add_argument("--quick", action="store_true", help="a tiny run that takes seconds (for a smoke test)")
    rnn.set_defaults(run=_run_train_rnn)


def _run_train_rnn(args) -> int:
    from .experiments.recurrent import MODELS, TASKS, format_summary, plot_recurrent, run_recurrent

    _check_outputs(args)
    result = run_recurrent(
        args.tasks or TASKS,
        args.models or MODELS,
        steps=args.steps,
        seeds=args.seeds,
        seed=args.seed,
        hidden=args.hidden,
        batch_size=args.batch_size,
        lr=args.lr,
        adding_length=args.length,
        quick=args.quick,
    )
    print(format_summary(result))
    return _write_outputs(args, result, plot_recurrent)


def _add_reproduce(sub) -> None:
    description = (
        "Run the three experiments (batch size and recurrent, Ba et al. 2016; variants, Xu et al. 2019) and write "
        "DIR/results.md with tables, verdicts against the papers and PNG plots in DIR/img. About 4 minutes on 2 cores."
    )
    repro = sub.add_parser(
        "reproduce", help="run every experiment; write results.md and its plots", description=description
    )
    repro.add_argument("--out", default="docs", metavar="DIR", help="folder for results.md and img/ (default: ./docs)")
    repro.add_argument("--quick", action="store_true", help="a tiny run that takes seconds (its numbers judge nothing)")
    repro.set_defaults(run=_run_reproduce)


def _run_reproduce(args) -> int:
    from .data import require
    from .experiments.reproduce import reproduce

    require("sklearn", "npnorm reproduce")  # fail now, not after minutes of training
    require("matplotlib", "npnorm reproduce")
    check_output(args.out, "--out", folder=True)
    command = "npnorm reproduce" + (" --quick" if args.quick else "") + (f" --out {args.out}" * (args.out != "docs"))
    with writing(args.out, "--out"):
        out = reproduce(quick=args.quick, out_dir=args.out, command=command)
    print(f"results: {out['markdown']} ({sum(out['seconds'].values()) / 60:.1f} min)")
    print(f"plots: {', '.join(out['images'].values())}")
    return 0


def _check_batch_norm_batch_size(norms, batch_sizes) -> None:
    """BatchNorm trains on batch statistics, which one sample does not have: refuse before any run starts."""
    if "batch" in norms and 1 in batch_sizes:
        raise UsageError("--norm batch needs a --batch-size of at least 2 (a batch of one has no statistics)")


def _check_outputs(args) -> None:
    from .plots import check_plot_path

    check_output(args.json, "--json")
    if args.plot:
        check_plot_path(args.plot)


def _write_outputs(args, result: dict, plot_name) -> int:
    import json

    from . import __version__, plots

    if args.json:
        payload = {"npnorm": __version__, **result}
        with writing(args.json, "--json"), open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1, allow_nan=False)
            f.write("\n")
        print(f"results: {args.json}")
    if args.plot:
        with writing(args.plot, "--plot"):
            plot = getattr(plots, plot_name) if isinstance(plot_name, str) else plot_name  # a name or a function
            print(f"plot: {plot(result, args.plot)}")
    return 0


def _spread(curve: dict, i: int, scale: float = 1.0, fmt: str = ".3f") -> str:
    m, lo, hi = (scale * curve[k][i] for k in ("mean", "min", "max"))
    return f"{m:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _print_batch_size(result: dict) -> None:
    cfg = result["config"]
    print(
        f"\n{cfg['model']}; {cfg['optimizer']}; {cfg['epochs']} epochs; seeds {cfg['seeds']}; "
        f"{cfg['n_train']} training / {cfg['n_test']} test images. Mean [min, max] over seeds:"
    )
    print(
        f"{'norm':<6} {'batch':>5}  {'training NLL, epoch 1':<24} {'training NLL, last':<24} {'test error %, last':<22}"
    )
    for s in result["summary"].values():
        print(
            f"{s['norm']:<6} {s['batch_size']:>5}  {_spread(s['train_loss'], 0):<24} "
            f"{_spread(s['train_loss'], -1, fmt='.4f'):<24} {_spread(s['test_error'], -1, 100, '.1f'):<22}"
        )


def _print_variants(result: dict) -> None:
    from .experiments.variants import LABELS

    cfg = result["config"]
    print(f"\n{cfg['model']}; {cfg['optimizer']}; {cfg['epochs']} epochs; seeds {cfg['seeds']}. Mean over seeds:")
    print(
        f"{'variant':<31} {'train loss':>10} {'test loss':>9} {'best test':>9} {'test err':>8}  "
        f"{'max |mean dx|/rms':>17}  Var(dx) by layer (first..last)"
    )
    for variant, s in result["summary"].items():
        f, g = s["final"], s["grad_stats"]
        print(
            f"{LABELS.get(variant, variant):<31} {f['train_loss']:>10.4f} {f['test_loss']:>9.4f} "
            f"{f['best_test_loss']:>9.4f} {100 * f['test_error']:>7.1f}%  {max(x['rel_mean'] for x in g):>17.1e}  "
            + " ".join(f"{x['var']:.1e}" for x in g)
        )
    if result["same_point"]:
        print("\nThe trained LayerNorm model, same weights and batch, with backward terms switched off:")
        print(f"{'backward':<12} {'max |mean dx|/rms':>17}  Var(dx) by layer (first..last)")
        for name, g in result["same_point"].items():
            print(f"{name:<12} {max(x['rel_mean'] for x in g):>17.1e}  " + " ".join(f"{x['var']:.1e}" for x in g))


def _run_bench(args) -> int:
    from .bench import run_from_args

    return run_from_args(args)


def refuse_bad_impl_setting(command: str) -> bool:
    """Say so and return True when NPNORM_IMPL names no implementation: every norm call would raise it, so
    say it once, before any work."""
    from .norms import IMPLS

    env_impl = os.environ.get("NPNORM_IMPL")
    if env_impl and env_impl not in IMPLS:
        choices = ", ".join(IMPLS)
        print(f"npnorm {command}: error: NPNORM_IMPL must be one of {choices}, got {env_impl!r}", file=sys.stderr)
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if refuse_bad_impl_setting(args.command):
        return 2
    try:
        code = args.run(args)
        if sys.stdout is not None:  # None when started with stdout closed (print then writes nothing)
            sys.stdout.flush()  # here, where a closed pipe is caught below, not at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        print(f"npnorm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except _one_line_errors() as exc:  # a missing optional package, a diverged run: the message is the story
        print(f"npnorm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (npnorm check | head -1): stop quietly, as other commands do. Python would
        # try to flush stdout again at exit and print a second error; point it at devnull first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
