r"""The backward passes of the fused LSTM cell (``npnorm/nn/_lstm_cell.py``) in one pass each.

The math, its derivation and the NumPy twins are in ``nn/_lstm_cell.py``. With dc' the gradient of
c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g) and dh that of h' = σ(o) ⊙ tanh(s), per element::

    LSTMCellState   dgates_i = ((dc' · tanh g) · σi) · (1 − σi)     dgates_f = ((dc' · c) · σf) · (1 − σf)
                    dgates_g = (dc' · σi) · (1 − tanh² g)           dgates_o = 0        dc = dc' · σf
    LSTMCellOutput  dgates_o = ((dh · tanh s) · σo) · (1 − σo)      dgates_i = dgates_f = dgates_g = 0
                    ds = (dh · σo) · (1 − tanh² s)

Why a kernel. The NumPy twins take eight and five whole-array passes, each writing a temporary, and then
copy the blocks into place; these read each input once and write each output once. No transcendental
function is involved (the forward's σ and tanh stay NumPy's, which are vectorised; numba's would call the
scalar libm). Measured 7 December (2-vCPU AMD EPYC), (B, H) = (32, 128), both outputs, best of 9 × 500
calls: LSTMCellState's backward 5.4 µs against 35.3 µs for the twin in float32 (9.4 against 61.0 in
float64), LSTMCellOutput's 3.7 against 12.1 µs (8.8 against 19.4). The LN-LSTM training step of ``npnorm
bench`` (28 steps, one thread, alternated in one process, three runs) took 0.93-0.95 of the time with the
twins (medians; minima 0.93-0.97): 0.92-0.95 of the PyTorch loop written the same way, against 0.97-1.01.

The same operations in the same order as the twins, each rounded to the arrays' dtype, and no fastmath (so
LLVM may neither fuse a multiply-add nor reorder): bit-identical to the twins, which the tests check. One
specialisation per dtype: every array is C-contiguous and writable (the callers fall back to the twins
otherwise), an unwanted output is a shared empty stand-in with a flag, and the gate gradients are written
through (B, 4, H) views, so that every index is a loop counter or a constant (numba wraps negative indices
around, and an index such as ``2 * H + j`` that LLVM cannot prove non-negative costs a test per element).
The rows are short and independent, and the work is a few µs at LSTM sizes: a serial loop, no threads.
"""

from __future__ import annotations

import numba

from ._jit import kernel, shared_empty

__all__ = ["JIT_DISABLED", "lstm_cell_output_backward", "lstm_cell_state_backward"]

# Under NUMBA_DISABLE_JIT=1 the kernels would be Python loops over every element: the cell uses its twins.
JIT_DISABLED = bool(numba.config.DISABLE_JIT)


@kernel(parallel=False, noalias=True)  # the outputs are new arrays: they never overlap an input
def _state_backward(dgates, dc, grad, sif, tg, c, need_gates, need_c):
    """dgates (B, 4, H) and dc (B, H) from dc' = grad, σ(i), σ(f) = sif (B, 2, H), tanh(g) = tg and c (B, H)."""
    B, H = tg.shape
    one = tg.dtype.type(1.0)
    zero = tg.dtype.type(0.0)
    for b in range(B):
        if need_gates:
            for j in range(H):
                d = grad[b, j]
                si = sif[b, 0, j]
                sf = sif[b, 1, j]
                t = tg[b, j]
                dgates[b, 0, j] = ((d * t) * si) * (one - si)
                dgates[b, 1, j] = ((d * c[b, j]) * sf) * (one - sf)
                dgates[b, 2, j] = (d * si) * (one - t * t)
            for j in range(H):
                dgates[b, 3, j] = zero  # o does not reach c'
        if need_c:
            for j in range(H):
                dc[b, j] = grad[b, j] * sif[b, 1, j]


@kernel(parallel=False, noalias=True)  # the outputs are new arrays: they never overlap an input
def _output_backward(dgates, ds, grad, so, ts, need_gates, need_s):
    """dgates (B, 4, H) and ds (B, H) from dh = grad, σ(o) = so and tanh(s) = ts (B, H)."""
    B, H = ts.shape
    one = ts.dtype.type(1.0)
    zero = ts.dtype.type(0.0)
    for b in range(B):
        if need_gates:
            for k in range(3):  # i, f and g do not reach h'
                for j in range(H):
                    dgates[b, k, j] = zero
            for j in range(H):
                o = so[b, j]
                dgates[b, 3, j] = ((grad[b, j] * ts[b, j]) * o) * (one - o)
        if need_s:
            for j in range(H):
                t = ts[b, j]
                ds[b, j] = (grad[b, j] * so[b, j]) * (one - t * t)


def lstm_cell_state_backward(dgates, dc, grad, sif, tg, c) -> None:
    """Fill ``dgates`` (B, 4H) and ``dc`` (B, H), either of which may be None (not wanted).

    ``grad`` = dc', ``tg`` = tanh(g) and ``c`` are (B, H), ``sif`` = [σ(i) σ(f)] is (B, 2H): all C-contiguous,
    writable and of one dtype (float32 or float64), as are the outputs.
    """
    B, H = tg.shape
    gates = dgates.reshape(B, 4, H) if dgates is not None else shared_empty(3, tg.dtype)
    _state_backward(
        gates, dc if dc is not None else shared_empty(2, tg.dtype), grad, sif.reshape(B, 2, H), tg, c,
        dgates is not None, dc is not None,
    )  # fmt: skip


def lstm_cell_output_backward(dgates, ds, grad, so, ts) -> None:
    """Fill ``dgates`` (B, 4H) and ``ds`` (B, H), either of which may be None (not wanted).

    ``grad`` = dh, ``so`` = σ(o) and ``ts`` = tanh(s) are (B, H), C-contiguous, writable and of one dtype.
    """
    B, H = ts.shape
    gates = dgates.reshape(B, 4, H) if dgates is not None else shared_empty(3, ts.dtype)
    _output_backward(
        gates, ds if ds is not None else shared_empty(2, ts.dtype), grad, so, ts, dgates is not None, ds is not None
    )
