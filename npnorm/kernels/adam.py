r"""Adam's moment and parameter update in one pass (``optim.Adam`` and ``optim.AdamW``).

Per element, with g the gradient (weight decay already applied by the caller), β₁, β₂, ε and the step's
scalars ``step_size`` = γ / (1 − β₁ᵗ) and ``bias_correction2_sqrt`` = √(1 − β₂ᵗ)::

    m ← β₁m + (1 − β₁)g
    v ← β₂v + (1 − β₂)g²
    θ ← θ − (step_size · m) / (√v / bias_correction2_sqrt + ε)

``optim._adam_update_numpy`` is the NumPy twin: eleven whole-array passes per parameter (each ``*=``,
``+=``, ``sqrt`` reads and writes every element). Here each element is read once and written once; for
the 64-256-256-10 MLP of ``npnorm bench`` that took Adam from ~0.27 ms to a few tens of µs per step.

The same operations in the same order, each rounded to the parameter's dtype (the scalars arrive as
values of that dtype, and there is no fastmath at all, so LLVM may neither fuse a multiply-add nor
reorder), give bit-identical results to the NumPy twin; the tests check that. All arrays are 1-D and
C-contiguous views of the parameter, its two moments and its gradient; ``optim`` falls back to the NumPy
twin for anything else.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from ._jit import kernel

__all__ = ["JIT_DISABLED", "adam_update"]

# Under NUMBA_DISABLE_JIT=1 the kernel would be a Python loop over every element; optim then uses NumPy.
JIT_DISABLED = bool(numba.config.DISABLE_JIT)


@kernel(parallel=False)
def _adam_update(p, m, v, g, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, bc2_sqrt, eps):
    for j in range(p.shape[0]):
        gj = g[j]
        mj = m[j] * beta1 + gj * one_minus_beta1  # (β₁m) + ((1 − β₁)g), as the NumPy twin rounds them
        vj = v[j] * beta2 + (gj * gj) * one_minus_beta2
        m[j] = mj
        v[j] = vj
        denom = np.sqrt(vj) / bc2_sqrt + eps
        p[j] = p[j] - (mj * step_size) / denom


def adam_update(p, m, v, g, beta1, beta2, eps, step_size, bias_correction2_sqrt) -> None:
    """Update ``p``, ``m`` and ``v`` in place (1-D C-contiguous arrays of one dtype; ``g`` read only).

    The float scalars are rounded once to the arrays' dtype, as the NumPy twin rounds them where they meet
    an array.
    """
    _adam_update(p, m, v, g, *_scalars(p.dtype.type, beta1, beta2, eps, step_size, bias_correction2_sqrt))


@functools.lru_cache(maxsize=64)
def _scalars(dt, beta1, beta2, eps, step_size, bias_correction2_sqrt) -> tuple:
    """The kernel's scalars in the arrays' dtype: computed once per step, not once per parameter (seven NumPy
    scalar conversions, ~1.5 µs, against a kernel call of ~0.8 µs for a 256-vector)."""
    return dt(beta1), dt(1 - beta1), dt(beta2), dt(1 - beta2), dt(step_size), dt(bias_correction2_sqrt), dt(eps)
