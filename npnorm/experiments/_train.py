"""The training loop every experiment shares: mini-batches, Adam, a guard against divergence, metrics.

One function, `train_classifier`, trains a model on a `DigitsSplit` and returns its history as plain
lists (JSON-ready). After every epoch it evaluates, in eval mode and without a graph, the mean negative
log-likelihood on the whole training set and the loss and error on the test set.

Divergence stops the run. Before any gradient is applied, the loss and then the gradients are checked; a
NaN or inf raises `NonFiniteLossError`, naming the step, so the weights never silently become NaN.
"""

from __future__ import annotations

import contextlib
import math
import numbers

import numpy as np

from .. import functional as F
from .. import optim
from .._random import manual_seed
from ..autograd import Function, no_grad
from ..data import Batches, DigitsSplit
from ..tensor import Tensor


def check_options(who: str, lr: float, **counts) -> None:
    """A ValueError naming the first option that is not a positive integer (`counts`), or an lr that is not
    positive and finite: before any training, where a bad value would otherwise surface as a ZeroDivisionError
    or an empty summary."""
    for option, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{who}: {option} must be a positive integer, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < lr < math.inf:
        raise ValueError(f"{who}: lr must be positive and finite, got {lr!r}")


AFTER_THE_STEP = ("training-set loss", "test loss")  # what NonFiniteLossError measures after an update


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss (or gradient); `step` is the 1-based optimizer step."""

    def __init__(self, what: str, value: float, step: int, epoch: int, lr: float, run: str = ""):
        self.what, self.value, self.step, self.epoch, self.lr, self.run = what, value, step, epoch, lr, run
        if what in AFTER_THE_STEP:  # measured after the step's update
            where = f"after step {step} (epoch {epoch})"
        else:  # measured before the step's update
            where = f"at step {step} (epoch {epoch}), which was not applied"
        super().__init__(
            f"training diverged{f' ({run})' if run else ''}: the {what} is {value} {where}; "
            f"try a smaller learning rate than {lr:g}"
        )


def single_threaded_blas():
    """Single-threaded BLAS for the duration (via threadpoolctl, which scikit-learn brings along).

    The matrices here are tiny (32 × 128): a multi-threaded BLAS spends more time handing the work to its
    threads than multiplying. Measured on a 2-core VM with OpenBLAS (pthreads): (32, 128) @ (128, 128) took
    ~1 ms with 2 threads and 13 µs with one; a training step of the demo MLP 15-25 ms against 2 ms, and
    examples/train_mlp.py 17 s against 3 s. Most of that was OpenBLAS's threads and numba's OpenMP threads
    spinning against each other, which npnorm has since cut short (npnorm/_threads.py: the benchmark's MLP
    step at default threads went from 26-30 ms to 1.0-1.5 ms); a single BLAS thread still saves the
    hand-offs. Setting OPENBLAS_NUM_THREADS=1 before starting Python does the same.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> tuple[float, float]:
    """(mean cross-entropy, error rate) of `model` on (x, y), in eval mode; each module's mode is restored (a
    model with some submodules frozen in eval mode keeps them so)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    total_loss, wrong = 0.0, 0
    try:
        with no_grad():
            for start in range(0, len(x), batch_size):
                logits = model(Tensor(x[start : start + batch_size]))  # (B, classes)
                target = y[start : start + batch_size]
                total_loss += F.cross_entropy(logits, target, reduction="sum").item()
                wrong += int(np.count_nonzero(logits.data.argmax(axis=1) != target))
    finally:
        for module, training in modes:  # each its own flag, as Module.train sets them
            object.__setattr__(module, "training", training)
    return total_loss / len(x), wrong / len(x)


def check_finite(what: str, value: float, step: int, epoch: int, lr: float, run: str = "") -> None:
    if not math.isfinite(value):
        raise NonFiniteLossError(what, value, step, epoch, lr, run)


def train_classifier(
    build_model,
    data: DigitsSplit,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    weight_decay: float = 0.0,
    bar=None,
    record_steps: bool = False,
    after_training=None,
    name: str = "",
) -> dict:
    """Seed, build, train with Adam, evaluate after every epoch; the history as a dict of plain lists.

    `build_model()` is called after `npnorm.manual_seed(seed)`, so the same seed gives the same initial
    weights, the same batch order and (the kernels being deterministic) the same numbers to the last digit.
    `bar` (from `npnorm.progress.progress_bar`) advances once per step. `record_steps` keeps every step's
    loss. `after_training(model)` may add entries measured on the trained model (returned under "extra").
    `name` describes the run in the error raised if it diverges.
    """
    manual_seed(seed)
    model = build_model()
    optimizer = optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    # drop_last: every step sees exactly `batch_size` samples (a batch of 1 would break BatchNorm's statistics)
    batches = Batches(data.x_train, data.y_train, batch_size, seed=seed, drop_last=len(data.x_train) > batch_size)
    # No wall-clock times in here: the same seed must give the same history, to the last digit.
    history = {"epoch": [], "train_loss": [], "train_error": [], "test_loss": [], "test_error": []}
    if record_steps:
        history["step_loss"] = []
    # Overflow shows up as inf/NaN in the loss, which the loop turns into one clear error: no NumPy warnings.
    with single_threaded_blas(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _loop(model, optimizer, batches, data, epochs, lr, bar, history, name)
    if after_training is not None:
        history["extra"] = after_training(model)
    history["model"] = model  # for the caller; removed before anything is serialized
    return history


def _loop(model, optimizer, batches, data, epochs, lr, bar, history, name) -> None:
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        for xb, yb in batches:
            step += 1
            loss = F.cross_entropy(model(Tensor(xb)), yb)
            value = loss.item()
            check_finite("loss", value, step, epoch, lr, name)
            optimizer.zero_grad()
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            grad_sq = sum(float(np.vdot(g, g)) for g in grads)
            if not math.isfinite(grad_sq):  # float32 squares overflow from 1.8e19: look again in float64
                grad_sq = sum(float(np.vdot(g.astype(np.float64), g.astype(np.float64))) for g in grads)
            check_finite("gradient norm", math.sqrt(grad_sq), step, epoch, lr, name)
            optimizer.step()
            if "step_loss" in history:
                history["step_loss"].append(value)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix_str(f"loss {value:.3f}")
        train_loss, train_error = evaluate(model, data.x_train, data.y_train)
        test_loss, test_error = evaluate(model, data.x_test, data.y_test)
        check_finite("training-set loss", train_loss, step, epoch, lr, name)
        history["epoch"].append(epoch)
        history["train_loss"].append(train_loss)
        history["train_error"].append(train_error)
        history["test_loss"].append(test_loss)
        history["test_error"].append(test_error)


def strip_model(history: dict) -> dict:
    """The history without the model object (what goes into JSON)."""
    return {k: v for k, v in history.items() if k != "model"}


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return n_train // batch_size if n_train > batch_size else 1


def mean_and_spread(runs: list[list[float]]) -> dict:
    """Elementwise mean, min and max over runs (lists of equal length): what a plot's band shows."""
    a = np.asarray(runs, dtype=np.float64)  # (runs, epochs)
    return {"mean": a.mean(axis=0).tolist(), "min": a.min(axis=0).tolist(), "max": a.max(axis=0).tolist()}


class GradProbe(Function):
    """The identity in forward; in backward it hands the incoming gradient to `sink` (a list) unchanged.

    Placed in front of a norm layer, it records dL/d(norm input) for the gradient analysis of Xu et al.
    """

    @staticmethod
    def forward(ctx, x, sink):
        ctx.sink = sink
        return x

    @staticmethod
    def backward(ctx, grad):
        ctx.sink.append(np.array(grad, copy=True))
        return grad, None
