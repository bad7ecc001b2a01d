"""Small PNG figures of training runs and experiments (matplotlib's Agg renderer; no window ever opens).

We draw on `matplotlib.figure.Figure` objects directly instead of through `pyplot`: no global state, no
interactive backend, nothing left open after a run; saving a PNG renders with Agg. Every figure has a
title, axis labels and a legend, and is saved at dpi 100 as a palette PNG (15-50 KB). Each function
returns the path it wrote, creating its folder if needed.
"""

from __future__ import annotations

import io
import os

from ._outputs import OutputError, check_output
from .data import require

DPI = 100
COLORS = {
    "none": "tab:gray",
    "batch": "tab:orange",
    "layer": "tab:blue",
    "simple": "tab:green",
    "detach": "tab:red",
    "detach_mean": "tab:pink",
    "detach_var": "tab:purple",
    "adanorm": "tab:brown",
    "rms": "tab:olive",
}
NAMES = {"none": "no norm", "batch": "BatchNorm", "layer": "LayerNorm", "rms": "RMSNorm"}


def check_plot_path(path, flag: str = "--plot") -> None:
    """Before a run, not after it: matplotlib is importable (else MissingExtraError), and ``path`` names a PNG
    file that can be written (else OutputError)."""
    require("matplotlib", flag)
    if not os.fspath(path).lower().endswith(".png"):
        raise OutputError(f"cannot write {flag} {path}: the figures are PNG files; give a name ending in .png")
    check_output(path, flag)


def _figure(width: float, height: float):
    require("matplotlib", "plotting")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path) -> str:
    """Render with Agg, reduce to a 256-colour palette (line plots need no more; the file shrinks about 3×)
    with Pillow, which matplotlib depends on, and write the PNG."""
    from PIL import Image

    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    image = Image.open(buffer).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def _loss_scale(ax, values) -> None:
    """A log axis when the values span more than a decade (losses that fall fast), else a linear one.

    (On a log axis spanning less than a decade matplotlib labels only minor ticks, as "2.2 × 10⁰".)
    """
    positive = [v for v in values if v > 0]
    if positive and max(positive) > 10 * min(positive):
        ax.set_yscale("log")


def _markers(points: int) -> dict:
    """Line options that also mark each point where there are few (a line through one point draws nothing)."""
    return {"marker": "o", "ms": 3} if points <= 20 else {}


def _band(ax, curve: dict, label: str, color: str, x=None, linestyle: str = "-") -> None:
    """The mean over seeds as a line, min..max as a light band; against ``x`` (default 1, 2, ...: epochs)."""
    x = range(1, len(curve["mean"]) + 1) if x is None else x
    ax.plot(x, curve["mean"], linestyle, color=color, label=label, lw=1.5, **_markers(len(curve["mean"])))
    if curve["min"] != curve["max"]:
        ax.fill_between(x, curve["min"], curve["max"], color=color, alpha=0.15, lw=0)


def plot_training(history: dict, path, title: str = "LayerNorm MLP on digits") -> str:
    """Loss per step (light) and per epoch (training and test set), and the test accuracy per epoch."""
    fig = _figure(8, 3.2)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = history["epoch"]
    steps = history.get("step_loss") or []
    if steps:
        x = [(i + 1) * len(epochs) / len(steps) for i in range(len(steps))]  # in epochs
        ax_loss.plot(x, steps, color="tab:blue", alpha=0.3, lw=0.8, label="mini-batch loss")
    ax_loss.plot(epochs, history["train_loss"], "o-", color="tab:blue", ms=3, label="training set")
    ax_loss.plot(epochs, history["test_loss"], "s-", color="tab:orange", ms=3, label="test set")
    _loss_scale(ax_loss, history["train_loss"] + history["test_loss"] + steps)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy (NLL)", title="loss")
    ax_loss.legend()
    accuracy = [100 * (1 - e) for e in history["test_error"]]
    ax_acc.plot(epochs, accuracy, "s-", color="tab:orange", ms=3, label="test set")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="test accuracy")
    ax_acc.legend(loc="lower right")
    fig.suptitle(title)
    return _save(fig, path)


def plot_batch_size(result: dict, path) -> str:
    """Training NLL (top) and test error (bottom), one column per batch size; mean over seeds, band = min..max."""
    summary = result["summary"]
    batch_sizes = sorted({s["batch_size"] for s in summary.values()}, reverse=True)
    fig = _figure(max(6.0, 3.6 * len(batch_sizes)), 5.6)  # at least the width of the two-line title
    axes = fig.subplots(2, len(batch_sizes), squeeze=False)
    for col, bs in enumerate(batch_sizes):
        runs = [s for s in summary.values() if s["batch_size"] == bs]
        for s in runs:
            label, color = NAMES.get(s["norm"], s["norm"]), COLORS.get(s["norm"])
            _band(axes[0, col], s["train_loss"], label, color)
            _band(axes[1, col], {k: [100 * e for e in v] for k, v in s["test_error"].items()}, label, color)
        _loss_scale(axes[0, col], [v for s in runs for v in s["train_loss"]["min"] + s["train_loss"]["max"]])
        axes[0, col].set(title=f"batch size {bs}", xlabel="epoch", ylabel="training NLL")
        axes[1, col].set(xlabel="epoch", ylabel="test error (%)")
    axes[0, 0].legend()
    seeds = len(result["config"]["seeds"])
    fig.suptitle(f"Ba et al. 2016 §6.6 on digits, MLP 64-H-H-10\nmean of {seeds} seed(s), band: min..max")
    return _save(fig, path)


def plot_variants(result: dict, path) -> str:
    """Training and test loss per variant; Var(dL/dx) per layer of one trained LayerNorm model, same weights and
    batch, with its backward's μ- and σ-terms switched off (the re-scaling of Xu et al., isolated)."""
    from .experiments.variants import LABELS

    summary = result["summary"]
    fig = _figure(11, 4.4)
    ax_train, ax_test, ax_grad = fig.subplots(1, 3)
    for variant, s in summary.items():
        label, color = LABELS.get(variant, variant), COLORS.get(variant)
        _band(ax_train, s["train_loss"], label, color)
        _band(ax_test, s["test_loss"], label, color)
    for ax, key in ((ax_train, "train_loss"), (ax_test, "test_loss")):
        _loss_scale(ax, [v for s in summary.values() for v in s[key]["min"] + s[key]["max"]])
    ax_train.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    ax_test.set(xlabel="epoch", ylabel="cross-entropy", title="test loss")
    fig.legend(*ax_train.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize="small")
    same_point = result.get("same_point") or {}
    styles = {"full": "tab:blue", "detach_mean": "tab:pink", "detach_var": "tab:purple", "detach": "tab:red"}
    for name, stats in same_point.items():
        layers = range(1, len(stats) + 1)
        ax_grad.plot(layers, [g["var"] for g in stats], "o-", ms=3, color=styles.get(name), label=f"backward: {name}")
    ax_grad.set_title("trained LN, backward terms off")
    if same_point:
        ax_grad.set(yscale="log", xlabel="hidden layer", ylabel="Var(dL/dx) per sample")
        ax_grad.legend(fontsize="small")
    else:  # the comparison starts from the trained LayerNorm model: without that run there is nothing to show
        ax_grad.set_axis_off()
        ax_grad.text(0.5, 0.5, "no LayerNorm run to compare", ha="center", va="center", transform=ax_grad.transAxes)
    seeds = len(result["config"]["seeds"])
    fig.suptitle(f"Xu et al. 2019 on digits, MLP with 6 hidden layers (mean of {seeds} seed(s))")
    return _save(fig, path)
