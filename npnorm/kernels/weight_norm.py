r"""Fused Numba kernels for weight normalization (Salimans & Kingma 2016).

Every kernel works on 2-D C-contiguous arrays: ``v`` has shape (R, F), one row per output unit and F entries
per row, float32 or float64. Out-params come first and are allocated by the caller. The names are those of
``norms/weight_norm.py``: ``v, g, rnorm (1/‖v‖), vhat (v̂), dw, dv, dg``.

Forward, per row of F entries::

    rnorm = 1 / sqrt(Σ_j v_j^2)                one pass, accumulated in float64
    w     = (g · rnorm) · v                    = g · v̂

Backward, with upstream dw::

    vhat = v · rnorm                           recomputed from the saved rnorm
    dg   = Σ_j dw_j · vhat_j
    dv   = (g · rnorm) · (dw − dg · vhat)

The readable NumPy twin is ``forward_reference`` / ``backward_reference`` in ``norms/weight_norm.py``, the
derivation ``docs/weight_norm.md``; the tests check that kernels and twin agree.

The conventions are those of the other kernels (``kernels/rms_norm.py``):

* **float64 statistics.** Σ v² accumulates in float64 also for float32 input (the float64 square of a float32
  is exact and cannot overflow), ``rnorm`` is stored as float64 (R,), and every output is computed in
  float64 and rounded once, as the reference does.
* **Zero rows.** A row with ‖v‖ = 0 gets rnorm = inf (numpy error model, no exception inside the kernel)
  and a NaN row of w. The kernel does not judge: the caller checks rnorm afterwards and raises the same
  ValueError as the reference, so the NaN row is never seen.
* **Races.** Every output (w, rnorm, dv, dg) belongs to one row, so the work items
  (``_jit.ChunkedKernel``) are blocks of rows and nothing is summed across rows: no partial buffers, and
  serial and parallel runs give identical bits.
* **Serial below a threshold** (``_jit.SERIAL_BELOW``) and **no fastmath** beyond reassociation of the row sums.
"""

from __future__ import annotations

import numpy as np

from ._jit import FASTMATH_REASSOC, ON_THREADS, chunked_kernel, item_share, run_on_threads

__all__ = ["weight_norm_backward", "weight_norm_forward"]


@chunked_kernel(fastmath=FASTMATH_REASSOC)
def _weight_norm_forward(w, rnorm, v, g, items, item):
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    R, F = v.shape
    first, stop = item_share(R, items, item)
    for i in range(first, stop):  # this call's rows (rows are independent)
        # pass 1: the squared norm, accumulated in float64 whatever the dtype of v
        s = np.float64(0.0)
        for j in range(F):
            x = np.float64(v[i, j])
            s += x * x
        r = 1.0 / np.sqrt(s)  # a zero row: r = inf (numpy error model); the caller raises
        rnorm[i] = r  # (R,) float64
        # pass 2: w = (g · rnorm) · v, in float64, rounded once to w.dtype
        scale = np.float64(g[i]) * r
        for j in range(F):
            w[i, j] = scale * np.float64(v[i, j])


@chunked_kernel(fastmath=FASTMATH_REASSOC)
def _weight_norm_backward(dv, dg, dw, v, g, rnorm, items, item):
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    R, F = v.shape
    first, stop = item_share(R, items, item)
    for i in range(first, stop):  # rows are independent: dg is one number per row, no sum across rows
        r = rnorm[i]
        # pass 1: dg = Σ_j dw_j · vhat_j
        s = np.float64(0.0)
        for j in range(F):
            s += np.float64(dw[i, j]) * (np.float64(v[i, j]) * r)
        dg[i] = s  # rounded once to dg.dtype
        # pass 2: dv = (g · rnorm) · (dw − dg · vhat), with the float64 dg
        scale = np.float64(g[i]) * r
        for j in range(F):
            vhat = np.float64(v[i, j]) * r
            dv[i, j] = scale * (np.float64(dw[i, j]) - s * vhat)


def weight_norm_forward(w, rnorm, v, g):
    """w = g · v/‖v‖, row by row; fills ``w`` (R, F) of v.dtype and ``rnorm`` (R,) float64.

    ``v`` is (R, F) C-contiguous float32/float64, ``g`` is (R,) of v.dtype. A zero row of v leaves
    rnorm = inf and a NaN row in w: check rnorm afterwards.
    """
    _weight_norm_forward.launch(v.size, 0, w, rnorm, v, g)  # 0: rows are independent


def weight_norm_backward(dv, dg, dw, v, g, rnorm):
    """Fill ``dv`` (R, F) of v.dtype and ``dg`` (R,) of g.dtype from the upstream ``dw`` (R, F).

    ``rnorm`` is the float64 (R,) statistic saved by :func:`weight_norm_forward`.
    """
    _weight_norm_backward.launch(v.size, 0, dv, dg, dw, v, g, rnorm)
