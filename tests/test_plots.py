"""The figures: every curve is visible (also a single epoch), titles fit, a panel with nothing to show says so,
and a --plot path that cannot take a PNG is refused before the run, by the CLI and by the examples.

The figure tests catch the matplotlib Figure instead of its PNG (``plots._save`` replaced) and look at what
it holds.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

import npnorm.cli  # noqa: E402
from npnorm import plots  # noqa: E402
from npnorm.experiments import recurrent  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would have saved, in order."""
    caught = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: caught.append(fig) or str(path))
    return caught


def _curve(values):
    return {"mean": list(values), "min": list(values), "max": list(values)}


def _batch_size_result(batch_sizes, epochs):
    summary = {}
    for norm in ("layer", "none"):
        for bs in batch_sizes:
            curves = {"train_loss": _curve([0.5] * epochs), "test_error": _curve([0.1] * epochs)}
            summary[f"{norm}/{bs}"] = {"norm": norm, "batch_size": bs, **curves}
    return {"summary": summary, "config": {"seeds": [0]}}


def test_a_single_epoch_is_drawn_as_points(figures):
    plots.plot_batch_size(_batch_size_result([128, 4], epochs=1), "x.png")
    lines = [line for ax in figures[0].axes for line in ax.lines]
    assert lines and all(line.get_marker() == "o" for line in lines)  # a line through one point draws nothing


def test_long_curves_stay_plain_lines(figures):
    plots.plot_batch_size(_batch_size_result([128], epochs=50), "x.png")
    assert all(line.get_marker() in ("None", None, "") for ax in figures[0].axes for line in ax.lines)


def test_one_batch_size_leaves_room_for_the_title(figures):
    plots.plot_batch_size(_batch_size_result([4], epochs=3), "x.png")
    width, _ = figures[0].get_size_inches()
    assert width >= 6.0  # 3.6 inches cut the two-line title off on both sides


def test_the_gradient_panel_without_a_layer_norm_run_says_so(figures):
    summary = {"none": {"train_loss": _curve([1.0, 0.5]), "test_loss": _curve([1.1, 0.6])}}
    plots.plot_variants({"summary": summary, "config": {"seeds": [0]}, "same_point": None}, "x.png")
    grad = figures[0].axes[2]
    assert not grad.axison and [t.get_text() for t in grad.texts] == ["no LayerNorm run to compare"]


def test_a_single_evaluation_of_a_recurrent_run_is_visible(figures):
    cfg = {"tasks": {"adding": {"label": "adding", "metric": "mse", "target": 0.05}}, "hidden": 8, "batch_size": 4}
    cfg["seeds"] = [0]
    model = {"loss_curve": _curve([0.3]), "metric_curve": _curve([0.2]), "eval_step": [1]}
    recurrent.plot_recurrent({"config": cfg, "summary": {"adding": {"lstm": model}}}, "x.png")
    metric_axes = figures[0].axes[1]
    assert metric_axes.lines[0].get_marker() == "o"


@pytest.mark.parametrize("name", ["curves", "curves.svg", "curves.jpg"])
def test_a_plot_path_that_is_not_a_png_is_refused_before_the_run(name, tmp_path, monkeypatch, capsys):
    import npnorm.experiments.mlp as mlp

    def never(*args, **kwargs):
        raise AssertionError("trained although the figure could not be written")

    monkeypatch.setattr(mlp, "run_batch_size", never)
    path = tmp_path / name
    assert npnorm.cli.main(["train", "mlp", "--quick", "--plot", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"npnorm train: error: cannot write --plot {path}: the figures are PNG files; give a name ending in .png\n"
    )


@pytest.mark.parametrize("example", ["variants.py", "train_lstm.py"])
def test_the_examples_refuse_a_plot_path_before_training(example, tmp_path):
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", example), "--quick", "--plot", str(tmp_path / "curves.svg")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().endswith("the figures are PNG files; give a name ending in .png"), run.stderr


def test_a_command_started_with_stdout_closed_ends_cleanly():
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}  # warmup then has nothing to do, and says so
    run = subprocess.run(
        [sys.executable, "-m", "npnorm", "warmup"],
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        env=env,
        preexec_fn=lambda: os.close(1),  # noqa: PLW1509  (stdout closed, as `npnorm ... >&-` starts it)
    )
    assert run.returncode == 0 and run.stderr == ""
