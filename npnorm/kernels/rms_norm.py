r"""Fused Numba kernels for RMSNorm (Zhang & Sennrich 2019).

Every kernel works on 2-D C-contiguous arrays: ``x`` has shape (N, H), one independent sample per row and
H normalized features per row, float32 or float64. Out-params come first and are allocated by the caller.
The names are those of ``norms/rms_norm.py``: ``x, weight (γ), rrms, xhat (x̂), dy, dx, dweight``.

Forward, per row of H features::

    ms   = (1/H) Σ_j x_j^2                     one pass, accumulated in float64
    rrms = 1 / sqrt(ms + eps)
    xhat = x * rrms
    y    = weight * xhat                       weight optional; there is no bias

Backward, with g = dy * weight (g = dy without weight)::

    dweight = Σ_rows dy * xhat
    dx      = rrms * (g - xhat * mean_j(g * xhat))

The readable NumPy twin of every kernel is in ``norms/rms_norm.py``, the derivation in
``docs/rms_norm.md``; the tests check that kernels and twin agree.

The conventions are those of the LayerNorm kernels (``kernels/layer_norm.py`` says why at length):

* **float64 statistics.** Σ x² accumulates in float64 also for float32 input, and ``rrms`` is stored as a
  float64 array of shape (N,). One pass is enough: a sum of squares has no cancellation. float64 is for
  range: a float32 square overflows from |x| ≈ 1.8e19 and vanishes below |x| ≈ 4e-23; a float64 square of
  a float32 is exact. Outputs are computed in float64 and rounded once to x.dtype.
* **Work items and races.** Each call of a kernel body runs some of its work items (``_jit.ChunkedKernel``):
  blocks of independent rows in the forward, shares of fixed blocks ("chunks") of rows in the backward. dweight is a sum
  over rows, so each chunk sums into its own row of a partial buffer of shape (nchunks, H), and the call
  that ends the run adds them up in chunk order. The chunks depend only on the shape, so serial and
  parallel runs give identical bits.
* **Serial below a threshold** (``_jit.SERIAL_BELOW``; larger inputs run the same compiled body through a
  parallel launcher), **no fastmath** beyond reassociation (a NaN must stay in its row).
* **Wide rows.** From H = ``BLOCK_FROM_H`` the backward takes four rows per update of dweight's partial row.
* **Absent weight.** The wrappers pass an absent weight as ones plus the run-time flag ``has_weight``, so
  that each kernel compiles once per dtype whether or not a weight is given; the flag still
  skips the multiply by 1 (measured 10-30% of a pass, _jit.py). A None ``dweight`` (no weight gradient
  wanted) remains a compile-time choice: it skips the partial sums, real work.
"""

from __future__ import annotations

import numpy as np

from ._jit import (
    FASTMATH_REASSOC,
    NO_PARTIALS,
    ON_THREADS,
    add_up_chunks,
    chunk_items,
    chunked_kernel,
    ends_run,
    item_share,
    kernel,
    must_allocate_partials,
    num_chunks,
    partials_chunks,
    run_on_threads,
    shared_ones,
)

__all__ = ["rms_norm_backward", "rms_norm_forward"]


@chunked_kernel(fastmath=FASTMATH_REASSOC)
def _rms_norm_forward(y, rrms, x, weight, has_weight, eps, items, item):
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, H = x.shape
    first, stop = item_share(N, items, item)
    for i in range(first, stop):  # this call's rows (rows are independent)
        # pass 1: the mean square, accumulated in float64 whatever the dtype of x
        s = np.float64(0.0)
        for j in range(H):
            v = np.float64(x[i, j])
            s += v * v
        r = 1.0 / np.sqrt(s / H + eps)  # eps = 0 and a zero row: r = inf (numpy error model)
        rrms[i] = r  # (N,) float64
        # pass 2: y = weight * xhat, computed in float64, rounded once to y.dtype
        for j in range(H):
            out = np.float64(x[i, j]) * r  # xhat
            if has_weight:  # the same in every iteration: LLVM moves the test out of the loop
                out = out * weight[j]
            y[i, j] = out


@kernel(parallel=False, fastmath=FASTMATH_REASSOC, helper=True)
def _dx_row(dx, dy, x, weight, has_weight, i, r, mean_gxhat):
    """Pass 2 of row i: dx = rrms * (g - xhat * mean(g * xhat))."""
    H = x.shape[1]
    for j in range(H):
        xhat = np.float64(x[i, j]) * r
        g = np.float64(dy[i, j])
        if has_weight:
            g = g * weight[j]
        dx[i, j] = r * (g - xhat * mean_gxhat)


# Wide rows: four rows per update of the float64 partial row of dweight, as LayerNorm's backward takes
# (kernels/layer_norm.py, _backward_4_rows, says why the float64 partial rows crowd L1). RMSNorm has one
# partial row, not two, so it crowds L1 from twice the row length. Measured 6 December, backward, float32,
# 2 threads, alternated, time against one row at a time: 1024x4096 0.76-0.79, 512x4096 0.75-0.84, 2048x2048
# 0.83-0.89, 4096x2048 0.87, 8192x2048 0.88-1.05; from H = 1024 instead it was 1.23-1.49x slower at 8192x1024
# and 16384x1024.
BLOCK_FROM_H = 2048
BLOCK_ROWS = 4


# Inlined into its one caller, not called (the reason, and the compile time saved, at LayerNorm's
# _backward_4_rows): dx and dγ bit-identical, 0.98-1.01 of the time from 64x64 to 1024x4096 (10th percentile
# of 40 calls, 7 December; 1.06 once at 512x8192, 0.98 in a second run).
@kernel(parallel=False, fastmath=FASTMATH_REASSOC, inline=True)
def _backward_4_rows(dx, dweight_part, dy, x, rrms, weight, has_weight, i):
    """Rows i .. i+3 as in the one-row loop of _rms_norm_backward, with one pass 1 for the four rows."""
    H = x.shape[1]
    r0, r1, r2, r3 = rrms[i], rrms[i + 1], rrms[i + 2], rrms[i + 3]
    t0 = t1 = t2 = t3 = np.float64(0.0)  # Σ g * xhat per row
    for j in range(H):
        d0, d1 = np.float64(dy[i, j]), np.float64(dy[i + 1, j])
        d2, d3 = np.float64(dy[i + 2, j]), np.float64(dy[i + 3, j])
        xhat0 = np.float64(x[i, j]) * r0
        xhat1 = np.float64(x[i + 1, j]) * r1
        xhat2 = np.float64(x[i + 2, j]) * r2
        xhat3 = np.float64(x[i + 3, j]) * r3
        dweight_part[j] += (d0 * xhat0 + d1 * xhat1) + (d2 * xhat2 + d3 * xhat3)
        if has_weight:
            w = np.float64(weight[j])
            d0, d1, d2, d3 = d0 * w, d1 * w, d2 * w, d3 * w  # g = dy * weight
        t0 += d0 * xhat0
        t1 += d1 * xhat1
        t2 += d2 * xhat2
        t3 += d3 * xhat3
    _dx_row(dx, dy, x, weight, has_weight, i, r0, t0 / H)
    _dx_row(dx, dy, x, weight, has_weight, i + 1, r1, t1 / H)
    _dx_row(dx, dy, x, weight, has_weight, i + 2, r2, t2 / H)
    _dx_row(dx, dy, x, weight, has_weight, i + 3, r3, t3 / H)


@chunked_kernel(fastmath=FASTMATH_REASSOC)
def _rms_norm_backward(dx, dweight, dy, x, rrms, weight, has_weight, dweight_part, items, item):
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, H = x.shape
    # dweight_part: per-chunk float64 partial sums of dweight, (nchunks, H), as in LayerNorm's backward: a
    # parallel run brings them (they outlive its calls) and each of its items runs a share of the chunks; a
    # serial run gets an empty stand-in, its `items` is the chunk count, and it allocates them here
    # (np.empty, each chunk zeroing its own row). Without partials the chunks are just the items.
    nchunks = items
    if dweight is not None:  # resolved at compile time, as every `is None` below
        nchunks = partials_chunks(dweight_part.shape[0], items)
        if must_allocate_partials(dweight_part.shape[0], nchunks, item):
            dweight_part = np.empty((nchunks, H))
    first, stop = item_share(nchunks, items, item)
    for c in range(first, stop):
        # chunk c owns rows [c*N//nchunks, (c+1)*N//nchunks) and writes only row c of the partials
        lo = c * N // nchunks
        hi = (c + 1) * N // nchunks
        i = lo
        if dweight is not None:  # resolved at compile time, as every `is None` below
            for j in range(H):
                dweight_part[c, j] = 0.0
            if H >= BLOCK_FROM_H:  # wide rows: four at a time (see _backward_4_rows)
                while i + BLOCK_ROWS <= hi:
                    _backward_4_rows(dx, dweight_part[c], dy, x, rrms, weight, has_weight, i)
                    i += BLOCK_ROWS
        for row in range(i, hi):  # one row at a time: narrow rows, no dweight, or the last N mod 4
            r = rrms[row]
            # pass 1: the row sum Σ g * xhat, and this row's share of dweight
            sum_gxhat = np.float64(0.0)
            for j in range(H):
                xhat = np.float64(x[row, j]) * r
                g = np.float64(dy[row, j])
                if dweight is not None:
                    dweight_part[c, j] += g * xhat
                if has_weight:
                    g = g * weight[j]
                sum_gxhat += g * xhat
            mean_gxhat = sum_gxhat / H
            # pass 2: dx = rrms * (g - xhat * mean(g * xhat)), as _dx_row but written out: a call per row
            # reference-counts its arrays, which dominates for short rows (kernels/layer_norm.py measured it)
            for j in range(H):
                xhat = np.float64(x[row, j]) * r
                g = np.float64(dy[row, j])
                if has_weight:
                    g = g * weight[j]
                dx[row, j] = r * (g - xhat * mean_gxhat)
    if ends_run(items, item) and dweight is not None:
        add_up_chunks(dweight, dweight_part)  # in chunk order, rounded once to x.dtype


def rms_norm_forward(y, rrms, x, weight, eps):
    """y = weight * x * rrms, row by row; fills ``y`` (N, H) and ``rrms`` (N,) float64.

    ``x`` is (N, H) C-contiguous float32/float64; ``weight`` is (H,) of x.dtype or None; ``eps`` ≥ 0 is
    added to the mean square inside the square root.
    """
    # an absent weight goes in as ones, and the flag skips it: one specialisation (see _jit.py)
    w = weight if weight is not None else shared_ones(x.shape[1], x.dtype)  # (H,)
    _rms_norm_forward.launch(x.size, 0, y, rrms, x, w, weight is not None, float(eps))  # 0: rows are independent


def rms_norm_backward(dx, dweight, dy, x, rrms, weight):
    """Fill ``dx`` (N, H) and, unless it is None, ``dweight`` (H,), both of x.dtype.

    ``rrms`` is the float64 statistic saved by :func:`rms_norm_forward`; ``weight`` is the (H,) gain or None.
    """
    N, H = x.shape
    # None for dweight stays a specialisation of its own: it skips the partial sums
    w = weight if weight is not None else shared_ones(H, x.dtype)  # (H,) and a flag, as in the forward
    nchunks = num_chunks(N, H)  # a function of the shape: the sums over chunks are the same on any thread count
    if not _rms_norm_backward.runs_parallel(x.size):
        items, parts = nchunks, NO_PARTIALS  # a serial run: all chunks in one call, which allocates the partials
    else:
        # a share of the chunks per item (_jit.chunk_items); the partials outlive the run's calls
        items = chunk_items(nchunks, x.size)
        parts = np.empty((nchunks, H)) if dweight is not None else NO_PARTIALS
    _rms_norm_backward.launch(x.size, items, dx, dweight, dy, x, rrms, w, weight is not None, parts)
