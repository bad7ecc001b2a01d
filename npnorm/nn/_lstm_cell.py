r"""The pointwise part of an LSTM step, fused into two Functions with hand-derived backward passes.

Built from primitives, one LSTM step records about twenty small ops after the gate projections (four slices
of the gates, three sigmoids, two tanh, three products, a sum), each paying the engine's overhead forward
and backward. Like PyTorch's fused LSTM cell, these two Functions do the same arithmetic in two nodes.

Notation: gates (B, 4H) holds the pre-activations in PyTorch's order [i; f; g; o], column blocks of width H;
c (B, H) is the previous cell state; s (B, H) is what the output gate reads: c' for the plain LSTM,
LN(c') for Ba et al.'s LN-LSTM (the LN between the two Functions stays an ordinary node).

Forward:

    LSTMCellState   c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)                    (B, H)
    LSTMCellOutput  h' = σ(o) ⊙ tanh(s)                                (B, H)

Derivation — the chain rule through the two activations, whose derivatives are written with their outputs
(which forward has already computed, so backward saves them instead of recomputing):

    σ(a) = 1 / (1 + e^-a)        σ'(a) = e^-a / (1 + e^-a)² = σ(a) (1 − σ(a))
    tanh'(a) = 1 − tanh²(a)

    ∂c'/∂c = σ(f)
    ∂c'/∂i = tanh(g) · σ'(i) = tanh(g) σ(i) (1 − σ(i))
    ∂c'/∂f = c · σ'(f)       = c σ(f) (1 − σ(f))
    ∂c'/∂g = σ(i) · tanh'(g) = σ(i) (1 − tanh²(g))
    ∂c'/∂o = 0                                               (o only reaches h', through LSTMCellOutput)

    ∂h'/∂o = tanh(s) · σ'(o) = tanh(s) σ(o) (1 − σ(o))
    ∂h'/∂s = σ(o) · tanh'(s) = σ(o) (1 − tanh²(s))
    ∂h'/∂i = ∂h'/∂f = ∂h'/∂g = 0

Every derivative is elementwise (element (b, j) of c' depends only on element (b, j) of c and of each gate
block), so each backward is upstream ⊙ derivative, block by block.

Backward — with dc' = dL/dc' and dh = dL/dh':

    LSTMCellState   dc       = dc' ⊙ σ(f)
                    dgates_i = dc' ⊙ tanh(g) ⊙ σ(i) (1 − σ(i))
                    dgates_f = dc' ⊙ c ⊙ σ(f) (1 − σ(f))
                    dgates_g = dc' ⊙ σ(i) ⊙ (1 − tanh²(g))
                    dgates_o = 0
    saved: σ(i), σ(f), tanh(g), c

    LSTMCellOutput  dgates_o = dh ⊙ tanh(s) ⊙ σ(o) (1 − σ(o))
                    dgates_i = dgates_f = dgates_g = 0
                    ds       = dh ⊙ σ(o) ⊙ (1 − tanh²(s))
    saved: σ(o), tanh(s)

The engine sums the two dense (B, 4H) gate gradients, as it would sum the four slices' gradients of the
unfused step. Products are taken in the order the unfused composition (F.sigmoid, F.tanh, slices, * and +)
takes them, so both give the same numbers; σ is ops.Sigmoid's own (`ops.sigmoid_array`: e^-a may overflow
to inf for a → −∞, giving σ = 0, silently). The gates and the state must share one dtype, which the
results keep (float32 in, float32 out).

Each backward runs as one Numba pass (``npnorm/kernels/lstm_cell.py``: 5.4 and 3.7 µs against 35 and 12 µs
at (32, 128) float32, the LN-LSTM step of ``npnorm bench`` in 0.93-0.95 of the time) where numba can run
it, and otherwise as its NumPy twin below (``_state_backward_numpy``, ``_output_backward_numpy``); both take
the same operations in the same order and give the same bits.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function
from ..functional import as_tensor
from ..ops import sigmoid_array
from ..tensor import Tensor
from . import _cell_kernels
from ._checks import gate_hidden_size

_BLOCKS = ("i", "f", "g", "o")  # the gates' column blocks, PyTorch's order


class LSTMCellState(Function):
    """c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g) from gates (B, 4H) [i; f; g; o] and c (B, H); backward as in the
    module docstring (dgates is dense, zero in the o block)."""

    returns_fresh_grads = True  # dgates and dc are new arrays

    @staticmethod
    def forward(ctx, gates, c):
        H = gate_hidden_size("lstm_cell_state", gates, _BLOCKS, {"c": c})
        sif = sigmoid_array(gates[:, : 2 * H])  # (B, 2H): σ(i), σ(f) in one pass, the blocks being adjacent
        si, sf = sif[:, :H], sif[:, H:]  # (B, H) each
        tg = np.tanh(gates[:, 2 * H : 3 * H])  # (B, H) tanh(g)
        ctx.save_for_backward(sif, tg, c)
        c_new = sf * c  # (B, H)
        c_new += si * tg
        return c_new

    @staticmethod
    def backward(ctx, grad):
        sif, tg, c = ctx.saved
        need_gates, need_c = ctx.needs_input_grad
        kern = _kernels()
        grad = np.ascontiguousarray(grad)  # e.g. the broadcast gradient of a sum: one copy, then the kernel
        if kern is None or not _cell_kernels.ready(tg, grad, sif, c):
            return _state_backward_numpy(grad, sif, tg, c, need_gates, need_c)
        B, H = tg.shape
        dgates = np.empty((B, 4 * H), dtype=tg.dtype) if need_gates else None  # (B, 4H)
        dc = np.empty((B, H), dtype=tg.dtype) if need_c else None  # (B, H)
        kern.lstm_cell_state_backward(dgates, dc, grad, sif, tg, c)
        return dgates, dc


def _state_backward_numpy(grad, sif, tg, c, need_gates, need_c):
    """LSTMCellState's backward in NumPy (the twin of kernels/lstm_cell.py, the same operations in the same
    order): (dgates (B, 4H) or None, dc (B, H) or None)."""
    B, H = tg.shape
    si, sf = sif[:, :H], sif[:, H:]  # (B, H) each
    dgates = None
    if need_gates:
        # Each block in a contiguous (B, H) array, then one copy into place: at LSTM sizes a ufunc writing
        # into a strided column block of (B, 4H) costs about twice as much as into a contiguous array.
        di = grad * tg  # (B, H) dc' ⊙ tanh(g)
        di *= si
        di *= 1 - si  # ... ⊙ σ(i)(1 − σ(i))
        df = grad * c  # (B, H) dc' ⊙ c
        df *= sf
        df *= 1 - sf  # ... ⊙ σ(f)(1 − σ(f))
        dg = grad * si  # (B, H) dc' ⊙ σ(i)
        dg *= 1 - tg * tg  # ... ⊙ (1 − tanh²(g))
        dgates = np.empty((B, 4 * H), dtype=di.dtype)  # (B, 4H)
        dgates[:, :H], dgates[:, H : 2 * H], dgates[:, 2 * H : 3 * H] = di, df, dg
        dgates[:, 3 * H :] = 0  # o does not reach c'
    dc = grad * sf if need_c else None  # (B, H)
    return dgates, dc


class LSTMCellOutput(Function):
    """h' = σ(o) ⊙ tanh(s) from gates (B, 4H) [i; f; g; o] and s (B, H), s = c' or LN(c'); backward as in
    the module docstring (dgates is dense, zero outside the o block)."""

    returns_fresh_grads = True  # dgates and ds are new arrays

    @staticmethod
    def forward(ctx, gates, s):
        H = gate_hidden_size("lstm_cell_output", gates, _BLOCKS, {"s": s})
        so = sigmoid_array(gates[:, 3 * H :])  # (B, H) σ(o)
        ts = np.tanh(s)  # (B, H) tanh(s)
        ctx.save_for_backward(so, ts)
        return so * ts

    @staticmethod
    def backward(ctx, grad):
        so, ts = ctx.saved
        need_gates, need_s = ctx.needs_input_grad
        kern = _kernels()
        grad = np.ascontiguousarray(grad)  # e.g. the broadcast gradient of a sum: one copy, then the kernel
        if kern is None or not _cell_kernels.ready(ts, grad, so):
            return _output_backward_numpy(grad, so, ts, need_gates, need_s)
        B, H = ts.shape
        dgates = np.empty((B, 4 * H), dtype=ts.dtype) if need_gates else None  # (B, 4H)
        ds = np.empty((B, H), dtype=ts.dtype) if need_s else None  # (B, H)
        kern.lstm_cell_output_backward(dgates, ds, grad, so, ts)
        return dgates, ds


def _output_backward_numpy(grad, so, ts, need_gates, need_s):
    """LSTMCellOutput's backward in NumPy (the twin of kernels/lstm_cell.py): (dgates (B, 4H) or None,
    ds (B, H) or None)."""
    dgates = None
    if need_gates:
        do = grad * ts  # (B, H) dh ⊙ tanh(s), contiguous (see _state_backward_numpy)
        do *= so
        do *= 1 - so  # ... ⊙ σ(o)(1 − σ(o))
        B, H = do.shape
        dgates = np.zeros((B, 4 * H), dtype=do.dtype)  # (B, 4H): i, f, g do not reach h'
        dgates[:, 3 * H :] = do
    ds = None
    if need_s:
        ds = grad * so  # (B, H) dh ⊙ σ(o)
        ds *= 1 - ts * ts  # ... ⊙ (1 − tanh²(s))
    return dgates, ds


def _kernels():
    """kernels/lstm_cell.py, or None (the NumPy twins run): see kernels.load_compiled."""
    return kernels.load_compiled("lstm_cell")


def lstm_cell_state(gates, c) -> Tensor:
    """c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g): gates (B, 4H) in blocks [i; f; g; o], c (B, H) -> c' (B, H)."""
    return LSTMCellState.apply(as_tensor(gates, "lstm_cell_state", "gates"), as_tensor(c, "lstm_cell_state", "c"))


def lstm_cell_output(gates, s) -> Tensor:
    """h' = σ(o) ⊙ tanh(s): gates (B, 4H) in blocks [i; f; g; o], s (B, H) (c' or LN(c')) -> h' (B, H)."""
    return LSTMCellOutput.apply(as_tensor(gates, "lstm_cell_output", "gates"), as_tensor(s, "lstm_cell_output", "s"))
