r"""Numba kernels for GroupNorm's per-channel affine step; the normalization itself is LayerNorm's.

GroupNorm (Wu & He 2018) normalizes each sample's channels in G groups. Viewed as rows — (N·G, C/G·S),
one row per (sample, group) — that is exactly LayerNorm without weight and bias, so
``norms/group_norm.py`` calls the row kernels of ``kernels/layer_norm.py`` for x̂ and for dx. What those
kernels cannot do is GroupNorm's affine step: γ and β have one entry per *channel*, and a row holds C/G
channels of one group, so a per-feature weight of the row kernels would have to differ from group to group.
The two kernels here do that step, on (N, C, S) arrays with per-row statistics of shape (N, G):

    forward (in place on y = x̂):  y = γ_c · x̂ + β_c
    backward:                     g = γ_c · dy                  (the upstream gradient of the LayerNorm rows)
                                  dγ_c = Σ_{n,s} dy · x̂,  dβ_c = Σ_{n,s} dy

with x̂ = (x − mean[n, group(c)]) · rstd[n, group(c)] recomputed from the saved float64 statistics.
dγ and dβ are sums over samples: as in ``kernels/batch_norm.py``, (chunk of samples × block of channels)
tiles each write their own entries of (nchunks, C) float64 partial buffers, combined afterwards, so no
``prange`` iteration ever adds into an element another one writes. The tiling is BatchNorm's, a function
of the shape alone, so serial and parallel runs agree bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import FASTMATH_REASSOC, dual_kernel
from .batch_norm import tiling

__all__ = ["group_norm_affine_backward", "group_norm_affine_forward"]


@dual_kernel(fastmath=FASTMATH_REASSOC)
def _affine(y, weight, bias, cblock):
    N, C, S = y.shape
    nblocks = (C + cblock - 1) // cblock
    for item in prange(N * nblocks):  # (sample, channel block) tiles are disjoint
        n = item // nblocks
        c0 = (item % nblocks) * cblock
        for c in range(c0, min(C, c0 + cblock)):
            for s in range(S):
                out = np.float64(y[n, c, s])
                if weight is not None:
                    out = out * weight[c]
                if bias is not None:
                    out = out + bias[c]
                y[n, c, s] = out


@dual_kernel(fastmath=FASTMATH_REASSOC)
def _affine_backward(g, part_dy, part_dyxhat, dy, x, mean, rstd, weight, rows, cblock):
    N, C, S = x.shape
    per_group = C // mean.shape[1]  # channels per group
    nchunks = (N + rows - 1) // rows
    nblocks = (C + cblock - 1) // cblock
    for item in prange(nchunks * nblocks):  # tile (k, b) writes part_*[k, its channels] and its own g
        k = item // nblocks
        c0 = (item % nblocks) * cblock
        for n in range(k * rows, min(N, (k + 1) * rows)):
            for c in range(c0, min(C, c0 + cblock)):
                m = mean[n, c // per_group]
                r = rstd[n, c // per_group]
                s_dy = np.float64(0.0)
                s_dyxhat = np.float64(0.0)
                for s in range(S):
                    d = np.float64(dy[n, c, s])
                    if part_dy is not None:
                        s_dy += d
                        s_dyxhat += d * ((np.float64(x[n, c, s]) - m) * r)
                    if g is not None:
                        g[n, c, s] = d * weight[c]
                if part_dy is not None:
                    part_dy[k, c] += s_dy
                    part_dyxhat[k, c] += s_dyxhat


def group_norm_affine_forward(y, weight, bias):
    """In place on ``y`` (N, C, S) holding x̂: y = weight_c * y + bias_c; weight, bias (C,) of y.dtype or None."""
    N, C, S = y.shape
    _affine.launch(y.size, y, weight, bias, tiling(N, C, S)[2])


def group_norm_affine_backward(g, dweight, dbias, dy, x, mean, rstd, weight):
    """Fill ``g`` = weight_c * dy (N, C, S) unless None, and ``dweight``, ``dbias`` (C,) unless None.

    ``x`` and ``dy`` are (N, C, S) C-contiguous; ``mean`` and ``rstd`` are the (N, G) float64 statistics of
    the LayerNorm rows; ``weight`` is (C,) and must be given when ``g`` is.
    """
    N, C, S = x.shape
    rows, nchunks, cblock = tiling(N, C, S)
    # One specialisation computes both parameter gradients, one neither (as in kernels/layer_norm.py).
    if dweight is None and dbias is None:
        part_dy = part_dyxhat = None
    else:
        part_dy = np.full((nchunks, C), 0.0)  # (nchunks, C) float64
        part_dyxhat = np.full((nchunks, C), 0.0)  # (nchunks, C) float64
    _affine_backward.launch(x.size, g, part_dy, part_dyxhat, dy, x, mean, rstd, weight, rows, cblock)
    if dweight is not None:
        dweight[...] = part_dyxhat.sum(axis=0)
    if dbias is not None:
        dbias[...] = part_dy.sum(axis=0)
