"""The scripts in examples/ run as their docstrings say, in their smallest settings, and print what they claim.

Each runs in a fresh interpreter in a temporary folder (they write their files into the current folder).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name: str, *args: str, cwd) -> str:
    run = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, name), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_layer_norm_by_hand_shows_three_implementations_that_agree(tmp_path):
    out = run_example("layer_norm_by_hand.py", cwd=tmp_path)
    gaps = [float(g) for g in re.findall(r"max \|(?:numpy|numba) - composed\| = (\S+)", out)]
    assert len(gaps) >= 8 and max(gaps) <= 1e-12, out  # y, dx, dweight, dbias; two impls each
    assert float(re.search(r"by hand, max \|dx - composed\| = (\S+)", out).group(1)) <= 1e-12
    sums = re.search(r"row sums of dx \(re-centred, Xu et al.\): (.*)", out).group(1).split()
    assert sums and max(abs(float(s)) for s in sums) <= 1e-12


def test_train_mlp_learns_saves_its_weights_and_repeats_itself(tmp_path):
    out = run_example("train_mlp.py", "--epochs", "2", "--save", "mlp.npz", cwd=tmp_path)
    accuracy = float(re.search(r"epoch  2 .* accuracy (\S+)%", out).group(1))
    assert accuracy > 85, out
    assert sorted(np.load(tmp_path / "mlp.npz").files)  # a state dict with its arrays
    again = run_example("train_mlp.py", "--epochs", "2", cwd=tmp_path)  # the same seed: the same numbers
    assert _epoch_lines(again) == _epoch_lines(out) and len(_epoch_lines(out)) == 2


def _epoch_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("epoch")]


@pytest.mark.parametrize("name", ["train_lstm.py", "variants.py"])
def test_the_experiment_examples_print_their_table_and_figure(name, tmp_path):
    out = run_example(name, "--quick", "--plot", "figure.png", cwd=tmp_path)
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = ("LSTM", "LN-LSTM") if name == "train_lstm.py" else ("LayerNorm", "DetachNorm", "AdaNorm", "no norm")
    for label in expected:
        assert any(line.startswith(label) for line in out.splitlines()), out
