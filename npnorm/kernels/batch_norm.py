r"""Fused Numba kernels for BatchNorm (Ioffe & Szegedy 2015).

Every kernel works on 3-D C-contiguous arrays: ``x`` has shape (N, C, L) — N samples, C channels, L positions
per channel (an (N, C) input is viewed as (N, C, 1)), float32 or float64. Out-params come first and are
allocated by the caller. The names are those of ``norms/batch_norm.py``: ``x, weight (γ), bias (β),
mean (μ), var (σ²), rstd, xhat (x̂), dy, dx, dweight, dbias``. Statistics are per channel, over the
M = N·L values of that channel; they are (C,) float64 arrays.

Forward, per channel c::

    mean_c = (1/M) Σ_{n,l} x[n, c, l]
    var_c  = (1/M) Σ_{n,l} (x[n, c, l] - mean_c)^2       biased; see "Statistics" below
    y      = (x - mean_c) * scale_c + bias_c              scale_c = rstd_c * weight_c

In training mean and var are the batch's own, rstd_c = 1 / sqrt(var_c + eps); in evaluation they are the
running statistics, passed in by the caller. Backward, with M values per channel::

    dbias_c   = Σ_{n,l} dy
    dweight_c = Σ_{n,l} dy * xhat
    dx        = scale_c * (dy - mean(dy)_c - xhat * mean(dy * xhat)_c)     (training)
    dx        = scale_c * dy                                               (evaluation)

γ factors out of the means because it is one number per channel, constant over the values a channel's
mean is taken over (in LayerNorm it is not: γ varies across the features of a row).

How the kernels are written, and why:

* **Work items.** A channel's statistics span the whole batch, so, unlike LayerNorm's rows, no item can
  own a channel's data in one contiguous block. The (N, C) plane is cut into tiles: a *chunk* of samples
  (rows n) times a *block* of channels. Reductions write one partial result per (chunk, channel) into a
  (nchunks, C) float64 buffer — every tile writes only its own entries, so no two iterations of the
  ``prange`` ever write the same element (``+=`` into a shared per-channel accumulator would be a race
  that silently loses updates) — and the partials are combined afterwards, in NumPy. Elementwise passes
  run over (sample, block) tiles. Parallel over channels *and* samples: a batch of 8192 samples with 4
  channels, and one of 4 samples with 512 channels, both keep every core busy.
* **Tile sizes.** A block holds about 64 values of a sample row (64 channels when L = 1, a single channel
  when L ≥ 64), so the innermost loop always runs over contiguous memory; a chunk holds enough rows for its
  tile to hold about 8192 values (32 KiB in float32), small enough that a tile read twice in a row comes
  from cache the second time. Both are functions of the shape alone, never of the thread count, so the
  serial and parallel variants give bit-identical results.
* **Statistics: two passes per tile, then Chan's combination.** ``E[x²] − E[x]²`` cancels catastrophically
  when |mean| ≫ std. Each tile computes its own mean and its own sum of squared deviations about that mean
  in two passes (the second one from cache), and the tiles are combined exactly by Chan, Golub & LeVeque's
  formula (1979), in float64:

      mean = Σ_k n_k mean_k / M,      M2 = Σ_k M2_k + Σ_k n_k (mean_k − mean)²,      var = M2 / M.

  Every term is a sum of squares, so nothing cancels; the result is as accurate as a global two-pass
  variance, while x is read from memory once instead of twice.
* **float64 statistics, outputs in x.dtype.** Sums accumulate in float64 also for float32 input; the
  elementwise passes compute in float64 and round once to the output dtype.
* **Serial below a threshold** (``_jit.SERIAL_BELOW``), **no fastmath** except reassociation (which lets
  LLVM vectorise a sum; NaN handling stays exact), and ``None`` arguments (no bias, evaluation mode)
  resolved at compile time, as in ``kernels/layer_norm.py``.

The derivation is in ``docs/batch_norm.md``; the NumPy twin of every kernel is in ``norms/batch_norm.py``,
and the tests check that the two agree.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import FASTMATH_REASSOC, dual_kernel

__all__ = [
    "batch_norm_backward",
    "batch_norm_forward",
    "batch_norm_stats",
    "tiling",
]

# About this many values of one sample row per channel block, and per (chunk x block) tile (see above).
_BLOCK_VALUES = 64
_TILE_VALUES = 8192


def tiling(N: int, C: int, L: int) -> tuple[int, int, int]:
    """(rows_per_chunk, nchunks, channels_per_block) for an (N, C, L) array: a function of the shape alone."""
    cblock = max(1, min(C, _BLOCK_VALUES // max(L, 1)))  # channels per block
    rows = max(1, _TILE_VALUES // (cblock * max(L, 1)))  # rows (samples) per chunk
    nchunks = (N + rows - 1) // rows
    return rows, nchunks, cblock


# --- statistics ----------------------------------------------------------------------------------------


@dual_kernel(fastmath=FASTMATH_REASSOC)
def _tile_stats(part_mean, part_m2, x, rows, cblock):
    """part_mean[k, c], part_m2[k, c]: mean and Σ (x - mean)² of channel c over the rows of chunk k."""
    N, C, L = x.shape
    nchunks = part_mean.shape[0]
    nblocks = (C + cblock - 1) // cblock
    for item in prange(nchunks * nblocks):  # tile (k, b) writes only part_*[k, its channels]
        k = item // nblocks
        c0 = (item % nblocks) * cblock
        c1 = min(C, c0 + cblock)
        n0 = k * rows
        n1 = min(N, n0 + rows)
        count = (n1 - n0) * L
        # pass 1: the tile's mean per channel, in float64
        for n in range(n0, n1):
            for c in range(c0, c1):
                s = np.float64(0.0)
                for l in range(L):
                    s += np.float64(x[n, c, l])
                part_mean[k, c] += s
        for c in range(c0, c1):
            part_mean[k, c] /= count
        # pass 2: squared deviations about the tile's mean (the tile is in cache now)
        for n in range(n0, n1):
            for c in range(c0, c1):
                m = part_mean[k, c]
                s = np.float64(0.0)
                for l in range(L):
                    d = np.float64(x[n, c, l]) - m
                    s += d * d
                part_m2[k, c] += s


def batch_norm_stats(mean, var, x):
    """Fill ``mean`` and ``var`` (C,) float64 with each channel's mean and biased variance over (N, L).

    ``x`` is (N, C, L) C-contiguous float32/float64 with N·L > 0.
    """
    N, C, L = x.shape
    rows, nchunks, cblock = tiling(N, C, L)
    # np.full touches the pages here, not in the pool threads (see kernels/layer_norm.py).
    part_mean = np.full((nchunks, C), 0.0)  # (nchunks, C) float64
    part_m2 = np.full((nchunks, C), 0.0)  # (nchunks, C) float64
    _tile_stats.launch(x.size, part_mean, part_m2, x, rows, cblock)
    # Chan et al.: combine the tiles' (count, mean, M2) exactly; every term is ≥ 0, nothing cancels.
    counts = np.full(nchunks, float(rows * L))  # (nchunks,)
    counts[-1] = (N - (nchunks - 1) * rows) * L  # the last chunk may be short
    M = N * L
    mean[...] = (counts[:, None] * part_mean).sum(axis=0) / M  # (C,)
    spread = part_mean - mean  # (nchunks, C)
    var[...] = (part_m2.sum(axis=0) + (counts[:, None] * spread * spread).sum(axis=0)) / M  # (C,)


# --- forward -------------------------------------------------------------------------------------------


@dual_kernel(fastmath=FASTMATH_REASSOC)
def _apply(y, x, mean, scale, bias, cblock):
    """y = (x - mean_c) * scale_c (+ bias_c), elementwise over (sample, channel block) tiles."""
    N, C, L = x.shape
    nblocks = (C + cblock - 1) // cblock
    for item in prange(N * nblocks):
        n = item // nblocks
        c0 = (item % nblocks) * cblock
        for c in range(c0, min(C, c0 + cblock)):
            m = mean[c]
            s = scale[c]
            for l in range(L):
                out = (np.float64(x[n, c, l]) - m) * s
                if bias is not None:
                    out = out + bias[c]
                y[n, c, l] = out


def batch_norm_forward(y, x, mean, rstd, weight, bias):
    """y = weight_c * (x - mean_c) * rstd_c + bias_c; fills ``y`` (N, C, L) of x.dtype.

    ``mean`` and ``rstd`` are (C,) float64 (batch or running statistics); ``weight`` and ``bias`` are (C,)
    of x.dtype or None.
    """
    N, C, L = x.shape
    scale = rstd if weight is None else rstd * weight  # (C,) float64: γ folded into rstd
    _apply.launch(x.size, y, x, mean, scale, bias, tiling(N, C, L)[2])


# --- backward ------------------------------------------------------------------------------------------


@dual_kernel(fastmath=FASTMATH_REASSOC)
def _tile_grad_sums(part_dy, part_dyxhat, dy, x, mean, rstd, rows, cblock):
    """part_dy[k, c] = Σ dy and part_dyxhat[k, c] = Σ dy * xhat over the rows of chunk k, channel c."""
    N, C, L = x.shape
    nchunks = part_dy.shape[0]
    nblocks = (C + cblock - 1) // cblock
    for item in prange(nchunks * nblocks):
        k = item // nblocks
        c0 = (item % nblocks) * cblock
        c1 = min(C, c0 + cblock)
        for n in range(k * rows, min(N, (k + 1) * rows)):
            for c in range(c0, c1):
                m = mean[c]
                r = rstd[c]
                s_dy = np.float64(0.0)
                s_dyxhat = np.float64(0.0)
                for l in range(L):
                    g = np.float64(dy[n, c, l])
                    s_dy += g
                    s_dyxhat += g * ((np.float64(x[n, c, l]) - m) * r)
                part_dy[k, c] += s_dy
                part_dyxhat[k, c] += s_dyxhat


@dual_kernel(fastmath=FASTMATH_REASSOC)
def _grad_input(dx, dy, x, mean, rstd, scale, mean_dy, mean_dyxhat, cblock):
    """dx = scale_c * (dy - mean_dy_c - xhat * mean_dyxhat_c); mean_dy None: dx = scale_c * dy (evaluation)."""
    N, C, L = x.shape
    nblocks = (C + cblock - 1) // cblock
    for item in prange(N * nblocks):
        n = item // nblocks
        c0 = (item % nblocks) * cblock
        for c in range(c0, min(C, c0 + cblock)):
            s = scale[c]
            if mean_dy is None:
                for l in range(L):
                    dx[n, c, l] = s * np.float64(dy[n, c, l])
            else:
                m = mean[c]
                r = rstd[c]
                a = mean_dy[c]
                b = mean_dyxhat[c]
                for l in range(L):
                    xhat = (np.float64(x[n, c, l]) - m) * r
                    dx[n, c, l] = s * (np.float64(dy[n, c, l]) - a - xhat * b)


def batch_norm_backward(dx, dweight, dbias, dy, x, mean, rstd, weight, training):
    """Fill ``dx`` (N, C, L) and, unless None, ``dweight`` and ``dbias`` (C,), all of x.dtype.

    ``mean`` and ``rstd`` are the (C,) float64 statistics the forward used. ``training=True`` means they
    were this batch's own, so the gradient flows through them; ``training=False`` (running statistics)
    treats them as constants. ``dx`` may be None when only the parameter gradients are wanted.
    """
    N, C, L = x.shape
    rows, nchunks, cblock = tiling(N, C, L)
    need_sums = training or dweight is not None or dbias is not None
    if need_sums:
        part_dy = np.full((nchunks, C), 0.0)  # (nchunks, C) float64
        part_dyxhat = np.full((nchunks, C), 0.0)  # (nchunks, C) float64
        _tile_grad_sums.launch(x.size, part_dy, part_dyxhat, dy, x, mean, rstd, rows, cblock)
        sum_dy = part_dy.sum(axis=0)  # (C,)
        sum_dyxhat = part_dyxhat.sum(axis=0)  # (C,)
        if dweight is not None:
            dweight[...] = sum_dyxhat
        if dbias is not None:
            dbias[...] = sum_dy
    if dx is None:
        return
    scale = rstd if weight is None else rstd * weight  # (C,) float64
    if training:
        M = N * L
        _grad_input.launch(x.size, dx, dy, x, mean, rstd, scale, sum_dy / M, sum_dyxhat / M, cblock)
    else:
        _grad_input.launch(x.size, dx, dy, x, mean, rstd, scale, None, None, cblock)
