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
dγ and dβ are sums over samples, computed exactly as BatchNorm's parameter gradients are in
``kernels/batch_norm.py`` (whose chunking these kernels share): each unit of work — a chunk of samples
when S = 1, a (chunk, channel) pair when S > 1 — writes only its own entries of (nchunks, C) float64
partial buffers, which the call that ends the run adds up in chunk order (``_jit.add_up_chunks``), so no
work item (``_jit.ChunkedKernel``) ever adds into an element another one writes, and serial and parallel
runs agree bit for bit.

An absent γ or β goes in as ones or zeros, with run-time flags in the forward that skip them, so that each
kernel compiles once per dtype whatever the caller leaves out (see ``kernels/_jit.py``). The
backward's absent outputs work the same way: no ``g`` (no input gradient, or no γ: g would be dy) and no dγ,
dβ (no parameter gradient) go in as cached empty arrays of the same numba type, (0, 0, 0) and (0,) of x.dtype,
plus the flags ``want_g`` and ``want_sums``. As None they were types of their own: three combinations, 12
specialisations of ``_affine_backward`` for two dtypes and two variants, ~0.5 s of compilation each for the
parallel ones; now 2 (one body per dtype). The flags are the same in every iteration, and LLVM
unswitches the loops on them, so the work an absent output saves is still skipped. Measured against the None
specialisations (float32, 2 cores, best of 150): the same time with g and both sums (8192x1024, 2048x256,
256x64x64) and with the sums alone; g alone the same at 8192x1024 and G = 1, up to 15% slower for short groups
(2048x256, G = 32: 61 µs against 53 µs), faster for S > 1 (256x64x64: 0.12 ms against 0.14).
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
    must_allocate_partials,
    num_chunks,
    run_on_threads,
    shared_empty,
    shared_ones,
    shared_zeros,
)

__all__ = ["group_norm_affine_backward", "group_norm_affine_forward"]


@chunked_kernel(fastmath=FASTMATH_REASSOC, noalias=True)  # y, in place, is one argument: nothing overlaps it
def _affine(y, weight, bias, has_weight, has_bias, items, item):
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, C, S = y.shape
    if S == 1:  # (N, C): the unit of work is one row of C contiguous channels
        first, stop = item_share(N, items, item)
        for n in range(first, stop):
            for c in range(C):
                out = np.float64(y[n, c, 0])
                if has_weight:  # the same in every iteration: LLVM moves the test out of the loop
                    out = out * weight[c]
                if has_bias:
                    out = out + bias[c]
                y[n, c, 0] = out
    else:  # the unit is one (sample, channel) pair, S contiguous values
        first, stop = item_share(N * C, items, item)
        for i in range(first, stop):
            n = i // C
            c = i % C
            for s in range(S):
                out = np.float64(y[n, c, s])
                if has_weight:
                    out = out * weight[c]
                if has_bias:
                    out = out + bias[c]
                y[n, c, s] = out


@chunked_kernel(fastmath=FASTMATH_REASSOC)
def _affine_backward(
    g, dweight, dbias, dy, x, mean, rstd, weight, nchunks, want_g, want_sums, part_dy, part_dyxhat, items, item
):  # fmt: skip
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, C, S = x.shape
    G = mean.shape[1]
    per_group = C // G  # channels per group
    # part_dy, part_dyxhat: (nchunks, C) float64 partial sums of dβ and dγ, none unless wanted; np.empty,
    # each unit of work filling its own entries. A parallel run brings them from the wrapper (they outlive
    # its calls), a serial run allocates them here (see kernels/batch_norm.py).
    if want_sums and must_allocate_partials(part_dy.shape[0], nchunks, item):
        part_dy = np.empty((nchunks, C))
        part_dyxhat = np.empty((nchunks, C))
    if S == 1:  # (N, C): chunk k runs over whole rows, group by group (each a run of contiguous channels)
        first, stop = item_share(nchunks, items, item)
        for k in range(first, stop):
            if want_sums:
                for c in range(C):
                    part_dy[k, c] = 0.0
                    part_dyxhat[k, c] = 0.0
            for n in range(k * N // nchunks, (k + 1) * N // nchunks):
                for grp in range(G):
                    m = mean[n, grp]
                    r = rstd[n, grp]
                    first = grp * per_group
                    # range(per_group) plus an offset, not range(first, first + per_group): inner loops
                    # with a computed start were measured to run several times slower (no vectorisation)
                    for j in range(per_group):
                        c = first + j
                        d = np.float64(dy[n, c, 0])
                        # the flags are the same in every iteration: LLVM moves the tests out of the loops
                        if want_sums:  # else the partials are empty, never touched
                            part_dy[k, c] += d
                            part_dyxhat[k, c] += d * ((np.float64(x[n, c, 0]) - m) * r)
                        if want_g:  # else g is an empty stand-in
                            g[n, c, 0] = d * weight[c]
    else:  # the pair (chunk k, channel c) runs over S contiguous values per sample
        first, stop = item_share(nchunks * C, items, item)
        for i in range(first, stop):
            k = i // C
            c = i % C
            s_dy = np.float64(0.0)
            s_dyxhat = np.float64(0.0)
            for n in range(k * N // nchunks, (k + 1) * N // nchunks):
                m = mean[n, c // per_group]
                r = rstd[n, c // per_group]
                for s in range(S):
                    d = np.float64(dy[n, c, s])
                    # the sums under the flag too, not only their store below: LLVM unswitches this loop
                    # only, and with the sums outside the test it kept them in the g-only loop (2x slower)
                    if want_sums:
                        s_dy += d
                        s_dyxhat += d * ((np.float64(x[n, c, s]) - m) * r)
                    if want_g:
                        g[n, c, s] = d * weight[c]
            if want_sums:
                part_dy[k, c] = s_dy
                part_dyxhat[k, c] = s_dyxhat
    if want_sums and ends_run(items, item):
        add_up_chunks(dbias, part_dy)  # in chunk order, rounded once to x.dtype
        add_up_chunks(dweight, part_dyxhat)


def group_norm_affine_forward(y, weight, bias):
    """In place on ``y`` (N, C, S) holding x̂: y = weight_c · y + bias_c; weight, bias (C,) of y.dtype or None."""
    # an absent weight goes in as ones, an absent bias as zeros, and the flags skip them (see _jit.py)
    w = weight if weight is not None else shared_ones(y.shape[1], y.dtype)  # (C,)
    b = bias if bias is not None else shared_zeros(y.shape[1], y.dtype)  # (C,)
    _affine.launch(y.size, 0, y, w, b, weight is not None, bias is not None)  # 0: the units are independent


def group_norm_affine_backward(g, dweight, dbias, dy, x, mean, rstd, weight):
    """Fill ``g`` = weight_c · dy (N, C, S) unless None, and ``dweight``, ``dbias`` (C,) unless None.

    ``x`` and ``dy`` are (N, C, S) C-contiguous; ``mean`` and ``rstd`` are the (N, G) float64 statistics of
    the LayerNorm rows; ``weight`` is (C,) or None (then g = dy).
    """
    N, C, S = x.shape
    nchunks = num_chunks(N, C, size=x.size)
    # Absent outputs go in as empty stand-ins of the same numba type, skipped by the flags: one
    # specialisation per dtype, whichever of g, dweight, dbias the caller wants. Both parameter
    # sums or neither: one wanted alone costs the other's adds (one per element), into a scratch array.
    want_sums = dweight is not None or dbias is not None
    if want_sums:
        dweight = dweight if dweight is not None else np.empty(C, dtype=x.dtype)  # (C,)
        dbias = dbias if dbias is not None else np.empty(C, dtype=x.dtype)  # (C,)
    else:
        dweight = dbias = shared_empty(1, x.dtype)  # (0,)
    g_out = g if g is not None else shared_empty(3, x.dtype)  # (N, C, S) or (0, 0, 0) of x.dtype
    w = weight if weight is not None else shared_ones(C, x.dtype)  # (C,): always an array, read only for g
    part_dy = part_dyxhat = NO_PARTIALS  # a serial run allocates its partial sums itself
    items = 1
    if _affine_backward.runs_parallel(x.size):
        # the units: with S = 1 the chunks, with S > 1 the (chunk, channel) pairs, each summed whole in one
        # call, so any split into items gives the same bits (as in kernels/batch_norm.py)
        items = chunk_items(nchunks, x.size) if S == 1 else 0
        if want_sums:  # the partial sums of a parallel run, which outlive its calls
            part_dy, part_dyxhat = np.empty((nchunks, C)), np.empty((nchunks, C))
    want_g = g is not None
    _affine_backward.launch(
        x.size, items, g_out, dweight, dbias, dy, x, mean, rstd, w, nchunks, want_g, want_sums, part_dy, part_dyxhat
    )
