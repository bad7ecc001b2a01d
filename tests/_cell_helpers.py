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
