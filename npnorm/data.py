"""Data sets that need no network: scikit-learn's digits, the adding problem, and a seeded batch iterator.

**Digits.** `load_digits` returns the 1,797 8×8 grey-level images (values 0–16, ten classes) that ship
inside scikit-learn, split into a training and a test part, stratified (each class keeps its share in both
parts) and fixed by `seed`. They are standardized with one mean and one standard deviation over all pixels
of the *training* images (the test images never inform the scaling), in one of three layouts:

    "flat"    (N, 64)      a feature vector, for an MLP
    "rows"    (N, 8, 8)    a sequence of 8 steps, one image row (8 pixels) per step
    "pixels"  (N, 64, 1)   a sequence of 64 steps, one pixel per step, in a fixed random order
                           (the "permuted pixel" task: a long sequence whose dependencies are not local)

Why one mean and one std and not one per pixel: the border pixels are almost always 0 (the corner pixel's
training std is 0, its neighbour's is 0.02), so per-pixel scaling turns a single faint test pixel into a
value of 40 or more. A global scale keeps every input within a few units and treats all steps of the
sequence layouts alike, as the usual MNIST normalization does.

**The adding problem** (Hochreiter & Schmidhuber 1997; the version of Le et al. 2015): each input step holds
a value drawn from U(0, 1) and a marker; exactly two steps are marked, one in each half of the sequence, and
the target is the sum of their two values. Inputs (N, T, 2), targets (N,).

**Batches.** `Batches(x, y, batch_size, shuffle=True, seed=0)` yields (x, y) mini-batches; epoch k's order is
a function of `seed` and k alone, so a run is repeatable.

scikit-learn, matplotlib and tqdm are the optional `examples` extra. When one is missing, `require` raises
`MissingExtraError` (an ImportError) that says how to install it, and the CLI prints it as one line.
"""

from __future__ import annotations

import importlib
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LAYOUTS",
    "Batches",
    "DigitsSplit",
    "MissingExtraError",
    "adding_problem",
    "load_digits",
    "require",
    "stratified_split",
]

LAYOUTS = ("flat", "rows", "pixels")
PIXEL_ORDER_SEED = 1607  # the permutation of the "pixels" layout is the same in every run (arXiv 1607.06450)

_EXTRA = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "tqdm": "tqdm"}


class MissingExtraError(ImportError):
    """An optional dependency of the `examples` extra is not installed."""


def require(module: str, purpose: str):
    """Import `module` (one of the `examples` extra) or raise MissingExtraError saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = _EXTRA.get(module.split(".")[0], module)
        raise MissingExtraError(
            f"{purpose} needs {package}, which is not installed; install it with: pip install 'npnorm[examples]'"
        ) from None


# -------------------------------------------------------------------------------------------- digits


@dataclass(frozen=True)
class DigitsSplit:
    """The standardized digits: training and test inputs in the chosen layout, integer labels (int64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: float  # of all training pixels, in grey levels (0-16)
    std: float
    layout: str

    @property
    def num_classes(self) -> int:
        return 10


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), sorted: from each class, round(test_fraction · its count) go to the test part.

    Both parts must come out non-empty (a ValueError otherwise): an empty training part has no statistics
    to standardize with, an empty test part nothing to evaluate on.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"stratified_split: test_fraction must be in (0, 1), got {test_fraction!r}")
    if len(y) < 2:
        raise ValueError(f"stratified_split: need at least 2 samples to split, got {len(y)}")
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)  # (n_c,)
        n_test = int(round(test_fraction * len(members)))
        test.append(rng.permutation(members)[:n_test])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(y)), test)  # sorted
    if len(train) == 0 or len(test) == 0:
        empty = "training" if len(train) == 0 else "test"
        raise ValueError(
            f"stratified_split: test_fraction={test_fraction!r} leaves the {empty} part empty "
            f"({len(y)} samples; each class sends round(test_fraction · its count) to the test part)"
        )
    return train, test


def load_digits(layout: str = "flat", *, seed: int = 0, test_fraction: float = 0.25, dtype=np.float32) -> DigitsSplit:
    """scikit-learn's 8×8 digits, split (stratified, by `seed`), standardized with training statistics."""
    if layout not in LAYOUTS:
        raise ValueError(f"load_digits: layout must be one of {LAYOUTS}, got {layout!r}")
    _check_seed("load_digits", seed)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"load_digits: dtype must be float32 or float64, got {dtype}")
    datasets = require("sklearn.datasets", "the digits data set")
    raw = datasets.load_digits()
    images = raw.data.astype(np.float64)  # (1797, 64) grey levels 0-16
    labels = raw.target.astype(np.int64)  # (1797,)
    train, test = stratified_split(labels, test_fraction, seed)
    mean = float(images[train].mean())
    std = float(images[train].std())
    scaled = ((images - mean) / std).astype(dtype)  # (1797, 64)
    if layout == "rows":
        scaled = scaled.reshape(-1, 8, 8)  # step t is image row t
    elif layout == "pixels":
        order = np.random.default_rng(PIXEL_ORDER_SEED).permutation(64)
        scaled = scaled[:, order].reshape(-1, 64, 1)  # step t is pixel order[t]
    return DigitsSplit(scaled[train], labels[train], scaled[test], labels[test], mean, std, layout)


# ------------------------------------------------------------------------------------ adding problem


def adding_problem(n: int, T: int, *, seed: int = 0, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of length T: x[:, t] = (value U(0,1), marker 0/1), two markers, y = the sum of the marked values.

    One marker falls in the first half (steps 0 .. T//2 - 1), the other in the second, so the model must
    remember a value for up to T - 1 steps. A constant predictor (always 1.0) has mean squared error 1/6.
    """
    n = _check_count("adding_problem", "n", n, minimum=1)
    T = _check_count("adding_problem", "T", T, minimum=2)
    _check_seed("adding_problem", seed)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):  # an integer dtype would truncate the values to 0
        raise TypeError(f"adding_problem: dtype must be float32 or float64, got {dtype}")
    rng = np.random.default_rng(seed)
    values = rng.random((n, T))  # (n, T)
    first = rng.integers(0, T // 2, size=n)  # (n,)
    second = rng.integers(T // 2, T, size=n)  # (n,)
    markers = np.zeros((n, T))  # (n, T)
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(dtype)  # (n, T, 2)
    y = (values[rows, first] + values[rows, second]).astype(dtype)  # (n,)
    return x, y


# ------------------------------------------------------------------------------------------ batches


class Batches:
    """Mini-batches of (x, y) along axis 0; a new order every epoch when `shuffle`, a function of `seed` only.

    `for xb, yb in batches:` runs one epoch; the k-th pass over the same object uses the k-th permutation of a
    generator seeded with `seed`. `drop_last=True` skips a final short batch (a training step with a batch
    of 1 would make batch statistics meaningless); `len(batches)` counts the batches of one epoch.
    """

    def __init__(self, x, y, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        x, y = np.asarray(x), np.asarray(y)
        if len(x) != len(y):
            raise ValueError(f"Batches: x has {len(x)} samples but y has {len(y)}")
        self.batch_size = _check_count("Batches", "batch_size", batch_size, minimum=1)
        _check_seed("Batches", seed)
        self.x, self.y = x, y
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        full, rest = divmod(len(self.x), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self):
        n = len(self.x)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


# ------------------------------------------------------------------------------------------- checks


def _check_count(who: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{who}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_seed(who: str, seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{who}: seed must be a non-negative integer, got {seed!r}")
