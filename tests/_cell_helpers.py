"""Helpers shared by the recurrent tests (test_rnn.py, test_lstm_cell.py, test_gru_cell.py)."""

from __future__ import annotations

import numpy as np

import npnorm

EPS32 = float(np.finfo(np.float32).eps)


def randomize(module, rng: np.random.Generator):
    """Parameters away from their initial values: LN gains around 1, LN biases and everything else in ±0.8,
    so that every parameter visibly matters (an LN bias of 0 and gain of 1 would hide mistakes)."""
    for name, p in module.named_parameters():
        if name.startswith("ln") and name.endswith(".weight"):
            p.data[...] = rng.uniform(0.5, 1.5, p.shape)
        else:
            p.data[...] = rng.uniform(-0.8, 0.8, p.shape)
    return module


def within_ulps(actual32, expected64, envelope, ulps, what):
    """|actual − expected| <= ulps · eps32 · envelope, elementwise; envelope is the size of the terms."""
    err = np.abs(actual32.astype(np.float64) - expected64)
    bound = ulps * EPS32 * envelope
    worst = float(np.max(err / np.maximum(EPS32 * envelope, np.finfo(np.float64).tiny)))
    assert np.all(err <= bound), f"{what}: {worst:.1f} float32 ulps of the envelope, allowed {ulps}"


def random_cell(cell_class, layer_norm: bool, rng: np.random.Generator, states: int):
    """(cell, x, states): a float64 cell (input 3, hidden 4) with :func:`randomize`d parameters, an input x
    (batch 2) and `states` state tensors (h, or h and c) that require grad."""
    cell = randomize(cell_class(3, 4, layer_norm=layer_norm, dtype=np.float64, rng=0), rng)
    x = npnorm.tensor(rng.standard_normal((2, 3)))
    return cell, x, [npnorm.tensor(rng.standard_normal((2, 4)), requires_grad=True) for _ in range(states)]


def outputs_and_grads(step, args, params, douts) -> list:
    """[each output's data, then each param's .grad] after one backward of sum(output ⊙ dout) through
    `step(*args)` (one output or a tuple), with every param's gradient cleared first."""
    for p in params:
        p.grad = None
    outputs = step(*args)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    sum(((o * npnorm.Tensor(d)).sum() for o, d in zip(outputs, douts, strict=True)), npnorm.tensor(0.0)).backward()
    return [*(o.data for o in outputs), *(p.grad for p in params)]


def same_bits(actual, expected, what):
    """Both None, or arrays of one dtype and shape with the same bits (signed zeros and NaN payloads too)."""
    assert (actual is None) == (expected is None), what
    if actual is not None:
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
        np.testing.assert_array_equal(actual.view(f"u{actual.itemsize}"), expected.view(f"u{expected.itemsize}"), what)


def counting_kernels(kern, *names):
    """A stand-in for a kernels module with the functions `names` of `kern`, and the list their calls append
    their names to (to check that a model's backward reaches the kernels)."""
    from types import SimpleNamespace

    calls = []

    def counted(fn):
        def call(*args):
            calls.append(fn.__name__)
            return fn(*args)

        return call

    return SimpleNamespace(**{name: counted(getattr(kern, name)) for name in names}), calls


GRADIENT_VARIANTS = ("contiguous", "strided", "read-only", "float64 gradient")


def gradient_variant(dout: np.ndarray, variant: str) -> np.ndarray:
    """`dout` (float32) as one of GRADIENT_VARIANTS: as it is, strided (the same values, every other column of
    a wider array), read-only, or promoted to float64. The cells' kernels take only the first two (a strided
    gradient is copied first); the others go to the NumPy twins."""
    if variant == "strided":
        return strided(dout)
    if variant == "read-only":
        dout = dout.copy()
        dout.flags.writeable = False
        return dout
    if variant == "float64 gradient":
        return dout.astype(np.float64)
    return dout


def strided(a: np.ndarray) -> np.ndarray:
    """The values of the 2-D `a` as a strided view: every other column of a twice as wide array."""
    return np.repeat(a, 2, axis=1)[:, ::2]
