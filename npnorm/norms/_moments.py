"""Mean and variance by the corrected two-pass algorithm, for the NumPy references and the composed paths.

Two passes: E[x²] − E[x]² cancels catastrophically when |μ| ≫ σ (μ = 1e4, σ = 1e-2 in float32 gives a
variance of 0, or one wildly wrong); the mean of squared deviations d = x − m does not. Corrected (Chan, Golub
& LeVeque 1983; Higham, "Accuracy and Stability of Numerical Algorithms", §1.9): the mean m = Σx/M is off by
its own rounding, c = mean(d) measures that error, and

    μ = m + c,        σ² = mean(d²) − c²

remove it. For a constant unit, c is exactly the rounding, so μ is the constant and σ² is exactly 0:
uncorrected, a float64 row of 0.1s had σ² ≈ ulp² (the mean of seven 0.1s is not 0.1), and with ε = 0 its
x̂ was ±1 instead of 0/0 = NaN (PyTorch: NaN). With ε > 0 its x̂ was ~1e-14 instead of exactly 0.
The Numba kernels compute the same correction in their second pass (kernels/layer_norm.py, batch_norm.py).
"""

from __future__ import annotations

import numpy as np

from ..tensor import Tensor


def corrected_two_pass(x64: np.ndarray, axis) -> tuple[np.ndarray, np.ndarray]:
    """μ and the biased σ² of float64 ``x64`` over ``axis`` (an int or a tuple), the reduced axes dropped."""
    m = x64.mean(axis=axis, keepdims=True)
    d = x64 - m
    c = d.mean(axis=axis, keepdims=True)
    square = (d * d).mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore"):  # inf − inf where Σ d² overflowed: replaced below
        var = np.maximum(square - c * c, 0.0)  # < 0 only by rounding; NaN stays NaN
    # Σ d² overflowed (finite values spread beyond ~1e154): inf, as the callers' overflow check expects (inf − inf
    # would be NaN, which it cannot tell from a NaN input's)
    var[square == np.inf] = np.inf
    return (m + c).squeeze(axis), var.squeeze(axis)


def corrected_mean(x: Tensor, axes: tuple) -> Tensor:
    """μ = m + mean(x − m) over ``axes`` (kept) as engine ops, so that the centred x − μ of a constant unit is
    exactly 0. Its derivative is the plain mean's: mean(x − m) has derivative 0 in x."""
    m = x.mean(axis=axes, keepdims=True)
    return m + (x - m).mean(axis=axes, keepdims=True)
