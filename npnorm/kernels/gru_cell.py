r"""The backward pass of the fused GRU cell (``npnorm/nn/_gru_cell.py``) in one pass.

The math, its derivation and the NumPy twin are in ``nn/_gru_cell.py``. With dh' the gradient of h', r and z
the gates, n the candidate and ``keeps_old`` PyTorch's convention (z keeps the old state), per element::

    dh       = dh' · z                    keeps_old       dh' · (1 − z)          otherwise
    dp       = (dh' · (1 − z)) · (1 − n·n)   keeps_old    (dh' · z) · (1 − n·n)  otherwise
    dgates_r = ((dp · n_h) · r) · (1 − r)
    dgates_z = (((h − n) · dh') · z) · (1 − z)   keeps_old    (((n − h) · dh') · z) · (1 − z)   otherwise
    dn_x     = dp,    dn_h = dp · r

Why a kernel, and how it is written: as the LSTM cell's (``kernels/lstm_cell.py``). The NumPy twin takes
about a dozen whole-array passes, each writing a temporary; this reads each input once and writes each
output once, with no transcendental function. Measured 7 December (2-vCPU AMD EPYC), (B, H) = (32, 128),
every gradient wanted, best of 9 × 500 calls: 7.7 µs against 31.2 µs for the twin in float32 (11.1 against
45.1 in float64). A training step over 28 steps of batch 32 (H = 128, one thread, alternated in one process,
two runs each) took 0.93-0.95 of the time with the twin for the LN-GRU and 0.93-0.94 for the plain GRU
(medians; the host was noisy, minima 0.95-0.98 and 0.97-1.06). The same operations in the same
order as the twin, no fastmath: bit-identical to it (tested). One specialisation per dtype: C-contiguous,
writable arrays of one dtype (the caller falls back to the twin otherwise), shared empty stand-ins with
flags for unwanted gradients, and the gate gradients written through a (B, 2, H) view. Serial, no threads.
"""

from __future__ import annotations

import numba

from ._jit import kernel, shared_empty

__all__ = ["JIT_DISABLED", "gru_cell_backward"]

# Under NUMBA_DISABLE_JIT=1 the kernel would be a Python loop over every element: the cell uses its twin.
JIT_DISABLED = bool(numba.config.DISABLE_JIT)


@kernel(parallel=False, noalias=True)  # the outputs are new arrays: they never overlap an input
def _backward(dgates, dn_x, dn_h, dh, grad, rz, n, n_h, h, keeps_old, need_gates, need_n_x, need_n_h, need_h):
    """dgates (B, 2, H), dn_x, dn_h, dh (B, H) from dh' = grad, [r z] = rz (B, 2, H), n, n_h and h (B, H).

    One loop per wanted output, each recomputing dp from the row in L1 (three products): with every output
    and flag in one loop the kernel took 0.37 of the twin's time at (32, 128) float32, one loop each 0.25
    (measured minutes apart on a host whose speed drifts; see the module docstring).
    """
    B, H = n.shape
    one = n.dtype.type(1.0)
    for b in range(B):
        if need_h:
            for j in range(H):
                z = rz[b, 1, j]
                dh[b, j] = grad[b, j] * z if keeps_old else grad[b, j] * (one - z)
        if need_gates:
            for j in range(H):
                d = grad[b, j]
                r = rz[b, 0, j]
                z = rz[b, 1, j]
                c = n[b, j]
                dp = (d * (one - z) if keeps_old else d * z) * (one - c * c)  # dh' ⊙ ∂h'/∂n ⊙ (1 − n²)
                dgates[b, 0, j] = ((dp * n_h[b, j]) * r) * (one - r)
                dz = h[b, j] - c if keeps_old else c - h[b, j]
                dgates[b, 1, j] = ((dz * d) * z) * (one - z)
        if need_n_h:
            for j in range(H):
                d = grad[b, j]
                z = rz[b, 1, j]
                c = n[b, j]
                dp = (d * (one - z) if keeps_old else d * z) * (one - c * c)
                dn_h[b, j] = dp * rz[b, 0, j]
        if need_n_x:
            for j in range(H):
                d = grad[b, j]
                z = rz[b, 1, j]
                c = n[b, j]
                dn_x[b, j] = (d * (one - z) if keeps_old else d * z) * (one - c * c)


def gru_cell_backward(dgates, dn_x, dn_h, dh, grad, rz, n, n_h, h, keeps_old) -> None:
    """Fill ``dgates`` (B, 2H) and ``dn_x``, ``dn_h``, ``dh`` (B, H), any of which may be None (not wanted).

    ``grad`` = dh', ``n``, ``n_h`` and ``h`` are (B, H), ``rz`` = [r z] is (B, 2H): all C-contiguous, writable
    and of one dtype (float32 or float64), as are the outputs. ``keeps_old`` is PyTorch's convention for z.
    """
    B, H = n.shape
    none = shared_empty(2, n.dtype)
    gates = dgates.reshape(B, 2, H) if dgates is not None else shared_empty(3, n.dtype)
    _backward(
        gates, dn_x if dn_x is not None else none, dn_h if dn_h is not None else none,
        dh if dh is not None else none, grad, rz.reshape(B, 2, H), n, n_h, h, bool(keeps_old),
        dgates is not None, dn_x is not None, dn_h is not None, dh is not None,
    )  # fmt: skip
