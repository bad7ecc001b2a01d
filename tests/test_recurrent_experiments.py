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
from npnorm.experiments import NonFiniteLossError
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
    with pytest.raises(ValueError, match="lr must be positive and finite"):
        run_recurrent(lr=float("inf"), quick=True)


@pytest.mark.parametrize("task", ["adding", "rows"])
def test_a_last_update_that_diverges_stops_the_run(task):
    """Each step's loss and gradient are checked before its update; the last update's outcome only shows in
    the test loss measured after it (a NaN model still has an "accuracy": argmax over NaN logits)."""
    with pytest.raises(NonFiniteLossError, match=r"the test loss is (nan|inf) after step 1 \(epoch 1\)"):
        run_recurrent(tasks=(task,), models=("lstm",), steps=1, quick=True, lr=1e38, progress=False)


def test_verdicts_judge_beyond_the_noise_and_need_a_gain():
    """The batch-size section's BatchNorm verdict needs a rise beyond seed noise (SAME_ERROR_PP); the recurrent
    section's "gains most on long sequences" needs a gain, not only a smaller loss than on short ones."""
    from npnorm.experiments import reproduce as r

    def batch_size_result(bn_rise_pp):
        curve = lambda error: {"mean": [0.5, error], "min": [0.5, error], "max": [0.5, error]}  # noqa: E731
        runs = {("layer", 128): 0.05, ("layer", 4): 0.051, ("batch", 128): 0.05, ("batch", 4): 0.05 + bn_rise_pp / 100}
        summary = {
            f"{n}/{b}": {"norm": n, "batch_size": b, "train_loss": curve(0.1), "test_error": curve(e)}
            for (n, b), e in runs.items()
        }
        config = {"model": "m", "optimizer": "o", "epochs": 2, "seeds": [0], "n_train": 1, "n_test": 1}
        return {"config": config, "summary": summary}

    def bn_line(rise):
        return next(line for line in r._batch_size_section(batch_size_result(rise)) if "BatchNorm degrades" in line)

    assert bn_line(0.22).endswith("**Partly.**")  # one test image: within what seeds alone move
    assert bn_line(1.5).endswith("**Matches the paper.**")
    assert bn_line(-0.3).endswith("**Does not match the paper.**")


def test_gains_most_on_long_sequences_needs_a_gain(quick_result):
    """LN slower everywhere, but less so on pixels than on rows, is no gain on long sequences."""
    import copy

    from npnorm.experiments import reproduce as r

    def verdict(rows_gain, pixels_gain):
        result = copy.deepcopy(quick_result)
        for task, gain in (("rows", rows_gain), ("pixels", pixels_gain)):
            per_model = result["summary"][task]
            per_model["ln_lstm"]["mean_loss"]["mean"] = (1 - gain) * per_model["lstm"]["mean_loss"]["mean"]
            for model in ("lstm", "ln_lstm"):  # no run reached the target: the steps measure says nothing
                per_model[model]["reached"] = 0
        lines = r._recurrent_section(result)
        return next(line for line in lines if "LN-LSTM* gains most" in line or "gains most on long" in line)

    assert verdict(-0.30, -0.05).endswith("**Does not match the paper.**")
    assert verdict(0.05, 0.20).endswith("**Matches the paper.**")
    assert verdict(0.20, 0.05).endswith("**Does not match the paper.**")


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
