r"""Experiment 3: what in LayerNorm matters? (Xu, Sun, Zhang, Zhao & Lin 2019, at toy scale)

Xu et al. take LayerNorm apart:

* **LayerNorm-simple** drops the gain γ and bias β. It is often as good or better, and they argue that
  γ and β raise the risk of over-fitting (a lower training loss that does not carry over to the test set).
* **DetachNorm** computes LayerNorm's forward but treats μ and σ as constants in backward. It does worse
  than LN: the gradients *through* μ and σ matter more than the forward normalization. With y = x̂ and
  g = dL/dy, LN-simple's backward is dx = rstd·(g − mean(g) − y·mean(g⊙y)): the μ-term *re-centres*
  (Σⱼ dxⱼ = 0 exactly, for any ε) and the σ-term *re-scales* (it projects out the component along y, which
  lowers the variance of dx). DetachNorm's is dx = rstd·g.
* **AdaNorm** replaces γ, β by φ(y) = C(1 − k·y), detached in backward (k = 0.1; C = 2 as in their
  reference run).

Here: the digits, a deeper MLP 64 → [Linear(H) → norm → ReLU] × 6 → Linear(10), Adam, every variant with
the same seeds. Per variant: training and test loss per epoch (and the gap between them), test error, and
for every norm layer the statistics of dL/d(norm input) on a fixed batch of training samples:

    mean_abs   the per-sample |mean over features of dx|, averaged over samples (0 means re-centred)
    var        the per-sample variance over features of dx, averaged over samples
    rel_mean   mean_abs / rms(dx): scale-free, so that layers and variants compare

`same_point` isolates the two backward terms: on the trained LayerNorm model, the same weights and batch,
the input gradients with the μ-term and/or the σ-term switched off (detach_mean, detach_var, both).
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import nn
from ..data import load_digits
from ..progress import progress_bar
from ..tensor import Tensor
from ._train import (
    GradProbe,
    check_options,
    mean_and_spread,
    single_threaded_blas,
    steps_per_epoch,
    strip_model,
    train_classifier,
)
from .mlp import NORMS, subset

VARIANTS = ("layer", "simple", "detach", "detach_mean", "detach_var", "adanorm", "none")
LABELS = {
    "layer": "LayerNorm",
    "simple": "LayerNorm-simple (no γ, β)",
    "detach": "DetachNorm (μ and σ detached)",
    "detach_mean": "μ detached",
    "detach_var": "σ detached",
    "adanorm": "AdaNorm (C=2, k=0.1)",
    "none": "no norm",
    "batch": "BatchNorm",
}


class Tapped(nn.Module):
    """`norm`, with a GradProbe in front of it while `sink` is a list: dL/d(norm input) lands there."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm
        self.sink = None

    def forward(self, x):
        if self.sink is not None:
            x = GradProbe.apply(x, self.sink)
        return self.norm(x)


def make_deep_mlp(variant: str, hidden: int = 64, depth: int = 6, in_features: int = 64, num_classes: int = 10):
    """in → [Linear(H) → Tapped(norm) → ReLU] × depth → Linear(num_classes)."""
    if variant not in NORMS:
        raise ValueError(f"make_deep_mlp: unknown variant {variant!r}; choose from {', '.join(NORMS)}")
    layers, width = [], in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), Tapped(NORMS[variant](hidden)), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def input_gradients(model, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """dL/d(norm input) at every Tapped layer, first layer first, for the mean cross-entropy on (x, y).

    The model stays in training mode (the gradients training sees) and its parameters' .grad are untouched.
    """
    taps = [m for m in model.modules() if isinstance(m, Tapped)]
    for tap in taps:
        tap.sink = []
    saved = [p.grad for p in model.parameters()]
    try:
        F.cross_entropy(model(Tensor(x)), y).backward()
        return [tap.sink[0] for tap in taps]
    finally:
        for tap in taps:
            tap.sink = None
        for p, g in zip(model.parameters(), saved):
            p.grad = g


def gradient_stats(dx: np.ndarray) -> dict:
    """The re-centring / re-scaling statistics of one layer's input gradients dx (batch, H)."""
    dx = dx.astype(np.float64)
    row_mean = dx.mean(axis=1)  # (batch,)
    rms = float(np.sqrt(np.mean(dx**2)))
    mean_abs = float(np.mean(np.abs(row_mean)))
    return {
        "mean_abs": mean_abs,
        "var": float(np.mean(dx.var(axis=1))),
        "rel_mean": mean_abs / rms if rms > 0 else 0.0,
    }


def _layer_stats(model, x, y) -> list[dict]:
    return [gradient_stats(g) for g in input_gradients(model, x, y)]


def same_point_comparison(model, x, y) -> dict:
    """On one LayerNorm model: the per-layer gradient statistics with each backward term switched off."""
    norms = [m.norm for m in model.modules() if isinstance(m, Tapped)]
    out = {}
    for name, dm, dv in (
        ("full", False, False),
        ("detach_mean", True, False),
        ("detach_var", False, True),
        ("detach", True, True),
    ):
        for n in norms:
            n.detach_mean, n.detach_var = dm, dv
        out[name] = _layer_stats(model, x, y)
    for n in norms:
        n.detach_mean = n.detach_var = False
    return out


QUICK = {"epochs": 2, "seeds": 1, "hidden": 32, "n_train": 256}
DEFAULTS = {"epochs": 30, "seeds": 3, "hidden": 64, "n_train": None}


def run_variants(
    variants=VARIANTS,
    *,
    epochs: int | None = None,
    seeds: int | None = None,
    seed: int = 0,
    hidden: int | None = None,
    depth: int = 6,
    batch_size: int = 32,
    lr: float = 1e-3,
    probe_size: int = 256,
    quick: bool = False,
    progress: bool | None = None,
) -> dict:
    """Train every variant for seeds seed, seed+1, ...; losses per epoch and input-gradient statistics per layer."""
    preset = QUICK if quick else DEFAULTS
    epochs = preset["epochs"] if epochs is None else epochs
    seeds = preset["seeds"] if seeds is None else seeds
    hidden = preset["hidden"] if hidden is None else hidden
    check_options(
        "run_variants", lr, epochs=epochs, seeds=seeds, hidden=hidden, depth=depth, batch_size=batch_size,
        probe_size=probe_size,
    )  # fmt: skip
    if not variants:
        raise ValueError("run_variants: no variant to train")
    for v in variants:
        if v not in NORMS:
            raise ValueError(f"run_variants: unknown variant {v!r}; choose from {', '.join(NORMS)}")
    data = load_digits("flat")
    if preset["n_train"]:
        data = subset(data, preset["n_train"])
    probe_x, probe_y = data.x_train[:probe_size], data.y_train[:probe_size]

    def measure(model):
        with single_threaded_blas():
            return {"grad_stats": _layer_stats(model, probe_x, probe_y)}

    runs = [(v, seed + s) for v in variants for s in range(seeds)]
    total = steps_per_epoch(len(data.x_train), batch_size) * epochs * len(runs)
    results, same_point = {}, None
    with progress_bar(total, "variants experiment", enabled=progress) as bar:
        for variant, run_seed in runs:
            bar.set_description(f"{variant}, seed {run_seed}")
            history = train_classifier(
                lambda variant=variant: make_deep_mlp(variant, hidden=hidden, depth=depth),
                data,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                seed=run_seed,
                bar=bar,
                after_training=measure,
                name=f"{variant}, seed {run_seed}",
            )
            if variant == "layer" and same_point is None:
                with single_threaded_blas():
                    same_point = same_point_comparison(history["model"], probe_x, probe_y)
            results.setdefault(variant, []).append(strip_model(history))
    summary = {v: _summarize(hs) for v, hs in results.items()}
    config = {
        "model": f"MLP 64-({hidden}x{depth})-10, Linear -> norm -> ReLU, no norm on the logits",
        "optimizer": f"Adam lr={lr:g}, batch {batch_size}",
        "epochs": epochs,
        "seeds": list(range(seed, seed + seeds)),
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        "probe": f"dL/d(norm input) on the first {len(probe_x)} training samples, after training",
        "quick": quick,
    }
    return {"experiment": "variants", "config": config, "summary": summary, "same_point": same_point, "runs": results}


def _summarize(histories: list[dict]) -> dict:
    """Mean over seeds of the curves, the final numbers, and the per-layer gradient statistics."""
    n_layers = len(histories[0]["extra"]["grad_stats"])
    grad_stats = [
        {
            key: float(np.mean([h["extra"]["grad_stats"][i][key] for h in histories]))
            for key in ("mean_abs", "var", "rel_mean")
        }
        for i in range(n_layers)
    ]
    final = {k: float(np.mean([h[k][-1] for h in histories])) for k in ("train_loss", "test_loss", "test_error")}
    final["best_test_loss"] = float(np.mean([min(h["test_loss"]) for h in histories]))
    final["gap"] = final["test_loss"] - final["train_loss"]
    return {
        "train_loss": mean_and_spread([h["train_loss"] for h in histories]),
        "test_loss": mean_and_spread([h["test_loss"] for h in histories]),
        "test_error": mean_and_spread([h["test_error"] for h in histories]),
        "final": final,
        "grad_stats": grad_stats,
    }
