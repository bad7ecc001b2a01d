r"""The pointwise part of a GRU step, fused into one Function with a hand-derived backward pass.

Built from primitives, one GRU step records a dozen small ops after the projections and LNs (two slices of
the gate pre-activations, two sigmoids, a product and a sum for the candidate, its tanh, 1 − z, two products
and a sum), each paying the engine's overhead forward and backward. As for the LSTM (`_lstm_cell.py`), this
Function does the same arithmetic in one node.

Notation: gates (B, 2H) holds the pre-activations of the reset and update gates, [r; z], column blocks of
width H; n_x and n_h (B, H) are the input and hidden parts of the candidate's pre-activation; h (B, H) is
the previous hidden state. For PyTorch's GRU, gates = W_i[r,z] x + b_i[r,z] + W_h[r,z] h + b_h[r,z],
n_x = W_in x + b_in, n_h = W_hn h + b_hn; for Ba et al.'s LN-GRU, gates = LN(W_h[r,z] h) + LN(W_i[r,z] x),
n_x = LN(W_in x), n_h = LN(W_hn h) (the LNs stay ordinary nodes before this one).

Forward:

    r = σ(gates_r),  z = σ(gates_z),  n = tanh(n_x + r ⊙ n_h)                          (B, H) each
    h' = (1 − z) ⊙ h + z ⊙ n        z weighs the new state (the paper's LN-GRU)
    h' = (1 − z) ⊙ n + z ⊙ h        z keeps the old state (PyTorch's GRU: `z_keeps_old`)

Derivation — the chain rule through the three activations, whose derivatives are written with their outputs
(which forward has computed, so backward saves them instead of recomputing):

    σ'(a) = σ(a) (1 − σ(a)),   tanh'(a) = 1 − tanh²(a)

    z weighs the new state:   ∂h'/∂n = z,      ∂h'/∂z = n − h,   ∂h'/∂h = 1 − z
    z keeps the old state:    ∂h'/∂n = 1 − z,  ∂h'/∂z = h − n,   ∂h'/∂h = z
    ∂n/∂n_x = 1 − n²,   ∂n/∂n_h = (1 − n²) r,   ∂n/∂r = (1 − n²) n_h
    ∂r/∂gates_r = r (1 − r),   ∂z/∂gates_z = z (1 − z)

Every derivative is elementwise (element (b, j) of h' depends only on element (b, j) of each input block).

Backward — with dh' = dL/dh', dn = dh' ⊙ ∂h'/∂n and dp = dn ⊙ (1 − n²), the gradient of n's pre-activation:

    dn_x      = dp
    dn_h      = dp ⊙ r
    dgates_r  = dp ⊙ n_h ⊙ r (1 − r)
    dgates_z  = dh' ⊙ ∂h'/∂z ⊙ z (1 − z)
    dh        = dh' ⊙ ∂h'/∂h
    saved: r, z, n, n_h, h

σ is ops.Sigmoid's own (`ops.sigmoid_array`: e^-a may overflow to inf for a → −∞, giving σ = 0, silently).
The results agree with the unfused composition (F.sigmoid, F.tanh, slices, * and +) up to rounding: the
composition adds the two parts of dgates_z, dh' ⊙ n and −dh' ⊙ h, where this Function takes dh' ⊙ (n − h).
All inputs must share one dtype, which the results keep (float32 in, float32 out).

The backward runs as one Numba pass (``npnorm/kernels/gru_cell.py``: 7.7 against 31.2 µs at (32, 128)
float32, an LN-GRU training step in 0.93-0.95 of the time) where numba can run it, and otherwise as its NumPy
twin below (``_backward_numpy``); both take the same operations in the same order and give the same bits.
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

_WHO = "gru_cell_output"


class GRUCellOutput(Function):
    """h' from gates (B, 2H) [r; z], n_x, n_h and h (B, H); `z_keeps_old` picks PyTorch's convention.
    Forward and backward as in the module docstring."""

    returns_fresh_grads = True  # every gradient is a new array

    @staticmethod
    def forward(ctx, gates, n_x, n_h, h, *, z_keeps_old):
        H = gate_hidden_size(_WHO, gates, ("r", "z"), {"n_x": n_x, "n_h": n_h, "h": h})
        rz = sigmoid_array(gates)  # (B, 2H): σ(r), σ(z) in one pass, the blocks being adjacent
        r, z = rz[:, :H], rz[:, H:]  # (B, H) each
        n = r * n_h  # (B, H)
        n += n_x
        np.tanh(n, out=n)  # n = tanh(n_x + r ⊙ n_h)
        ctx.save_for_backward(rz, n, n_h, h)
        ctx.z_keeps_old = z_keeps_old
        if z_keeps_old:
            out = (1 - z) * n  # (B, H)
            out += z * h
        else:
            out = (1 - z) * h  # (B, H)
            out += z * n
        return out

    @staticmethod
    def backward(ctx, grad):
        rz, n, n_h, h = ctx.saved
        needs = ctx.needs_input_grad  # gates, n_x, n_h, h
        keeps_old = ctx.z_keeps_old
        kern = _kernels()
        # one copy each where they arrive strided (the broadcast gradient of a sum, a plain GRU's n_h as a column
        # block of its projection, an h a caller passes as a view), then the kernel
        grad, n_h, h = np.ascontiguousarray(grad), np.ascontiguousarray(n_h), np.ascontiguousarray(h)
        if kern is None or not _cell_kernels.ready(n, grad, rz, n_h, h):
            return _backward_numpy(grad, rz, n, n_h, h, keeps_old, *needs)
        B, H = n.shape
        dgates = np.empty((B, 2 * H), dtype=n.dtype) if needs[0] else None  # (B, 2H)
        dn_x, dn_h, dh = (np.empty((B, H), dtype=n.dtype) if need else None for need in needs[1:])  # (B, H) each
        kern.gru_cell_backward(dgates, dn_x, dn_h, dh, grad, rz, n, n_h, h, keeps_old)
        return dgates, dn_x, dn_h, dh


def _backward_numpy(grad, rz, n, n_h, h, keeps_old, need_gates, need_n_x, need_n_h, need_h):
    """GRUCellOutput's backward in NumPy (the twin of kernels/gru_cell.py, the same operations in the same
    order): (dgates (B, 2H), dn_x, dn_h, dh (B, H)), None for a gradient not wanted."""
    B, H = n.shape
    r, z = rz[:, :H], rz[:, H:]  # (B, H) each
    dgates = dn_x = dn_h = dh = None
    if need_h:
        dh = grad * z if keeps_old else grad * (1 - z)  # dh' ⊙ ∂h'/∂h
    if need_gates or need_n_x or need_n_h:
        dp = grad * (1 - z) if keeps_old else grad * z  # dn = dh' ⊙ ∂h'/∂n
        dp *= 1 - n * n  # ... ⊙ (1 − n²): the gradient of n's pre-activation
        if need_gates:
            # Each block in a contiguous (B, H) array, then one copy into place (see _lstm_cell's twins).
            dr = dp * n_h  # (B, H) dp ⊙ n_h
            dr *= r
            dr *= 1 - r  # ... ⊙ r (1 − r)
            dz = h - n if keeps_old else n - h  # (B, H) ∂h'/∂z
            dz *= grad
            dz *= z
            dz *= 1 - z  # dh' ⊙ ∂h'/∂z ⊙ z (1 − z)
            dgates = np.empty((B, 2 * H), dtype=dr.dtype)  # (B, 2H)
            dgates[:, :H], dgates[:, H:] = dr, dz
        dn_h = dp * r if need_n_h else None
        dn_x = dp if need_n_x else None
    return dgates, dn_x, dn_h, dh


def _kernels():
    """kernels/gru_cell.py, or None (the NumPy twin runs): see kernels.load_compiled."""
    return kernels.load_compiled("gru_cell")


def gru_cell_output(gates, n_x, n_h, h, *, z_keeps_old: bool = False) -> Tensor:
    """h' = (1 − z) ⊙ h + z ⊙ n, n = tanh(n_x + r ⊙ n_h), [r; z] = σ(gates): gates (B, 2H), n_x, n_h, h (B, H)
    -> h' (B, H). With `z_keeps_old`, PyTorch's convention h' = (1 − z) ⊙ n + z ⊙ h."""
    tensors = (as_tensor(a, _WHO, name) for a, name in ((gates, "gates"), (n_x, "n_x"), (n_h, "n_h"), (h, "h")))
    return GRUCellOutput.apply(*tensors, z_keeps_old=bool(z_keeps_old))
