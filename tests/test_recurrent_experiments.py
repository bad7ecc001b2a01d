"""The recurrent experiment (LSTM/GRU vs Ba et al.'s LN variants) and `reproduce`, on their quick presets.

The full runs are for `npnorm reproduce`; here every run takes seconds. One quick recurrent run is shared by
the tests of its shape (a module fixture); reproducibility trains again with the same seed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from npnorm import nn
from npnorm.experiments.recurrent import (
    MODELS,
    TASKS,
    SequenceModel,
    format_summary,
    moving_average,
    run_recurrent,
)
from npnorm.experiments.reproduce import SECTIONS, reproduce

pytest.importorskip("sklearn")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_result():
    return run_recurrent(quick=True, progress=False)


def test_every_task_and_model_has_well_formed_finite_metrics(quick_result):
    cfg = quick_result["config"]
    assert list(quick_result["summary"]) == list(TASKS)
    for task in TASKS:
        assert list(quick_result["summary"][task]) == list(MODELS)
        for model in MODELS:
            (history,) = quick_result["runs"][task][model]  # one seed in the quick preset
            assert len(history["step_loss"]) == cfg["steps"]
            assert all(math.isfinite(v) for v in history["step_loss"] + history["grad_norm"])
            assert history["eval_step"][-1] == cfg["steps"]
            assert len(history["eval_metric"]) == len(history["eval_step"])
            final = history["final"]
            if cfg["tasks"][task]["metric"] == "accuracy":
                assert 0 <= final <= 1
            else:
                assert 0 <= final < 10
            assert history["steps_to_target"] is None or history["steps_to_target"] in history["eval_step"]
            s = quick_result["summary"][task][model]
            assert s["final"]["min"] <= s["final"]["mean"] <= s["final"]["max"]
            assert len(s["loss_curve"]["mean"]) == cfg["steps"]
    json.dumps(quick_result, allow_nan=False)  # plain dicts, lists, numbers: JSON-ready as it is
    text = format_summary(quick_result)
    assert all(label in text for label in ("LSTM", "LN-LSTM", "GRU", "LN-GRU", "adding problem"))


def test_ln_lstm_learns_the_adding_problem():
    result = run_recurrent(["adding"], ["ln_lstm"], steps=60, quick=True, progress=False)
    losses = result["runs"]["adding"]["ln_lstm"][0]["step_loss"]
    assert np.mean(losses[-15:]) < 0.5 * np.mean(losses[:15])


def test_same_seed_gives_identical_metrics(quick_result):
    again = run_recurrent(quick=True, progress=False)
    assert again == quick_result
    other = run_recurrent(["rows"], ["ln_lstm"], quick=True, seed=1, progress=False)
    assert other["runs"]["rows"]["ln_lstm"][0]["step_loss"] != quick_result["runs"]["rows"]["ln_lstm"][0]["step_loss"]


def test_models_are_the_papers_cells():
    ln_lstm = SequenceModel("ln_lstm", 1, 8, 10)
    assert ln_lstm.rnn.layer_norm and isinstance(ln_lstm.rnn, nn.LSTM)
    assert {"ln_ih_l0.weight", "ln_hh_l0.weight", "ln_cell_l0.weight"} <= dict(ln_lstm.rnn.named_parameters()).keys()
    gru = SequenceModel("gru", 2, 8, 1)
    assert isinstance(gru.rnn, nn.GRU) and not gru.rnn.layer_norm
    with pytest.raises(ValueError, match="unknown model"):
        SequenceModel("ln_rnn", 1, 8, 10)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown task"):
        run_recurrent(["mnist"], quick=True)
    with pytest.raises(ValueError, match="steps"):
        run_recurrent(steps=0, quick=True)


def test_moving_average():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0], 5) == [2.0]


def test_reproduce_quick_writes_markdown_and_valid_pngs(tmp_path):
    out = reproduce(quick=True, out_dir=tmp_path, progress=False)
    text = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert text.startswith("# Results")
    assert "python -m npnorm.experiments.reproduce --quick" in text  # the command that made it
    positions = [text.index(section) for section in ("## Summary", *SECTIONS)]
    assert positions == sorted(positions)
    assert "Quick run" in text and "| LN-LSTM |" in text and "| LayerNorm |" in text
    assert "| Ba et al. §3/§6, recurrent | LN-LSTM converges faster than LSTM |" in text  # the summary of verdicts
    for name in ("batch_size", "recurrent", "variants"):
        png = tmp_path / "img" / f"{name}.png"
        data = png.read_bytes()
        assert data[:8] == PNG_SIGNATURE and 0 < len(data) < 150_000
        assert f"](img/{name}.png)" in text
        assert out["images"][name] == str(png)
