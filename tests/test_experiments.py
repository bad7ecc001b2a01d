"""npnorm.experiments: models as the papers describe them, repeatable runs, the divergence guard, the metrics.

Only the quick presets run here (a few seconds each); the full experiments are for the CLI and examples/.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import npnorm
from npnorm import nn
from npnorm.experiments import NonFiniteLossError, make_deep_mlp, make_mlp, run_batch_size, run_variants
from npnorm.experiments._train import GradProbe, mean_and_spread, train_classifier
from npnorm.experiments.mlp import subset

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def small_digits():
    from npnorm.data import load_digits

    return subset(load_digits(), 200)


def quick_train(data, seed=0, **kwargs):
    options = dict(epochs=2, batch_size=32, lr=1e-3, seed=seed)
    options.update(kwargs)
    return train_classifier(lambda: make_mlp("layer", hidden=16), data, **options)


# ------------------------------------------------------------------------------------------- models


def test_mlp_normalizes_the_hidden_layers_but_not_the_logits():
    model = make_mlp("layer", hidden=8)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Linear", "LayerNorm", "ReLU", "Linear"]
    assert model[-1].out_features == 10
    with pytest.raises(ValueError, match="unknown norm"):
        make_mlp("group")


def test_deep_mlp_has_one_norm_per_hidden_layer():
    model = make_deep_mlp("simple", hidden=8, depth=6)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 6 and all(n.weight is None and n.bias is None for n in norms)
    detach = [m for m in make_deep_mlp("detach", hidden=8).modules() if isinstance(m, nn.LayerNorm)]
    assert all(n.detach_mean and n.detach_var for n in detach)


def test_subset_is_stratified(small_digits):
    assert abs(len(small_digits.y_train) - 200) <= 5  # each class rounds its share
    assert np.bincount(small_digits.y_train, minlength=10).min() >= 18


# ------------------------------------------------------------------------------------ the training loop


def test_same_seed_same_numbers_to_the_last_digit(small_digits):
    a, b = quick_train(small_digits, seed=3), quick_train(small_digits, seed=3)
    for key in ("train_loss", "test_loss", "test_error"):
        assert a[key] == b[key]  # exact equality, not approx
    for (name, p), (_, q) in zip(a["model"].named_parameters(), b["model"].named_parameters()):
        assert np.array_equal(p.data, q.data), name
    assert quick_train(small_digits, seed=4)["train_loss"] != a["train_loss"]


def test_training_learns(small_digits):
    history = quick_train(small_digits, epochs=4, batch_size=8, lr=1e-2)
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history["test_error"][-1] < 0.3  # 90% for guessing


def test_a_non_finite_loss_stops_the_run_naming_the_step(small_digits):
    built = []

    def build():
        built.append(make_mlp("layer", hidden=16))
        return built[-1]

    with pytest.raises(NonFiniteLossError, match=r"at step 2 \(epoch 1\)") as info:
        train_classifier(build, small_digits, epochs=2, batch_size=32, lr=1e20, seed=0, name="layer, seed 0")
    assert info.value.step == 2 and "layer, seed 0" in str(info.value)
    assert isinstance(info.value, FloatingPointError)
    for name, p in built[0].named_parameters():  # the step that would have written NaN was never applied
        assert np.all(np.isfinite(p.data)), name


def test_grad_probe_records_the_gradient_flowing_back():
    x = npnorm.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    sink = []
    (GradProbe.apply(x, sink) ** 2).sum().backward()
    np.testing.assert_array_equal(sink[0], 2 * x.data)
    np.testing.assert_array_equal(x.grad, 2 * x.data)


def test_mean_and_spread():
    out = mean_and_spread([[1.0, 4.0], [3.0, 2.0]])
    assert out == {"mean": [2.0, 3.0], "min": [1.0, 2.0], "max": [3.0, 4.0]}


# ---------------------------------------------------------------------------------------- experiments


def test_batch_size_experiment_quick():
    result = run_batch_size(("none", "layer"), (16, 4), quick=True, progress=False)
    assert set(result["summary"]) == {"none/16", "none/4", "layer/16", "layer/4"}
    for s in result["summary"].values():
        assert len(s["train_loss"]["mean"]) == result["config"]["epochs"]
        assert all(math.isfinite(v) for v in s["train_loss"]["mean"] + s["test_error"]["max"])
        assert s["train_loss"]["min"][-1] <= s["train_loss"]["mean"][-1] <= s["train_loss"]["max"][-1]


def test_batch_size_experiment_batch_norm_arm():
    result = run_batch_size(("batch",), (4,), quick=True, progress=False)
    assert math.isfinite(result["summary"]["batch/4"]["train_loss"]["mean"][-1])


def test_variants_experiment_measures_re_centring():
    result = run_variants(("layer", "simple", "detach", "none"), quick=True, progress=False)
    stats = {v: s["grad_stats"] for v, s in result["summary"].items()}
    for variant in ("layer", "simple"):  # Σ_j dx_j = 0: only float32 rounding is left
        assert max(g["rel_mean"] for g in stats[variant]) < 1e-5
    for variant in ("detach", "none"):  # nothing re-centres these gradients
        assert max(g["rel_mean"] for g in stats[variant]) > 1e-3
    same = result["same_point"]
    assert max(g["rel_mean"] for g in same["full"]) < 1e-5 and max(g["rel_mean"] for g in same["detach"]) > 1e-3
    # At the last norm layer the upstream gradient is the same with and without the σ-term, and the σ-term
    # projects it (onto the complement of y): its variance can only go down.
    assert same["full"][-1]["var"] <= same["detach_var"][-1]["var"]
    for s in result["summary"].values():
        assert s["final"]["gap"] == pytest.approx(s["final"]["test_loss"] - s["final"]["train_loss"])


@pytest.mark.parametrize(
    "run, kwargs, match",
    [
        (run_batch_size, {"batch_sizes": (0,)}, "batch_size must be a positive integer, got 0"),
        (run_batch_size, {"epochs": 0}, "epochs must be a positive integer"),
        (run_batch_size, {"seeds": 0}, "seeds must be a positive integer"),
        (run_batch_size, {"norms": ("group",)}, "norms must be some of"),
        (run_batch_size, {"lr": -1.0}, "lr must be positive and finite"),
        (run_variants, {"epochs": 0}, "epochs must be a positive integer"),
        (run_variants, {"depth": 0}, "depth must be a positive integer"),
        (run_variants, {"variants": ()}, "no variant"),
    ],
)
def test_bad_arguments_are_named_before_any_training(run, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run(quick=True, progress=False, **kwargs)


def test_evaluate_restores_each_modules_own_mode(small_digits):
    """A model trained with one submodule frozen in eval mode (here its BatchNorm) keeps it so after evaluate."""
    from npnorm.experiments._train import evaluate

    model = make_mlp("batch", hidden=16)
    frozen = next(m for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    frozen.eval()
    modes = [m.training for m in model.modules()]
    assert not all(modes) and any(modes)
    evaluate(model, small_digits.x_test, small_digits.y_test)
    assert [m.training for m in model.modules()] == modes
