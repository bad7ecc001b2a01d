"""`reproduce`: run the three experiments, write `results.md` with tables, verdicts and PNG plots.

    1. batch size    Ba et al. 2016 §6.6: no norm / BatchNorm / LayerNorm MLPs at batch 128 and 4   (mlp.py)
    2. recurrent     Ba et al. 2016 §3, §6: LSTM/GRU against LN-LSTM/LN-GRU, short and long sequences (recurrent.py)
    3. variants      Xu et al. 2019: LayerNorm, LayerNorm-simple, DetachNorm, AdaNorm                   (variants.py)

`reproduce(quick, out_dir)` writes `out_dir/results.md` and `out_dir/img/{batch_size,recurrent,variants}.png`
and returns every number it measured. Each verdict ("matches the paper", "does not match", "partly") is
computed from the measurements by the rule printed next to it, so the text says what this run measured,
whichever way it came out. The full run takes a few minutes on 2 cores; `quick=True` takes seconds and is
for tests (its numbers judge nothing).

Run:  python -m npnorm.experiments.reproduce [--quick] [--out docs]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time

import numpy as np

from .. import __version__
from ..plots import plot_batch_size, plot_variants
from .mlp import run_batch_size
from .recurrent import LABELS as RNN_LABELS
from .recurrent import format_spread, format_steps, plot_recurrent, run_recurrent
from .variants import LABELS as VARIANT_LABELS
from .variants import run_variants

SECTIONS = (
    "## 1. Batch size: LayerNorm vs BatchNorm (Ba et al. 2016, §6.6)",
    "## 2. Recurrent networks: LN-LSTM and LN-GRU (Ba et al. 2016, §3 and §6)",
    "## 3. What in LayerNorm matters (Xu et al. 2019)",
)
SHORT_NAMES = ("Ba et al. §6.6, batch size", "Ba et al. §3/§6, recurrent", "Xu et al., variants")
IMAGES = {"batch_size": "batch_size.png", "recurrent": "recurrent.png", "variants": "variants.png"}

# How far apart two test errors must be (in percentage points) before a verdict calls them different.
# With ~450 test images one image is 0.22 pp, and seeds alone move the error by about 0.5-1 pp.
SAME_ERROR_PP = 1.0


def reproduce(quick: bool = False, out_dir="docs", *, seed: int = 0, progress: bool | None = None, command=None):
    """Run the three experiments; write out_dir/results.md and its PNGs under out_dir/img. Returns a dict:
    {"markdown": path, "images": {name: path}, "seconds": {name: float}, "results": {name: result dict}}.

    `command` is the command line shown at the top of the file (default: the `python -m` form of this call).
    """
    out_dir = os.fspath(out_dir)
    img_dir = os.path.join(out_dir, "img")
    os.makedirs(img_dir, exist_ok=True)  # fail before the long run, not after it
    if command is None:
        command = f"python -m npnorm.experiments.reproduce{' --quick' if quick else ''} --out {out_dir}"
    experiments = {
        "batch_size": lambda: run_batch_size(quick=quick, seed=seed, progress=progress),
        "recurrent": lambda: run_recurrent(quick=quick, seed=seed, progress=progress),
        "variants": lambda: run_variants(quick=quick, seed=seed, progress=progress),
    }
    results, seconds = {}, {}
    for name, run in experiments.items():
        start = time.perf_counter()
        results[name] = run()
        seconds[name] = time.perf_counter() - start
    images = {
        "batch_size": plot_batch_size(results["batch_size"], os.path.join(img_dir, IMAGES["batch_size"])),
        "recurrent": plot_recurrent(results["recurrent"], os.path.join(img_dir, IMAGES["recurrent"])),
        "variants": plot_variants(results["variants"], os.path.join(img_dir, IMAGES["variants"])),
    }
    text = render(results, seconds, quick=quick, command=command)
    path = os.path.join(out_dir, "results.md")
    _write_atomically(path, text)
    return {"markdown": path, "images": images, "seconds": seconds, "results": results}


def _write_atomically(path: str, text: str) -> None:
    """Write a temporary file next to `path`, then rename it: a reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- rendering


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _blas() -> str:
    """The BLAS NumPy runs, with the kernels it picked for this CPU where threadpoolctl can tell: an OpenBLAS
    built for many CPUs chooses its kernels at start-up (e.g. "Haswell" or "SkylakeX"), and they round
    differently."""
    try:
        from threadpoolctl import threadpool_info

        blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
        # SciPy may bring a BLAS of its own; NumPy's (in numpy.libs/ for a wheel) does our products
        ours = [lib for lib in blas if "numpy" in os.path.basename(os.path.dirname(lib.get("filepath", "")))]
        if ours or blas:
            lib = (ours or blas)[0]
            name = f"{lib.get('internal_api', 'BLAS')} {lib.get('version') or ''}".strip()
            arch = lib.get("architecture")
            return f"{name} ({arch} kernels)" if arch else name
    except Exception:  # threadpoolctl is optional (scikit-learn brings it); any failure: fall back below
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # an internal layout of NumPy's build information
        return "unknown BLAS"


def machine_description() -> str:
    """CPU and BLAS: what, besides the code and the seeds, sets a trained model's last bits."""
    return f"{_cpu_model()}, {platform.machine()}; BLAS {_blas()}"


def render(results: dict, seconds: dict, *, quick: bool, command: str) -> str:
    total = sum(seconds.values())
    lines = [
        "# Results: the papers' claims, measured at toy scale",
        "",
        f"Generated by `{command}` — do not edit by hand; re-run the command instead.",
        "",
        f"npnorm {__version__}, NumPy {np.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU core(s); the run took {total / 60:.1f} min "
        f"(batch size {seconds['batch_size']:.0f} s, recurrent {seconds['recurrent']:.0f} s, "
        f"variants {seconds['variants']:.0f} s). Machine: {machine_description()}.",
        "",
        "Every run is a function of its seeds and of the machine: re-running here gives the same numbers (the "
        "times differ). Another CPU or BLAS build rounds matrix products differently in the last bits, and "
        "training amplifies that: the numbers move, and a verdict near its rule's line can change.",
        "",
        "Tables show the mean over seeds and, in brackets, the [min, max] over seeds. Each verdict is computed "
        "from the numbers by the rule stated next to it.",
        "",
    ]
    if quick:
        lines += [
            "> **Quick run**: tiny models, a few steps, one seed. These numbers check that the pipeline works; "
            "they say nothing about the papers.",
            "",
        ]
    sections = [
        _batch_size_section(results["batch_size"]),
        _recurrent_section(results["recurrent"]),
        _variants_section(results["variants"]),
    ]
    lines += _summary(sections)
    for section in sections:
        lines += section
    return "\n".join(lines).rstrip() + "\n"


_CLAIM = re.compile(
    r"^- \*(?P<claim>[^*]+)\*.*\*\*(?P<verdict>Matches the paper|Partly|Does not match the paper)\.\*\*"
)


def _summary(sections: list[list[str]]) -> list[str]:
    """One table of every claim and its verdict, gathered from the sections' verdict bullets."""
    rows = []
    for name, section in zip(SHORT_NAMES, sections):
        for line in section:
            match = _CLAIM.match(line)
            if match:
                rows.append(f"| {name} | {match['claim']} | {match['verdict']} |")
    if not rows:
        return []
    return ["## Summary", "", "| experiment | claim | verdict |", "|---|---|---|", *rows, ""]


def _pp(curve: dict, i: int = -1) -> str:
    """A test error curve's value at epoch i, in %, as 'mean [min, max]'."""
    return f"{100 * curve['mean'][i]:.2f} [{100 * curve['min'][i]:.2f}, {100 * curve['max'][i]:.2f}]"


def _num(curve: dict, i: int = -1, fmt: str = ".4f") -> str:
    return f"{curve['mean'][i]:{fmt}} [{curve['min'][i]:{fmt}}, {curve['max'][i]:{fmt}}]"


def _verdict(ok: bool, partly: bool = False) -> str:
    return "**Matches the paper.**" if ok else ("**Partly.**" if partly else "**Does not match the paper.**")


def _batch_size_section(result: dict) -> list[str]:
    cfg, summary = result["config"], result["summary"]
    lines = [
        SECTIONS[0],
        "",
        f"{cfg['model']}; {cfg['optimizer']}; {cfg['epochs']} epochs; seeds {cfg['seeds']}; "
        f"{cfg['n_train']} training / {cfg['n_test']} test images (scikit-learn's 8×8 digits).",
        "",
        "| norm | batch | training NLL, epoch 1 | training NLL, last epoch | test error %, last epoch |",
        "|---|---:|---|---|---|",
    ]
    for s in summary.values():
        name = {"none": "none", "batch": "BatchNorm", "layer": "LayerNorm"}.get(s["norm"], s["norm"])
        lines.append(
            f"| {name} | {s['batch_size']} | {_num(s['train_loss'], 0, '.3f')} | {_num(s['train_loss'])} "
            f"| {_pp(s['test_error'])} |"
        )
    lines += ["", f"![batch size]({'img/' + IMAGES['batch_size']})", ""]

    def get(norm, bs):
        return summary.get(f"{norm}/{bs}")

    ln128, ln4, bn128, bn4 = get("layer", 128), get("layer", 4), get("batch", 128), get("batch", 4)
    lines.append(
        "**The paper**: LayerNorm is robust to the batch size and, at batch 4, converges faster than "
        "BatchNorm, which degrades."
    )
    lines.append("")
    if ln128 and ln4:
        d_ln = 100 * (ln4["test_error"]["mean"][-1] - ln128["test_error"]["mean"][-1])
        lines.append(
            f"- *LayerNorm robust to batch size* (rule: its final test error changes by less than "
            f"{SAME_ERROR_PP:g} pp from batch 128 to 4): it changes by {d_ln:+.2f} pp. "
            + _verdict(abs(d_ln) < SAME_ERROR_PP)
        )
    if bn128 and bn4:
        d_bn = 100 * (bn4["test_error"]["mean"][-1] - bn128["test_error"]["mean"][-1])
        lines.append(
            f"- *BatchNorm degrades at batch 4* (rule: its final test error rises from batch 128 to 4): "
            f"it changes by {d_bn:+.2f} pp. " + _verdict(d_bn > 0)
        )
    if ln4 and bn4:
        first = (ln4["train_loss"]["mean"][0], bn4["train_loss"]["mean"][0])
        last = (ln4["train_loss"]["mean"][-1], bn4["train_loss"]["mean"][-1])
        err = (100 * ln4["test_error"]["mean"][-1], 100 * bn4["test_error"]["mean"][-1])
        faster = first[0] < first[1] and last[0] < last[1]
        lines.append(
            "- *LayerNorm converges faster than BatchNorm at batch 4* (rule: lower mean training NLL after "
            f"the first and the last epoch): LN {first[0]:.3f} vs BN {first[1]:.3f} after epoch 1, "
            f"{last[0]:.4f} vs {last[1]:.4f} at the end; final test error {err[0]:.2f}% vs {err[1]:.2f}%. "
            + _verdict(faster, partly=first[0] < first[1] or last[0] < last[1])
        )
    return lines + [""]


def _recurrent_section(result: dict) -> list[str]:
    cfg, summary = result["config"], result["summary"]
    lines = [
        SECTIONS[1],
        "",
        f"{cfg['models']}, H = {cfg['hidden']}; {cfg['optimizer']}; batch {cfg['batch_size']}; "
        f"{cfg['steps']} steps; seeds {cfg['seeds']}; the test metric every {cfg['eval_every']} steps. "
        "*Mean training loss* is the loss averaged over all steps (the area under the training curve: lower "
        "means faster convergence); *final training loss* averages the last 10% of the steps. *Steps to target* "
        "is the first evaluation at which the test metric reached the target (targets fixed in `TARGETS` from "
        "pilot runs, before this run). The step budget is small (a few minutes on 2 cores): *final* means after "
        f"{cfg['steps']} steps, not the best each model can reach with longer training.",
        "",
    ]
    for task, per_model in summary.items():
        t = cfg["tasks"][task]
        accuracy = t["metric"] == "accuracy"
        target = f"{100 * t['target']:.0f}% accuracy" if accuracy else f"MSE {t['target']:g}"
        lines += [
            f"**{t['label']}** ({t['n_train']} training / {t['n_test']} test sequences)",
            "",
            f"| model | final test {'accuracy %' if accuracy else 'MSE'} | mean training loss "
            f"| final training loss | steps to {target} |",
            "|---|---|---|---|---|",
        ]
        for model, s in per_model.items():
            lines.append(
                f"| {RNN_LABELS[model]} | {format_spread(s['final'], t['metric'])} "
                f"| {format_spread(s['mean_loss'], 'loss')} | {format_spread(s['final_loss'], 'loss')} "
                f"| {format_steps(s)} |"
            )
        lines.append("")
    lines += [f"![recurrent]({'img/' + IMAGES['recurrent']})", ""]
    lines.append(
        "**The paper**: the layer-normalized LSTM converges faster than the plain one, and the gain is "
        "largest on long sequences. Rule for *faster*: a lower mean training loss (every LN seed below every "
        "plain seed, over two or more seeds, counts as *clearly*); the gain is 1 − (LN mean training loss / "
        "plain mean training loss)."
    )
    lines.append("")
    for plain, ln in (("lstm", "ln_lstm"), ("gru", "ln_gru")):
        gains, verdicts = {}, []
        for task, per_model in summary.items():
            if plain not in per_model or ln not in per_model:
                continue
            p, q = per_model[plain]["mean_loss"], per_model[ln]["mean_loss"]
            gains[task] = 1 - q["mean"] / p["mean"]
            clearly = len(cfg["seeds"]) > 1 and q["max"] < p["min"]
            how = "clearly faster" if clearly else ("faster" if q["mean"] < p["mean"] else "not faster")
            verdicts.append(f"{task}: {how} (gain {100 * gains[task]:+.0f}%)")
        if not gains:
            continue
        faster_everywhere = all(g > 0 for g in gains.values())
        lines.append(
            f"- *{RNN_LABELS[ln]} converges faster than {RNN_LABELS[plain]}*: "
            + "; ".join(verdicts)
            + ". "
            + _verdict(faster_everywhere, partly=any(g > 0 for g in gains.values()))
        )
        if "rows" in gains and "pixels" in gains:
            longer = gains["pixels"] > gains["rows"]
            text, speedup = _speedups(summary, plain, ln)
            by_steps = "rows" in speedup and "pixels" in speedup and speedup["pixels"] > speedup["rows"]
            lines.append(
                f"- *{RNN_LABELS[ln]} gains most on long sequences* (rule: the gain on 64-step permuted pixels "
                "exceeds the gain on "
                f"8-step rows; *partly* if only the second measure, the speed-up in steps to the target, says so): "
                f"{100 * gains['pixels']:+.0f}% vs {100 * gains['rows']:+.0f}%. {text} "
                + _verdict(longer, partly=by_steps)
            )
    return lines + [""]


def _speedups(summary: dict, plain: str, ln: str) -> tuple[str, dict]:
    """A second measure: how many times fewer steps LN needed to reach each task's target (where every run did),
    in words and as {task: plain steps / LN steps}."""
    parts, speedup = [], {}
    for task, per_model in summary.items():
        p, q = per_model.get(plain), per_model.get(ln)
        if p is None or q is None:
            continue
        n = len(p["steps_to_target"])
        if p["reached"] == n and q["reached"] == n:
            speedup[task] = p["steps_to_target_mean"] / q["steps_to_target_mean"]
            parts.append(
                f"{task} {p['steps_to_target_mean']:.0f} → {q['steps_to_target_mean']:.0f} ({speedup[task]:.1f}×)"
            )
        else:
            parts.append(f"{task}: reached by {p['reached']}/{n} plain and {q['reached']}/{n} LN runs")
    text = ("Steps to the target, plain → LN: " + "; ".join(parts) + ".") if parts else ""
    return text, speedup


def _variants_section(result: dict) -> list[str]:
    cfg, summary = result["config"], result["summary"]
    lines = [
        SECTIONS[2],
        "",
        f"{cfg['model']}; {cfg['optimizer']}; {cfg['epochs']} epochs; seeds {cfg['seeds']}; "
        f"{cfg['n_train']} training / {cfg['n_test']} test images. *Re-centring* is max over layers of "
        "|mean over features of dL/dx| / rms(dL/dx) at the norm inputs (0 means every row of the gradient sums "
        "to zero, as LayerNorm's backward guarantees).",
        "",
        "| variant | training loss | test loss | best test loss | test error % | re-centring |",
        "|---|---|---|---|---|---|",
    ]
    for variant, s in summary.items():
        centring = max(g["rel_mean"] for g in s["grad_stats"])
        lines.append(
            f"| {VARIANT_LABELS.get(variant, variant)} | {_num(s['train_loss'])} | {_num(s['test_loss'])} "
            f"| {s['final']['best_test_loss']:.4f} | {_pp(s['test_error'])} | {centring:.1e} |"
        )
    lines += ["", f"![variants]({'img/' + IMAGES['variants']})", ""]
    same_point = result.get("same_point")
    if same_point:
        lines += [
            "The trained LayerNorm model (first seed), same weights and batch, with the backward's μ- and σ-terms "
            "switched off: Var(dL/dx) per sample at each norm layer, first to last.",
            "",
            "| backward | re-centring | Var(dL/dx) by layer |",
            "|---|---|---|",
        ]
        for name, stats in same_point.items():
            lines.append(
                f"| {name} | {max(g['rel_mean'] for g in stats):.1e} | "
                + " ".join(f"{g['var']:.1e}" for g in stats)
                + " |"
            )
        lines.append("")
    lines.append(
        "**The paper**: LayerNorm-simple (no gain, no bias) is as good as LayerNorm or better; DetachNorm is "
        "worse; AdaNorm is as good or better. Rules on the final test error: *as good or better* at most "
        f"{SAME_ERROR_PP:g} pp higher than LayerNorm's (for AdaNorm also a test loss no higher), *worse* more "
        f"than {SAME_ERROR_PP:g} pp higher."
    )
    lines.append("")
    ln = summary.get("layer")
    if ln is None:
        return lines + ["- LayerNorm was not run, so there is nothing to compare with.", ""]

    def final(variant, key):
        return summary[variant]["final"][key]

    err_ln, loss_ln = 100 * final("layer", "test_error"), final("layer", "test_loss")
    if "simple" in summary:
        d = 100 * final("simple", "test_error") - err_ln
        lines.append(
            f"- *LayerNorm-simple as good as LayerNorm or better*: test error {d:+.2f} pp, test loss "
            f"{final('simple', 'test_loss'):.4f} vs {loss_ln:.4f}, training loss {final('simple', 'train_loss'):.4f} "
            f"vs {final('layer', 'train_loss'):.4f}. " + _verdict(d <= SAME_ERROR_PP)
        )
    if "detach" in summary:
        d = 100 * final("detach", "test_error") - err_ln
        lines.append(
            f"- *DetachNorm worse than LayerNorm*: test error {d:+.2f} pp, test loss "
            f"{final('detach', 'test_loss'):.4f} vs {loss_ln:.4f}. " + _verdict(d > SAME_ERROR_PP)
        )
    if "adanorm" in summary:
        d = 100 * final("adanorm", "test_error") - err_ln
        loss_ok = final("adanorm", "test_loss") <= loss_ln
        lines.append(
            f"- *AdaNorm ≥ LayerNorm*: test error {d:+.2f} pp, test loss {final('adanorm', 'test_loss'):.4f} "
            f"vs {loss_ln:.4f}. " + _verdict(d <= SAME_ERROR_PP and loss_ok, partly=d <= SAME_ERROR_PP)
        )
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m npnorm.experiments.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run that takes seconds (numbers judge nothing)")
    parser.add_argument("--out", default="docs", metavar="DIR", help="folder for results.md and img/ (default: docs)")
    args = parser.parse_args(argv)
    out = reproduce(quick=args.quick, out_dir=args.out)
    print(
        f"{out['markdown']} ({sum(out['seconds'].values()) / 60:.1f} min); plots: {', '.join(out['images'].values())}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
