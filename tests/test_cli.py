"""`npnorm demo` and `npnorm train` through `npnorm.cli.main(argv)`, plus one real `python -m npnorm --help`.

Quick paths only. Exit codes: 0 success, 1 a clear one-line error (failed gradcheck, diverged run, missing
optional package), 2 bad arguments (argparse), 130 Ctrl-C.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest

import npnorm.cli
from npnorm.cli import main

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def strict_json(path) -> dict:
    """Parse JSON that must be standard: NaN and Infinity are not JSON."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def assert_small_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) < 100_000


def test_python_m_npnorm_help():
    out = subprocess.run([sys.executable, "-m", "npnorm", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("demo", "train", "check", "bench", "reproduce"):
        assert command in out.stdout


@pytest.mark.parametrize(
    "argv", [["demo"], ["train"], ["train", "mlp"], ["train", "variants"], ["train", "rnn"], ["reproduce"]]
)
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    assert "usage: npnorm" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- demo


def test_demo_quick_trains_and_writes_the_loss_curve(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "all gradients agree with finite differences" in out
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", out).group(1))
    assert accuracy > 80  # a tiny model for 3 epochs; the full demo reaches >= 97%
    assert_small_png(tmp_path / "demo_loss.png")
    assert f"loss curve: {tmp_path / 'demo_loss.png'}" in out


def test_demo_exits_1_when_a_gradient_check_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("npnorm.checks.run_checks", lambda *a, **k: False)
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 1
    assert "gradient checks FAILED" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- train


def test_train_mlp_writes_well_formed_json_and_a_plot(tmp_path, capsys):
    path, plot = tmp_path / "out" / "mlp.json", tmp_path / "mlp.png"
    assert (
        main(["train", "mlp", "--quick", "--norm", "layer", "--norm", "none", "--json", str(path), "--plot", str(plot)])
        == 0
    )
    result = strict_json(path)
    assert result["experiment"] == "batch_size"
    assert set(result["summary"]) == {"layer/128", "layer/4", "none/128", "none/4"}
    assert len(result["runs"]["layer/4"][0]["train_loss"]) == result["config"]["epochs"]
    assert_small_png(plot)
    assert "training NLL" in capsys.readouterr().out


def test_same_seed_gives_identical_json(tmp_path):
    runs = []
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        path = tmp_path / f"{name}.json"
        assert (
            main(
                [
                    "train",
                    "mlp",
                    "--quick",
                    "--norm",
                    "layer",
                    "--batch-size",
                    "16",
                    "--seed",
                    seed,
                    "--json",
                    str(path),
                ]
            )
            == 0
        )
        runs.append(path.read_text())
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_train_variants_quick(tmp_path):
    path, plot = tmp_path / "v.json", tmp_path / "v.png"
    argv = [
        "train",
        "variants",
        "--quick",
        "--norm",
        "layer",
        "--norm",
        "detach",
        "--json",
        str(path),
        "--plot",
        str(plot),
    ]
    assert main(argv) == 0
    result = strict_json(path)
    assert set(result["summary"]) == {"layer", "detach"}
    assert len(result["summary"]["layer"]["grad_stats"]) == 6
    assert set(result["same_point"]) == {"full", "detach_mean", "detach_var", "detach"}
    assert_small_png(plot)


def test_a_diverging_run_exits_1_with_one_line_naming_the_step(capsys):
    assert main(["train", "mlp", "--quick", "--norm", "layer", "--lr", "1e20"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "diverged" in err and "step 2" in err and "Traceback" not in err


def test_a_missing_extra_exits_1_with_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["train", "mlp", "--quick", "--norm", "layer"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'npnorm[examples]'" in err


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("npnorm.experiments.mlp.run_batch_size", interrupted)
    assert main(["train", "mlp", "--quick"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"


def test_no_progress_bar_when_not_a_terminal(capsys):
    assert main(["train", "mlp", "--quick", "--norm", "layer", "--batch-size", "16"]) == 0
    err = capsys.readouterr().err
    assert "it/s" not in err and "step/s" not in err and "%|" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["train"],
        ["train", "rnnn"],
        ["train", "mlp", "--epochs", "0"],
        ["train", "mlp", "--epochs", "two"],
        ["train", "mlp", "--batch-size", "-4"],
        ["train", "mlp", "--norm", "bogus"],
        ["train", "mlp", "--lr", "-1"],
        ["train", "mlp", "--lr", "nan"],
        ["train", "variants", "--seed", "-1"],
        ["demo", "--seed", "x"],
        ["demo", "--no-such-option"],
        ["check", "--norm", "bogus"],
    ],
)
def test_bad_arguments_exit_2_with_an_argparse_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(r"^npnorm[\w ]*: error: ", err.splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "mlp", "--quick", "--norm", "batch", "--batch-size", "1"],
        ["train", "mlp", "--quick", "--batch-size", "16", "--batch-size", "1"],  # the default norms include batch
        ["train", "variants", "--quick", "--norm", "batch", "--batch-size", "1"],
    ],
)
def test_batch_norm_with_batches_of_one_exits_2_before_training(argv, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("trained although BatchNorm cannot train on batches of one")

    monkeypatch.setattr("npnorm.experiments.mlp.run_batch_size", never)
    monkeypatch.setattr("npnorm.experiments.variants.run_variants", never)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "npnorm train: error: --norm batch needs a --batch-size of at least 2 (a batch of one has no statistics)"
    )


def test_a_bad_npnorm_impl_exits_2_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv("NPNORM_IMPL", "cuda")
    assert main(["train", "mlp", "--quick", "--norm", "layer"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "npnorm train: error: NPNORM_IMPL must be one of numba, numpy, composed, got 'cuda'"


def test_a_closed_pipe_ends_quietly():
    """`npnorm check | head -1`: the reader leaves after one line; no BrokenPipeError traceback."""
    argv = ["-u", "-m", "npnorm", "check", "--norm", "weight_norm", "--impl", "numpy"]  # -u: each line written at once
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away before the rest of the table
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_progress_bar_is_a_no_op_off_a_terminal(monkeypatch):
    from npnorm.progress import progress_bar

    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a terminal, even under `pytest -s`
    with progress_bar(10, "x") as bar:
        bar.update(3)
        bar.set_postfix_str("loss 1.0")
    assert type(bar).__name__ == "_NoBar"
    assert npnorm.cli.DEFAULT_OUT == "npnorm-out"


def test_an_unwritable_output_fails_before_training(tmp_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("trained although the result could not be written")

    monkeypatch.setattr("npnorm.experiments.mlp.run_batch_size", never)
    assert main(["train", "mlp", "--quick", "--plot", str(tmp_path)]) == 1  # a folder, not a file
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write --plot" in err


# ------------------------------------------------------------------------------------- rnn, reproduce


def test_train_rnn_quick_writes_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "rnn.json", tmp_path / "rnn.png"
    argv = ["train", "rnn", "--quick", "--task", "adding", "--model", "lstm", "--model", "ln_lstm"]
    assert main([*argv, "--json", str(out_json), "--plot", str(out_png)]) == 0
    result = strict_json(out_json)
    assert set(result["summary"]["adding"]) == {"lstm", "ln_lstm"}
    assert_small_png(out_png)
    assert "LN-LSTM" in capsys.readouterr().out


def test_train_rnn_rejects_a_short_adding_sequence(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "rnn", "--length", "1"])
    assert info.value.code == 2
    assert "expected an integer >= 2" in capsys.readouterr().err


def test_reproduce_quick_writes_results_and_plots(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "results.md").read_text()
    assert "npnorm reproduce --quick" in text
    from npnorm._machine import machine_description

    assert f"Machine: {machine_description()}." in text  # the CPU and BLAS kernels, which set the last bits
    for name in ("batch_size", "recurrent", "variants"):
        assert_small_png(tmp_path / "img" / f"{name}.png")


def test_machine_description_names_numpys_blas_without_threadpoolctl(monkeypatch):
    import sys

    import numpy as np

    from npnorm import _machine

    expected = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails: the fallback reads NumPy's build info
    assert _machine._blas().startswith(expected)
    described = _machine.machine_description()
    assert f"BLAS {expected}" in described and described.split(",")[0].strip()


def test_readme_lists_every_command_and_train_task():
    """The README's command table stays in step with the CLI: a command added to the parser must be documented."""
    import argparse
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1] / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not next to the tests (installed package)")
    text = readme.read_text(encoding="utf-8")

    def subcommands(parser) -> dict:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(actions[0].choices) if actions else {}

    commands = subcommands(npnorm.cli._build_parser())
    assert {"demo", "train", "check", "warmup", "bench", "reproduce"} <= set(commands)
    for name, parser in commands.items():
        tasks = subcommands(parser)
        for usage in [f"npnorm {name} {task}" for task in tasks] or [f"npnorm {name}"]:
            assert f"`{usage}" in text, f"README.md does not mention `{usage}`"


def test_check_table_explains_numba_times_only_when_numba_runs():
    from npnorm.checks import run_checks

    lines = []
    assert run_checks(norms=["rms_norm"], impls=["numpy"], out=lines.append)
    assert not any("npnorm warmup" in line for line in lines)
    lines = []
    assert run_checks(norms=["rms_norm"], impls=["numba"], out=lines.append)
    assert "npnorm warmup" in lines[-1] and "compiling" in lines[-1]
