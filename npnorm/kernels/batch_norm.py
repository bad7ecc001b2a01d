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

* **Units of work.** The innermost loop always runs over contiguous memory, and a unit of work is a contiguous
  run of it: for an (N, C) input (L = 1) one sample row of C channels; for L > 1 the L values of one (sample,
  channel) pair. A work item is an even share of the units (``_jit.item_share``); a serial run does all
  items in one call, a parallel run gives them to numba's threads (``_jit.ChunkedKernel``). Every
  inner loop is ``range(n)`` from 0: loops like ``range(c0, c1)`` with a computed start were measured to run
  4–10 times slower (LLVM did not vectorise them), which is also why an (N, C) row is not cut into blocks of
  channels.
* **Races.** A channel's statistics span the whole batch, so sums over samples go through per-chunk partial
  buffers of shape (nchunks, C) float64, as dweight does in ``kernels/layer_norm.py``: the N samples are cut
  into chunks, the unit for chunk k (with L = 1) or for the pair (chunk k, channel c) (with L > 1)
  writes only its own entries, and the call that ends the run adds the partials up in chunk order (Chan's
  combination for the statistics, ``_jit.add_up_chunks`` for the gradient sums). ``+=`` from several
  items into one per-channel accumulator would be a race that silently loses updates. With L > 1 the
  (chunk, channel) pairs make the reductions parallel over channels as well as over samples. The chunks
  depend only on the shape, never on the number of threads or items, so serial and parallel runs give
  bit-identical results. A parallel run gets its partials from the wrapper (they outlive its calls); a
  serial run allocates them in its one call, which saves the NumPy call at small sizes.
* **Statistics: per chunk, then Chan's combination.** ``E[x²] − E[x]²`` cancels catastrophically when
  |mean| ≫ std. For float64, each work item computes the mean m of its chunk and then the deviations d = x − m —
  two passes over data it has just read — corrected for the rounding of m
  (norms/_moments.py): mean_k = m + Σd/n_k, M2_k = Σd² − Σd·Σd/n_k, so that a constant channel has M2 = 0
  exactly. The chunks are combined by the formula of Chan, Golub & LeVeque (1979), in float64
  (``_combine_chunks``)::

      mean = Σ_k n_k mean_k / M,   M2 = Σ_k M2_k + Σ_k n_k (mean_k − mean)²,   var = M2 / M

  For float64 input the mean is a shift from chunk 0's, mean_0 + Σ_k n_k (mean_k − mean_0) / M, which a
  constant channel's rounding needs as well.

  Every term of M2 is a sum of squares, so nothing cancels, and the chunks' statistics need no second pass over the
  whole channel. Far off centre, the spread terms would carry the rounding of the chunk means, an ulp of |mean|
  against a spread of σ/√n_k: float64 channels with |mean|/σ = 1e11 (mean 1e8, σ 1e-3, 40960 values in 16 chunks) got
  a variance off by 1e-8 to 8e-8 relative. So float64 chunks sum x − o_c instead, with the origin o_c = x[0, c] a
  sample of the channel (exact: within a factor of 2 of x, Sterbenz), which keeps the chunk means near 0 and their
  rounding relative to σ; o_c is added to the combined mean at the end. Now 1e-16 to 8e-15 there (1e-16 to 5e-16 at
  |mean|/σ = 1e6), measured against exact rational arithmetic; a constant channel still gets its value and 0 exactly
  (x − o_c = 0). Compiling the shift cost about 0.25 s more per dtype (paired fresh compiles of ``_batch_stats``, six
  rounds), and the correction 0.3-0.5 s more in both dtypes.
* **One pass for float32** (twentieth session). float32 chunks sum d = x − o_c and d² in one pass and take mean_k =
  Σd/n_k, M2_k = Σd² − Σd·mean_k (clamped at 0 against rounding): x is read once, not twice. The subtraction loses
  float64 digits in the ratio (o_c − mean_k)²/σ², and since o_c is a value of the channel, Samuelson's inequality
  (|o_c − mean| ≤ √(M − 1)·σ) and the spread terms bound the loss over all chunks by a factor of about M of
  float64's 1e-16: 1e-12 at M = 8192, far below float32's 6e-8 (tested with o_c at that bound). A constant channel
  gets d = 0: its value and a variance of exactly 0. The statistics take 0.64 of the two-pass time at 8192x1024,
  0.78-0.83 at 32768x256 and 1024x4096, 0.6-0.8 with L > 1, about the same in cache (Zen 4, float32, 2 threads, one
  process, interleaved, six rounds, 10th percentile of 40-400 calls). float64 keeps the two corrected passes, bit
  for bit.
* **Wide rows.** For an (N, C) input with C ≥ ``FOUR_ROWS_FROM_C`` the per-chunk partial rows are updated once
  per four samples (measurements at the constant).
* **float64 statistics, outputs in x.dtype.** Sums accumulate in float64 also for float32 input; the
  elementwise passes compute in float64 and round once to the output dtype.
* **Serial below a threshold** (``_jit.SERIAL_BELOW``), **no fastmath** except reassociation (which lets
  LLVM vectorise a sum; NaN handling stays exact).
* **Absent parameters.** γ never reaches a kernel (it is folded into ``scale``, a float64 array either way).
  An absent β goes in as zeros plus the run-time flag ``has_bias``, so ``_apply`` compiles once per dtype;
  the flag skips the add of 0 (measured 10-20% of the forward, see _jit.py). Evaluation mode
  (dx = scale · dy) is the run-time flag ``through_stats`` of ``_grad_input`` in the same way, with an empty
  (0,) float64 stand-in for the batch means it does not use: as None they were a type of their own, and
  ``_grad_input`` compiled twice per dtype. The flag is loop-invariant, LLVM unswitches the
  loops on it, and evaluation still skips the recomputation of x̂ (measured: as fast as before).

The derivation is in ``docs/batch_norm.md``; the NumPy twin of every kernel is in ``norms/batch_norm.py``,
and the tests check that the two agree.
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
    corrected_m2,
    ends_run,
    is_float64,
    item_share,
    kernel,
    must_allocate_partials,
    num_chunks,
    run_on_threads,
    shared_empty,
    shared_zeros,
    shifted_m2,
)

__all__ = [
    "batch_norm_backward",
    "batch_norm_forward",
    "batch_norm_stats",
    "num_chunks",
]

# Sums over samples go through (nchunks, C) partial buffers, with the chunk count of every npnorm kernel
# (kernels/_jit.py: a function of the shape alone, so any thread count gives the same sums). The two
# buffers of a kernel are two arrays (one (2, nchunks, C) array instead, with views of it, made the GroupNorm
# affine backward 10-40% slower: LLVM could no longer tell the two apart); a serial run gets empty stand-ins
# (_jit.NO_PARTIALS).


def _parts(kernel, N, C, L, size):
    """(nchunks, items, partials, partials) of a kernel with sums over samples (see the module docstring)."""
    nchunks = num_chunks(N, C, size=size)
    if not kernel.runs_parallel(size):
        return nchunks, 1, NO_PARTIALS, NO_PARTIALS  # a serial run: one call, which allocates the partials itself
    # The units of work: with L = 1 the chunks, a share of them per item (_jit.chunk_items); with L > 1 the
    # (chunk, channel) pairs, split like independent rows (0). Either is summed whole in one call, so any
    # split of them into items gives the same bits. The partials outlive the run's calls, so they come
    # from here.
    items = chunk_items(nchunks, size) if L == 1 else 0
    return nchunks, items, np.empty((nchunks, C)), np.empty((nchunks, C))


# --- statistics ----------------------------------------------------------------------------------------

# From this many channels on, an (N, C) input's sums over samples take four rows per update of the chunk's
# float64 partial rows. Those rows are 8·C bytes each; from C = 1024 on they no longer share L1 with the
# data, and a read-modify-write of them per row dominated (as in LayerNorm's backward, kernels/layer_norm.py).
# Measured 6 December, statistics + gradient sums, float32, 2 threads, alternated, time against one row at a
# time: 1024x4096 0.69-0.70, 4096x2048 0.76-0.82, 8192x1024 0.82-0.90; at C = 512 1.09-1.23 (slower),
# 768 0.95-0.98, and at C = 256 four rows took 1.5x as long, hence the threshold. Serial and parallel runs
# still add the same numbers in the same order (tests/test_batch_norm.py checks it bit for bit at C = 1030).
FOUR_ROWS_FROM_C = 1024


@kernel(parallel=False, helper=True)
def _combine_chunks(mean, var, part_mean, part_m2, N, L, shifted):
    """Chan et al.: the chunks' (count n_k, mean_k, M2_k) combined exactly; every term is ≥ 0::

        mean = Σ_k n_k mean_k / M,      var = (Σ_k M2_k + Σ_k n_k (mean_k − mean)²) / M

    ``shifted`` (float64 input): the mean as a shift from chunk 0's, mean_0 + Σ_k n_k (mean_k − mean_0) / M, so
    that where every chunk has the same mean (a constant channel) it is that mean exactly and the spread terms
    are exactly 0; Σ_k n_k mean_k / M rounds there (0.1·3 ≠ 0.3). float32 input does not need it (a float32
    mean times a count is exact in float64), and keeps the bits it had.

    A kernel of its own and without reassociation, so that each sum over chunks runs in chunk order,
    exactly as NumPy's ``sum(axis=0)`` did when this step was NumPy code: serial and parallel callers,
    and any thread count, give the same bits. Its arrays are float64 whatever x's dtype, so it compiles
    once. Adding up in the kernel saves the seven NumPy calls this took (~8 µs of a 35 µs BatchNorm
    forward at 64x64).
    """
    nchunks, C = part_mean.shape
    M = np.float64(N * L)
    sum_m2 = np.empty(C)
    sum_spread = np.empty(C)
    for k in range(nchunks):  # Σ_k n_k (mean_k − mean_0) or Σ_k n_k mean_k, from chunk 0 on
        n_k = np.float64(((k + 1) * N // nchunks - k * N // nchunks) * L)
        for c in range(C):
            term = n_k * (part_mean[k, c] - part_mean[0, c]) if shifted else n_k * part_mean[k, c]
            mean[c] = term if k == 0 else mean[c] + term
    for c in range(C):
        mean[c] = part_mean[0, c] + mean[c] / M if shifted else mean[c] / M
    for k in range(nchunks):  # Σ_k M2_k and Σ_k n_k (mean_k − mean)², each in chunk order
        n_k = np.float64(((k + 1) * N // nchunks - k * N // nchunks) * L)
        for c in range(C):
            spread = part_mean[k, c] - mean[c]
            term = n_k * spread * spread
            sum_m2[c] = part_m2[k, c] if k == 0 else sum_m2[c] + part_m2[k, c]
            sum_spread[c] = term if k == 0 else sum_spread[c] + term
    for c in range(C):
        var[c] = (sum_m2[c] + sum_spread[c]) / M


@chunked_kernel(fastmath=FASTMATH_REASSOC)
def _batch_stats(mean, var, x, nchunks, part_mean, part_m2, items, item):
    """mean[c], var[c] (biased) over (N, L): per-chunk statistics (float32 one pass, float64 two corrected
    passes), then Chan's combination."""
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, C, L = x.shape
    # part_mean[k, c], part_m2[k, c]: mean (about o_c) and Σ (x − mean)² of channel c over the samples of chunk k
    # (see "Statistics" and "One pass for float32").
    # np.empty, each chunk filling its own row: np.zeros would be a parallel region of its own (_jit.py).
    if must_allocate_partials(part_mean.shape[0], nchunks, item):
        part_mean = np.empty((nchunks, C))
        part_m2 = np.empty((nchunks, C))
    # Every chunk sums d = x − o_c, o_c = x[0, c, 0] a value of the channel (see "Statistics"); the origin is added
    # back once the chunks are combined. float32 takes Σd and Σd² in one pass ("One pass for float32"); float64
    # takes two, corrected, as its bits need. Both are compile-time constants (is_float64), and numba types only
    # the path of this specialisation's dtype (_jit._FoldDtypeTests).
    corrected = is_float64(x)
    one_pass = not corrected
    if L == 1:  # (N, C): chunk k sums whole rows of C contiguous channels
        first, stop = item_share(nchunks, items, item)
        shift = np.empty(C if corrected else 0)  # Σ d per channel, in each chunk in turn
        for k in range(first, stop):
            n0 = k * N // nchunks
            n1 = (k + 1) * N // nchunks
            for c in range(C):
                part_mean[k, c] = 0.0
                part_m2[k, c] = 0.0
            # pass 1: Σ d (and for float32 Σ d²); four rows per update of the partial rows (see _grad_sums)
            n = n0
            while C >= FOUR_ROWS_FROM_C and n + 4 <= n1:
                for c in range(C):
                    o = np.float64(x[0, c, 0])
                    d0 = np.float64(x[n, c, 0]) - o
                    d1 = np.float64(x[n + 1, c, 0]) - o
                    d2 = np.float64(x[n + 2, c, 0]) - o
                    d3 = np.float64(x[n + 3, c, 0]) - o
                    part_mean[k, c] += (d0 + d1) + (d2 + d3)
                    if one_pass:
                        part_m2[k, c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
                n += 4
            for row in range(n, n1):  # the last N mod 4 rows of the chunk (all of them for narrow C)
                for c in range(C):
                    d = np.float64(x[row, c, 0]) - np.float64(x[0, c, 0])
                    part_mean[k, c] += d
                    if one_pass:
                        part_m2[k, c] += d * d
            count = np.float64(n1 - n0)
            if one_pass:  # M2 = Σd² − Σd · mean(d)
                for c in range(C):
                    m = part_mean[k, c] / count
                    part_m2[k, c] = shifted_m2(part_m2[k, c], part_mean[k, c], m)
                    part_mean[k, c] = m
                continue
            for c in range(C):
                part_mean[k, c] /= count
            # float64, pass 2: the deviations d about that mean, from cache: Σ d (the correction) and Σ d²
            for c in range(C):
                shift[c] = 0.0
            n = n0
            while C >= FOUR_ROWS_FROM_C and n + 4 <= n1:
                for c in range(C):
                    m = part_mean[k, c]
                    o = np.float64(x[0, c, 0])
                    d0 = (np.float64(x[n, c, 0]) - o) - m
                    d1 = (np.float64(x[n + 1, c, 0]) - o) - m
                    d2 = (np.float64(x[n + 2, c, 0]) - o) - m
                    d3 = (np.float64(x[n + 3, c, 0]) - o) - m
                    shift[c] += (d0 + d1) + (d2 + d3)
                    part_m2[k, c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
                n += 4
            for row in range(n, n1):
                for c in range(C):
                    d = (np.float64(x[row, c, 0]) - np.float64(x[0, c, 0])) - part_mean[k, c]
                    shift[c] += d
                    part_m2[k, c] += d * d
            for c in range(C):  # the correction: mean += mean(d), M2 -= count * mean(d)²
                cm = shift[c] / count
                part_mean[k, c] += cm
                part_m2[k, c] = corrected_m2(part_m2[k, c], shift[c], cm)
    else:  # (N, C, L): the pair (chunk k, channel c) runs over L contiguous values per sample
        first, stop = item_share(nchunks * C, items, item)
        for i in range(first, stop):
            k = i // C
            c = i % C
            n0 = k * N // nchunks
            n1 = (k + 1) * N // nchunks
            o = np.float64(x[0, c, 0])
            s = np.float64(0.0)  # Σ d
            q = np.float64(0.0)  # Σ d², float32 only
            for n in range(n0, n1):
                for l in range(L):
                    d = np.float64(x[n, c, l]) - o
                    s += d
                    if one_pass:
                        q += d * d
            count = np.float64((n1 - n0) * L)
            m = s / count
            if one_pass:
                v = shifted_m2(q, s, m)
            else:
                t = np.float64(0.0)  # Σ d about m, the correction
                v = np.float64(0.0)  # Σ d²
                for n in range(n0, n1):
                    for l in range(L):
                        d = (np.float64(x[n, c, l]) - o) - m
                        t += d
                        v += d * d
                cm = t / count
                m += cm
                v = corrected_m2(v, t, cm)
            part_mean[k, c] = m
            part_m2[k, c] = v
    if ends_run(items, item):
        _combine_chunks(mean, var, part_mean, part_m2, N, L, corrected)
        for c in range(C):  # the chunks summed x − o_c
            mean[c] += x[0, c, 0]


def batch_norm_stats(mean, var, x):
    """Fill ``mean`` and ``var`` (C,) float64 with each channel's mean and biased variance over (N, L).

    ``x`` is (N, C, L) C-contiguous float32/float64 with N·L > 0.
    """
    N, C, L = x.shape
    nchunks, items, part_mean, part_m2 = _parts(_batch_stats, N, C, L, x.size)
    _batch_stats.launch(x.size, items, mean, var, x, nchunks, part_mean, part_m2)


# --- forward -------------------------------------------------------------------------------------------


@chunked_kernel(fastmath=FASTMATH_REASSOC, noalias=True)  # outputs never overlap inputs
def _apply(y, x, mean, scale, bias, has_bias, items, item):
    """y = (x − mean_c) · scale_c (+ bias_c if has_bias), elementwise."""
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, C, L = x.shape
    if L == 1:
        first, stop = item_share(N, items, item)
        for n in range(first, stop):
            for c in range(C):
                out = (np.float64(x[n, c, 0]) - mean[c]) * scale[c]
                if has_bias:  # the same in every iteration: LLVM moves the test out of the loop
                    out = out + bias[c]
                y[n, c, 0] = out
    else:
        first, stop = item_share(N * C, items, item)
        for i in range(first, stop):
            n = i // C
            c = i % C
            m = mean[c]
            s = scale[c]
            for l in range(L):
                out = (np.float64(x[n, c, l]) - m) * s
                if has_bias:
                    out = out + bias[c]
                y[n, c, l] = out


def batch_norm_forward(y, x, mean, rstd, weight, bias):
    """y = weight_c · (x − mean_c) · rstd_c + bias_c; fills ``y`` (N, C, L) of x.dtype.

    ``mean`` and ``rstd`` are (C,) float64 (batch or running statistics); ``weight`` and ``bias`` are (C,)
    of x.dtype or None.
    """
    scale = rstd if weight is None else rstd * weight  # (C,) float64: γ folded into rstd
    # an absent bias goes in as zeros, and the flag skips it: one specialisation (see _jit.py)
    b = bias if bias is not None else shared_zeros(x.shape[1], x.dtype)  # (C,)
    _apply.launch(x.size, 0, y, x, mean, scale, b, bias is not None)  # 0: the units are independent


# --- backward ------------------------------------------------------------------------------------------


@chunked_kernel(fastmath=FASTMATH_REASSOC)
def _grad_sums(sum_dy, sum_dyxhat, dy, x, mean, rstd, nchunks, part_dy, part_dyxhat, items, item):
    """sum_dy[c] = Σ dy and sum_dyxhat[c] = Σ dy · xhat over (N, L), through per-chunk partial sums."""
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, C, L = x.shape
    # (nchunks, C) float64 partials, each chunk filling its own row (np.empty: see _batch_stats)
    if must_allocate_partials(part_dy.shape[0], nchunks, item):
        part_dy = np.empty((nchunks, C))
        part_dyxhat = np.empty((nchunks, C))
    if L == 1:
        first, stop = item_share(nchunks, items, item)
        for k in range(first, stop):
            for c in range(C):
                part_dy[k, c] = 0.0
                part_dyxhat[k, c] = 0.0
            n0 = k * N // nchunks
            n1 = (k + 1) * N // nchunks
            # Four rows per update of the partial rows: for wide C the two float64 partial rows (16·C bytes)
            # do not fit in L1 beside the data, and a read-modify-write of them per row dominated.
            n = n0
            while C >= FOUR_ROWS_FROM_C and n + 4 <= n1:
                for c in range(C):
                    m = mean[c]
                    r = rstd[c]
                    g0 = np.float64(dy[n, c, 0])
                    g1 = np.float64(dy[n + 1, c, 0])
                    g2 = np.float64(dy[n + 2, c, 0])
                    g3 = np.float64(dy[n + 3, c, 0])
                    part_dy[k, c] += (g0 + g1) + (g2 + g3)
                    part_dyxhat[k, c] += (
                        g0 * ((np.float64(x[n, c, 0]) - m) * r) + g1 * ((np.float64(x[n + 1, c, 0]) - m) * r)
                    ) + (g2 * ((np.float64(x[n + 2, c, 0]) - m) * r) + g3 * ((np.float64(x[n + 3, c, 0]) - m) * r))
                n += 4
            for row in range(n, n1):  # the last N mod 4 rows of the chunk (all of them for narrow C)
                for c in range(C):
                    g = np.float64(dy[row, c, 0])
                    part_dy[k, c] += g
                    part_dyxhat[k, c] += g * ((np.float64(x[row, c, 0]) - mean[c]) * rstd[c])
    else:
        first, stop = item_share(nchunks * C, items, item)
        for i in range(first, stop):
            k = i // C
            c = i % C
            m = mean[c]
            r = rstd[c]
            s_dy = np.float64(0.0)
            s_dyxhat = np.float64(0.0)
            for n in range(k * N // nchunks, (k + 1) * N // nchunks):
                for l in range(L):
                    g = np.float64(dy[n, c, l])
                    s_dy += g
                    s_dyxhat += g * ((np.float64(x[n, c, l]) - m) * r)
            part_dy[k, c] = s_dy
            part_dyxhat[k, c] = s_dyxhat
    if ends_run(items, item):
        add_up_chunks(sum_dy, part_dy)  # in chunk order, as the sums over chunks everywhere
        add_up_chunks(sum_dyxhat, part_dyxhat)


@chunked_kernel(fastmath=FASTMATH_REASSOC, noalias=True)  # outputs never overlap inputs
def _grad_input(dx, dy, x, mean, rstd, scale, mean_dy, mean_dyxhat, through_stats, items, item):
    """dx = scale_c · (dy − mean_dy_c − xhat · mean_dyxhat_c); without ``through_stats``, dx = scale_c · dy."""
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, C, L = x.shape
    if L == 1:
        first, stop = item_share(N, items, item)
        for n in range(first, stop):
            for c in range(C):
                # the same in every iteration: LLVM moves the test out of the loop
                if through_stats:
                    xhat = (np.float64(x[n, c, 0]) - mean[c]) * rstd[c]
                    dx[n, c, 0] = scale[c] * (np.float64(dy[n, c, 0]) - mean_dy[c] - xhat * mean_dyxhat[c])
                else:  # mean_dy, mean_dyxhat are empty stand-ins, never read
                    dx[n, c, 0] = scale[c] * np.float64(dy[n, c, 0])
    else:
        first, stop = item_share(N * C, items, item)
        for i in range(first, stop):
            n = i // C
            c = i % C
            s = scale[c]
            if through_stats:
                m = mean[c]
                r = rstd[c]
                a = mean_dy[c]
                b = mean_dyxhat[c]
                for l in range(L):
                    xhat = (np.float64(x[n, c, l]) - m) * r
                    dx[n, c, l] = s * (np.float64(dy[n, c, l]) - a - xhat * b)
            else:
                for l in range(L):
                    dx[n, c, l] = s * np.float64(dy[n, c, l])


def batch_norm_backward(dx, dweight, dbias, dy, x, mean, rstd, weight, training):
    """Fill ``dx`` (N, C, L) and, unless None, ``dweight`` and ``dbias`` (C,), all of x.dtype.

    ``mean`` and ``rstd`` are the (C,) float64 statistics the forward used. ``training=True`` means they
    were this batch's own, so the gradient flows through them; ``training=False`` (running statistics)
    treats them as constants. ``dx`` may be None when only the parameter gradients are wanted.
    """
    N, C, L = x.shape
    if training or dweight is not None or dbias is not None:
        sum_dy = np.empty(C)  # (C,) float64
        sum_dyxhat = np.empty(C)  # (C,) float64
        nchunks, items, part_dy, part_dyxhat = _parts(_grad_sums, N, C, L, x.size)
        _grad_sums.launch(x.size, items, sum_dy, sum_dyxhat, dy, x, mean, rstd, nchunks, part_dy, part_dyxhat)
        if dweight is not None:
            dweight[...] = sum_dyxhat
        if dbias is not None:
            dbias[...] = sum_dy
    if dx is None:
        return
    scale = rstd if weight is None else rstd * weight  # (C,) float64
    if training:
        M = N * L
        _grad_input.launch(x.size, 0, dx, dy, x, mean, rstd, scale, sum_dy / M, sum_dyxhat / M, True)
    else:  # running statistics, constants: dx = scale · dy (the flag, not None: one specialisation)
        no_means = shared_empty(1, np.float64)  # (0,) float64, the type of the (C,) means
        _grad_input.launch(x.size, 0, dx, dy, x, mean, rstd, scale, no_means, no_means, False)
