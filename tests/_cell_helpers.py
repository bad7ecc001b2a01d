"""Helpers shared by the recurrent tests (test_rnn.py, test_lstm_cell.py, test_gru_cell.py)."""

from __future__ import annotations

import numpy as np

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
