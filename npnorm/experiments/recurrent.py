r"""Experiment 2: does layer normalization speed up recurrent networks? (Ba et al. 2016, §3 and §6, at toy scale)

Ba et al. report that their layer-normalized LSTM converges faster than the plain one on every recurrent
task they tried, and that the gain is largest on long sequences and with small mini-batches: LN computes
the same statistics at every time step, so it keeps the summed inputs of the recurrent units in a fixed range
however long the sequence runs.

Here three tasks that need no download, each from short to long:

    rows     the digits, one 8-pixel image row per step: 8 steps of 8 inputs, 10 classes
    pixels   the digits, one pixel per step in a fixed random order: 64 steps of 1 input, 10 classes
             (permuted pixel-by-pixel digits: the long-sequence case, where the paper expects LN to help most)
    adding   the adding problem: T steps of (value, marker); regress the sum of the two marked values
             (a model that always answers 1 has MSE 1/6 ≈ 0.167)

and four models, each a one-layer recurrent network followed by a Linear read-out of the last hidden state:

    lstm     nn.LSTM (PyTorch's LSTM)             ln_lstm  nn.LSTM(layer_norm=True), Ba et al. eq. 20-22
    gru      nn.GRU (PyTorch's GRU)               ln_gru   nn.GRU(layer_norm=True), Ba et al. eq. 26-28

Every model trains with the same Adam learning rate (1e-3, as in the MLP experiments), the same gradient
clipping (the joint norm of all gradients at most `clip`, via `optim.clip_grad_norm_`), the same batch order
and the same number of steps. The default budget (DEFAULTS: H = 64, batch 32, 300 steps, about 7 epochs of
the digits, 3 seeds, adding sequences of T = 30) takes about three minutes on 2 cores; the models are not
trained to convergence, so the comparison is about speed.
What is measured, per task and model, over several seeds:

    step_loss        the training loss of every mini-batch (cross-entropy or MSE): the training curve
    eval_step/metric the test accuracy (digits) or test MSE (adding) every `eval_every` steps
    steps_to_target  the first evaluation step at which the test metric reached the task's target
                     (None if it never did); the targets are fixed in TARGETS, before the runs
    mean_loss        the training loss averaged over all steps: one number for "how fast", lower is faster
    final_loss       the training loss averaged over the last 10% of the steps: where training got to
    final            the test metric after the last step

`run_recurrent` returns plain dicts and lists (JSON-ready); the same seed gives the same numbers to the
last digit (weights from `npnorm.manual_seed`, the batch order from the seed, fixed data, deterministic
kernels, no wall-clock times in the result).
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .. import nn, optim
from .._random import manual_seed
from ..autograd import no_grad
from ..data import Batches, adding_problem, load_digits
from ..progress import progress_bar
from ..tensor import Tensor
from ._train import check_finite, check_options, evaluate, mean_and_spread, single_threaded_blas

TASKS = ("rows", "pixels", "adding")
MODELS = ("lstm", "ln_lstm", "gru", "ln_gru")
LABELS = {"lstm": "LSTM", "ln_lstm": "LN-LSTM", "gru": "GRU", "ln_gru": "LN-GRU"}
TASK_LABELS = {
    "rows": "digits by rows (8 steps × 8 px)",
    "pixels": "permuted pixel digits (64 steps × 1 px)",
    "adding": "adding problem",
}

# The test metric each task is judged by, and the level that counts as "reached" for steps_to_target.
# Fixed before the reported runs, from pilot runs, at a level the models pass part-way through training.
METRIC = {"rows": "accuracy", "pixels": "accuracy", "adding": "mse"}
TARGETS = {"rows": 0.90, "pixels": 0.50, "adding": 0.02}

ADDING_DATA_SEED = 1997  # the adding problem's training set; its test set uses the next seed
QUICK = {
    "steps": 30,
    "seeds": 1,
    "hidden": 16,
    "batch_size": 16,
    "adding_length": 10,
    "n_adding": 256,
    "eval_every": 10,
    "n_test": 100,
}
DEFAULTS = {
    "steps": 300,
    "seeds": 3,
    "hidden": 64,
    "batch_size": 32,
    "adding_length": 30,
    "n_adding": 4096,
    "eval_every": 25,
    "n_test": None,  # the whole digits test set, and 1000 adding sequences
}


class SequenceModel(nn.Module):
    """x (B, T, in) → one-layer LSTM or GRU (optionally Ba et al.'s LN variant) → Linear on h_T → (B, out)."""

    def __init__(self, model: str, input_size: int, hidden: int, outputs: int):
        super().__init__()
        if model not in MODELS:
            raise ValueError(f"SequenceModel: unknown model {model!r}; choose from {', '.join(MODELS)}")
        cell = nn.LSTM if model.endswith("lstm") else nn.GRU
        self.rnn = cell(input_size, hidden, batch_first=True, layer_norm=model.startswith("ln_"))
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x):
        _, state = self.rnn(x)
        h_n = state[0] if isinstance(state, tuple) else state  # (num_layers=1, B, H); LSTM returns (h_n, c_n)
        return self.head(h_n[0])  # (B, out)


# --------------------------------------------------------------------------------------------- the data


def load_task(task: str, *, adding_length: int = 40, n_adding: int = 4096, n_test: int | None = None) -> dict:
    """Training and test arrays of one task, with what the model and the metric need to know about them."""
    if task not in TASKS:
        raise ValueError(f"load_task: unknown task {task!r}; choose from {', '.join(TASKS)}")
    if task == "adding":
        x_train, y_train = adding_problem(n_adding, adding_length, seed=ADDING_DATA_SEED)
        x_test, y_test = adding_problem(n_test or 1000, adding_length, seed=ADDING_DATA_SEED + 1)
        outputs = 1
    else:
        data = load_digits(task)
        x_train, y_train, x_test, y_test = data.x_train, data.y_train, data.x_test, data.y_test
        if n_test:
            x_test, y_test = x_test[:n_test], y_test[:n_test]
        outputs = data.num_classes
    return {
        "task": task,
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "input_size": x_train.shape[2],
        "length": x_train.shape[1],
        "outputs": outputs,
        "metric": METRIC[task],
    }


def _loss(task: str, output: Tensor, y: np.ndarray) -> Tensor:
    if METRIC[task] == "mse":
        return F.mse_loss(output, Tensor(y.reshape(-1, 1)))  # output (B, 1)
    return F.cross_entropy(output, y)


def evaluate_metric(model, data: dict, batch_size: int = 500) -> tuple[float, float]:
    """(test metric, test loss) of `model`, without a graph: accuracy and cross-entropy (digits), or the MSE
    twice (adding). The loss tells a diverged model apart, whose NaN logits still give an accuracy."""
    if data["metric"] == "accuracy":
        loss, error = evaluate(model, data["x_test"], data["y_test"], batch_size)
        return 1.0 - error, loss
    total = 0.0
    with no_grad():
        for start in range(0, len(data["x_test"]), batch_size):
            out = model(Tensor(data["x_test"][start : start + batch_size]))  # (B, 1)
            diff = out.data[:, 0].astype(np.float64) - data["y_test"][start : start + batch_size]
            total += float(np.sum(diff**2))
    mse = total / len(data["x_test"])
    return mse, mse


def reached(metric: str, value: float, target: float) -> bool:
    return value >= target if metric == "accuracy" else value <= target


# ------------------------------------------------------------------------------------------ one run


def train_sequence_model(
    model_name: str,
    data: dict,
    *,
    steps: int,
    batch_size: int,
    hidden: int,
    lr: float,
    clip: float,
    seed: int,
    eval_every: int,
    target: float,
    bar=None,
) -> dict:
    """Seed, build, train for `steps` Adam steps with clipped gradients; the history as plain lists.

    The test metric is measured every `eval_every` steps and after the last one. A NaN or infinite loss or
    gradient norm raises `NonFiniteLossError` (from _train) before the step is applied, a non-finite test
    loss after it.
    """
    task = data["task"]
    name = f"{LABELS[model_name]} on {task}, seed {seed}"
    manual_seed(seed)
    model = SequenceModel(model_name, data["input_size"], hidden, data["outputs"])
    params = list(model.parameters())
    optimizer = optim.Adam(params, lr=lr)
    batches = Batches(data["x_train"], data["y_train"], batch_size, seed=seed, drop_last=True)
    if len(batches) == 0:
        raise ValueError(f"train_sequence_model: batch_size {batch_size} exceeds the {len(data['x_train'])} samples")
    history = {"step_loss": [], "grad_norm": [], "eval_step": [], "eval_metric": []}
    step, epoch = 0, 0
    while step < steps:
        epoch += 1
        model.train()
        for xb, yb in batches:
            step += 1
            loss = _loss(task, model(Tensor(xb)), yb)
            value = loss.item()
            check_finite("loss", value, step, epoch, lr, name)
            optimizer.zero_grad()
            loss.backward()
            norm = optim.clip_grad_norm_(params, clip)  # the norm before clipping
            check_finite("gradient norm", norm, step, epoch, lr, name)
            optimizer.step()
            history["step_loss"].append(value)
            history["grad_norm"].append(float(norm))
            if step % eval_every == 0 or step == steps:
                metric, test_loss = evaluate_metric(model, data)
                # the only check of the last update's outcome: a NaN model has an "accuracy" all the same
                check_finite("test loss", test_loss, step, epoch, lr, name)
                history["eval_step"].append(step)
                history["eval_metric"].append(metric)
                model.train()
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix_str(f"loss {value:.3f}")
            if step == steps:
                break
    hits = [s for s, m in zip(history["eval_step"], history["eval_metric"]) if reached(data["metric"], m, target)]
    history["steps_to_target"] = hits[0] if hits else None
    history["mean_loss"] = float(np.mean(history["step_loss"]))
    history["final_loss"] = float(np.mean(history["step_loss"][-max(1, steps // 10) :]))  # the last 10% of steps
    history["final"] = history["eval_metric"][-1]
    return history


# ---------------------------------------------------------------------------------------- the experiment


def run_recurrent(
    tasks=TASKS,
    models=MODELS,
    *,
    steps: int | None = None,
    seeds: int | None = None,
    seed: int = 0,
    hidden: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-3,
    clip: float = 1.0,
    adding_length: int | None = None,
    eval_every: int | None = None,
    quick: bool = False,
    progress: bool | None = None,
) -> dict:
    """Train every (task, model) for seeds seed, seed+1, ...; curves and metrics per task per model.

    Returns {"experiment": "recurrent", "config", "summary": {task: {model: ...}}, "runs": {task: {model:
    [history per seed]}}}. `quick` shrinks everything (H = 16, 30 steps, short adding sequences) so that it
    runs in seconds. Options left at None take the preset's value (QUICK or DEFAULTS).
    """
    preset = QUICK if quick else DEFAULTS
    steps = preset["steps"] if steps is None else steps
    seeds = preset["seeds"] if seeds is None else seeds
    hidden = preset["hidden"] if hidden is None else hidden
    batch_size = preset["batch_size"] if batch_size is None else batch_size
    adding_length = preset["adding_length"] if adding_length is None else adding_length
    eval_every = preset["eval_every"] if eval_every is None else eval_every
    tasks, models = _check_names(tasks, TASKS, "task"), _check_names(models, MODELS, "model")
    check_options(
        "run_recurrent", lr, steps=steps, seeds=seeds, hidden=hidden, batch_size=batch_size, eval_every=eval_every
    )
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"run_recurrent: clip must be positive and finite, got {clip!r}")

    datasets = {
        t: load_task(t, adding_length=adding_length, n_adding=preset["n_adding"], n_test=preset["n_test"])
        for t in tasks
    }
    runs = [(t, m, seed + s) for t in tasks for m in models for s in range(seeds)]
    results: dict = {t: {} for t in tasks}
    with progress_bar(steps * len(runs), "recurrent experiment", enabled=progress) as bar:
        # Tiny matrices: BLAS threads cost more than they save (and compete with numba's); see _train.
        with single_threaded_blas(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for task, model_name, run_seed in runs:
                bar.set_description(f"{LABELS[model_name]} on {task}, seed {run_seed}")
                history = train_sequence_model(
                    model_name,
                    datasets[task],
                    steps=steps,
                    batch_size=batch_size,
                    hidden=hidden,
                    lr=lr,
                    clip=clip,
                    seed=run_seed,
                    eval_every=eval_every,
                    target=TARGETS[task],
                    bar=bar,
                )
                results[task].setdefault(model_name, []).append(history)
    summary = {t: {m: summarize(hs, window=max(1, steps // 30)) for m, hs in results[t].items()} for t in tasks}
    config = {
        "models": "one-layer LSTM / GRU (LN: Ba et al. 2016) → Linear on the last hidden state",
        "hidden": hidden,
        "optimizer": f"Adam lr={lr:g}, gradient norm clipped at {clip:g}",
        "batch_size": batch_size,
        "steps": steps,
        "eval_every": eval_every,
        "seeds": list(range(seed, seed + seeds)),
        "tasks": {
            t: {
                "label": TASK_LABELS[t] + (f", T = {d['length']}" if t == "adding" else ""),
                "length": d["length"],
                "input_size": d["input_size"],
                "n_train": len(d["x_train"]),
                "n_test": len(d["x_test"]),
                "metric": d["metric"],
                "target": TARGETS[t],
            }
            for t, d in datasets.items()
        },
        "quick": quick,
    }
    return {"experiment": "recurrent", "config": config, "summary": summary, "runs": results}


def _check_names(names, allowed: tuple, what: str) -> list:
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"run_recurrent: unknown {what}(s) {unknown or names}; choose from {', '.join(allowed)}")
    return names


def moving_average(values: list[float], window: int) -> list[float]:
    """The mean of the last `window` values at every step (fewer at the start): a readable training curve."""
    cumsum = np.cumsum(np.asarray(values, dtype=np.float64))
    out = np.empty_like(cumsum)
    out[:window] = cumsum[:window] / np.arange(1, min(window, len(cumsum)) + 1)
    out[window:] = (cumsum[window:] - cumsum[:-window]) / window
    return out.tolist()


def summarize(histories: list[dict], window: int) -> dict:
    """Over seeds: the smoothed loss curve and the test-metric curve (mean, min, max), and the numbers."""
    to_target = [h["steps_to_target"] for h in histories]
    hit = [s for s in to_target if s is not None]
    return {
        "loss_curve": mean_and_spread([moving_average(h["step_loss"], window) for h in histories]),
        "eval_step": histories[0]["eval_step"],
        "metric_curve": mean_and_spread([h["eval_metric"] for h in histories]),
        "final": _spread([h["final"] for h in histories]),
        "mean_loss": _spread([h["mean_loss"] for h in histories]),
        "final_loss": _spread([h["final_loss"] for h in histories]),
        "steps_to_target": to_target,
        # the mean over the seeds that got there; how many did is len(hit) of len(to_target)
        "steps_to_target_mean": float(np.mean(hit)) if hit else None,
        "reached": len(hit),
        "smoothing_window": window,
    }


def _spread(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}


# ------------------------------------------------------------------------------------------ reporting


def format_summary(result: dict) -> str:
    """The result as a plain-text table (what `npnorm train rnn` prints)."""
    cfg = result["config"]
    lines = [
        f"{cfg['models']}, H = {cfg['hidden']}; {cfg['optimizer']}; batch {cfg['batch_size']}; "
        f"{cfg['steps']} steps; seeds {cfg['seeds']}. Mean [min, max] over seeds:"
    ]
    for task, per_model in result["summary"].items():
        t = cfg["tasks"][task]
        unit = "test accuracy %" if t["metric"] == "accuracy" else "test MSE"
        target = f"{100 * t['target']:.0f}%" if t["metric"] == "accuracy" else f"{t['target']:g}"
        lines.append(f"\n{t['label']}")
        lines.append(
            f"{'model':<8} {'final ' + unit:<28} {'mean training loss':<26} {'final training loss':<26} "
            f"steps to {target}"
        )
        for model, s in per_model.items():
            lines.append(
                f"{LABELS[model]:<8} {format_spread(s['final'], t['metric']):<28} "
                f"{format_spread(s['mean_loss'], 'loss'):<26} {format_spread(s['final_loss'], 'loss'):<26} "
                f"{format_steps(s)}"
            )
    return "\n".join(lines)


def format_spread(stats: dict, kind: str) -> str:
    """'mean [min, max]' for accuracy (in %), MSE or loss."""
    if kind == "accuracy":
        return f"{100 * stats['mean']:.1f} [{100 * stats['min']:.1f}, {100 * stats['max']:.1f}]"
    return f"{stats['mean']:.4f} [{stats['min']:.4f}, {stats['max']:.4f}]"


def format_steps(s: dict) -> str:
    """'mean (per seed)': e.g. '150 (125, 175)', or '— (n/a, 300)' when a seed never reached the target."""
    per_seed = ", ".join("never" if v is None else str(v) for v in s["steps_to_target"])
    if s["reached"] == len(s["steps_to_target"]):
        return f"{s['steps_to_target_mean']:.0f} ({per_seed})"
    return f"{s['reached']}/{len(s['steps_to_target'])} reached ({per_seed})"


def plot_recurrent(result: dict, path) -> str:
    """Smoothed training loss (top) and the test metric (bottom) against steps, one column per task."""
    from ..plots import _band, _figure, _loss_scale, _save

    styles = {
        "lstm": ("tab:blue", "--"),
        "ln_lstm": ("tab:blue", "-"),
        "gru": ("tab:green", "--"),
        "ln_gru": ("tab:green", "-"),
    }
    cfg, summary = result["config"], result["summary"]
    fig = _figure(max(6.0, 3.6 * len(summary)), 5.6)
    axes = fig.subplots(2, len(summary), squeeze=False)
    for col, (task, per_model) in enumerate(summary.items()):
        t = cfg["tasks"][task]
        ax_loss, ax_metric = axes[0, col], axes[1, col]
        accuracy = t["metric"] == "accuracy"
        for model, s in per_model.items():
            color, dash = styles[model]
            _band(ax_loss, s["loss_curve"], LABELS[model], color, linestyle=dash)
            scale = 100 if accuracy else 1
            curve = {k: [scale * v for v in s["metric_curve"][k]] for k in ("mean", "min", "max")}
            _band(ax_metric, curve, LABELS[model], color, x=s["eval_step"], linestyle=dash)
        _loss_scale(ax_loss, [v for s in per_model.values() for v in s["loss_curve"]["mean"]])
        ax_loss.set(title=t["label"], xlabel="step", ylabel="training loss (smoothed)")
        target = 100 * t["target"] if accuracy else t["target"]
        ax_metric.axhline(target, color="gray", lw=0.8, ls=":", label="target")
        if not accuracy:
            ax_metric.set_yscale("log")
            ax_metric.axhline(1 / 6, color="black", lw=0.8, ls="-.")  # the MSE of always answering 1
            ax_metric.annotate(
                "always answering 1", (0.98, 1 / 6), xycoords=("axes fraction", "data"), ha="right", va="bottom"
            )
        ax_metric.set(xlabel="step", ylabel="test accuracy (%)" if accuracy else "test MSE")
    axes[0, 0].legend(fontsize="small")
    axes[1, 0].legend(fontsize="small")
    models = " vs ".join(LABELS[m] for m in next(iter(summary.values())))
    fig.suptitle(
        f"Ba et al. 2016: {models}, H = {cfg['hidden']}, batch {cfg['batch_size']}\n"
        f"mean of {len(cfg['seeds'])} seed(s), band: min..max; dotted: the target"
    )
    return _save(fig, path)
