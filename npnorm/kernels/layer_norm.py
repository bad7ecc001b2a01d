r"""Fused Numba kernels for LayerNorm (Ba et al. 2016) and AdaNorm (Xu et al. 2019).

Every kernel works on 2-D C-contiguous arrays: ``x`` has shape (N, H), one independent sample per row and
H normalized features per row, float32 or float64. Out-params come first and are allocated by the caller.
The names are those of ``norms/layer_norm.py`` and of llm.c: ``x, weight (γ), bias (β), mean (μ), rstd,
xhat (x̂), dy, dx, dweight, dbias``.

Forward, per row of H features::

    mean = (1/H) Σ_j x_j
    var  = (1/H) Σ_j (x_j - mean)^2           float64 rows: two passes, corrected; float32: one shifted pass (below)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    y    = weight * xhat + bias                weight and bias optional

Backward, with g = dy * weight (g = dy without weight)::

    dbias   = Σ_rows dy
    dweight = Σ_rows dy * xhat
    dx      = rstd * (g - a * mean_j(g) - b * xhat * mean_j(g * xhat))

where a = 0 if ``detach_mean`` else 1 and b = 0 if ``detach_var`` else 1 (Xu et al.'s DetachNorm treats μ,
σ as constants in backward; both detached gives dx = rstd * g).

AdaNorm has no weight or bias: y = xhat as above, z = C * (1 - k*y) * y, and the backward treats
φ = C * (1 - k*y) as a constant: g = dz * φ, dx = rstd * (g - mean_j(g) - y * mean_j(g * y)).

The derivation, step by step, is in ``docs/``; the readable NumPy twin of every kernel is in
``norms/layer_norm.py`` and the tests check that the two agree.

How the kernels are written, and why:

* **Corrected two-pass variance.** ``E[x²] - E[x]²`` cancels catastrophically when |mean| ≫ std (a float32
  row with mean 1e4 and std 1e-2 would get a variance of 0, or one many times too large). The row is in cache
  after the first pass, so the second pass costs almost nothing. For float64 rows that pass also sums the
  deviations d = x - m from the first pass's mean m, whose mean c is m's rounding error: mean = m + c and
  var = mean(d²) - c² (Chan, Golub & LeVeque; norms/_moments.py). So a constant row has its constant as its
  mean and a variance of exactly 0 (uncorrected, a float64 row of 0.1s got about ulp², and with eps = 0
  xhat = ±1 instead of NaN). float32 rows take one pass of shifted sums instead (below). The NumPy reference
  corrects every row; the tests hold the kernels and it together.
* **One pass for float32 rows** (LayerNorm's and AdaNorm's forward, since the twentieth session). A float32 row's
  mean and variance come from one pass of float64 sums of d = x - k, shifted by the row's first value k: mean = k +
  Σd/H and var = (Σd² - Σd·Σd/H)/H, clamped at 0 against rounding. The subtraction loses float64 digits in the ratio
  (k - mean)²/σ², and Samuelson's inequality bounds that by H - 1 for any value of the row, so at worst a factor H
  of float64's 1e-16 (measured: 7e-12 relative in rstd at H = 4099 with k at that bound, 1e-16 for ordinary rows;
  tests/test_kernels_layer_norm.py), far below float32's 6e-8, whatever |mean| is. A constant row gets d = 0: its
  value as mean and a variance of exactly 0. The pass runs inside the previous row's output loop, so each row is
  read from memory once and its output written from L1: 0.76-0.84 of the two-pass kernel's time from H = 512 to
  8192, 0.95 at 32768x256, 0.88-0.91 at 64x64 to 32x512 (Zen 4, float32, 2 threads, in one process, interleaved,
  10th percentile of 40-400 calls). float64 rows keep the corrected two passes above, whose bits the shift would
  change: there the loss would show.
* **float64 statistics.** Row sums (the forward's mean and variance, the backward's Σ g and Σ g·xhat and
  the partial sums of dweight and dbias) accumulate in float64 also for float32 input, and ``mean``/``rstd``
  are stored as float64 arrays of shape (N,). The backward recomputes xhat = (x - mean) * rstd; a mean rounded
  to float32 would be off by up to half an ulp of |mean| — for mean 1e4 that is 5e-4, i.e. 5% of a std of
  1e-2 — and every recomputed xhat would carry that error. Outputs are written in x.dtype.
* **Split mean.** The forward's output pass runs in x's dtype (8 float32 lanes where float64 has 4; it was
  the largest part of the forward at 1024x4096). Centring with a float32-rounded mean would carry the error
  described above, so the float64 mean is split into m_hi = float32(m) and m_lo = float32(m - m_hi), and
  xhat = ((x - m_hi) - m_lo) * rstd: for x near m_hi the first difference is exact (Sterbenz), the second
  restores the rest of m, and xhat has an error of a few float32 ulps of xhat itself, whatever |mean| is
  (measured: about 1e-7 of max|y| against float64, as torch for benign rows and 5e5 times smaller than
  torch for mean 1e4, std 1e-2). For float64 input m_lo = 0 and the pass is plain float64.
* **The backward's dx pass in x's dtype too.** Pass 2, dx = rstd * (g - mean_g - xhat * mean_gxhat), is
  elementwise (no sum) once pass 1 has its two float64 means; it runs in x's dtype with the split mean,
  with rstd and both means rounded once to that dtype. Counting each rounding (u = 2^-24 for float32) gives
  |dx - exact| <= 12u * rstd * (|g| + |mean_g| + |xhat * mean_gxhat|) to first order, per element
  (measured: at most 4.1u, against 1u when the pass ran in float64; ``_dx_row`` has the count). It is the accuracy
  class of the forward's output pass, and what the tests hold the kernels to. Measured, float32, 2 threads,
  interleaved, against the float64 pass: 256x256 0.71, 64x64 0.80, 1024x1024 0.76 of the time (rows in
  cache, where the float64 pass was most of the work); 32768x256 0.75-0.88, 1024x4096 0.95-1.01,
  8192x1024 0.96-1.00 (four runs, both orders; from memory, where pass 1 and the traffic dominate).
* **Range.** A pass in x's dtype needs its intermediates to fit that dtype: rstd itself (a row whose std
  is below ~1e-38, possible with eps = 0, overflows it in float32) and x - mean (up to sqrt(H)·std, which
  overflows for rows spread across float32's range, |x| near 3.4e38). Rows with rstd outside [1/limit,
  limit], limit = (largest number of x's dtype) / (4·sqrt(H)), and rows with a NaN rstd are redone in
  float64 by the wrappers, with NumPy (``_redo_forward_rows``, ``_redo_backward_rows``): the float64
  answer rounded once. The wrappers find out whether there are any with ``any_out_of_range``, a scan of
  rstd compiled once for every dtype and row length (0.2 µs a call); the kernels do not change. Measured 6 December:
  handling such rows inside the kernels (a float64 pass per row beside the other) cost 1.5-2 s more
  compilation, a call to it inside the forward's row loop 5-10% of its time; the same scan inlined into
  each kernel and returned from it 0.2 s of compilation per kernel specialisation, and a flag array passed
  to the kernels 0.4-0.6 µs per call at 64x64 (3.0 µs). Not covered: a single product weight·xhat (forward) or
  dy·weight (backward) beyond the dtype's largest number (3.4e38 for float32) is inf where float64 could
  have rounded a finite result; catching that needs a check per element, which cost 5-30% of the kernels
  (measured), for inputs no training run survives anyway.
* **Few passes per row, and memory kept busy.** The forward reads a float32 row once (its shifted sums) and a
  float64 row twice (sum, then squared deviations), and writes y in one more loop over the same row while it
  is in cache; backward computes the
  two row sums, then dx. The forward's output loop of one row also runs the next row's first pass, so that
  the next row streams in from memory while this one is written (``_layer_norm_forward``: 0.79-0.86 of the
  unfused kernel's time at 8192x1024), and the backward's dx loop of one row the next row's sums (0.88-1.00
  at 8192x1024 to 32768x256). That keeps the kernels at memory-bandwidth speed.
* **Work items and races.** Each call of a kernel body runs some of its ``items`` work items, each a block of
  rows (``_jit.ChunkedKernel``); in a parallel run the items run on numba's threads at once. dweight and
  dbias are sums over rows; writing ``dweight[j] += ...`` from several items at once is a data race that
  silently loses updates. Instead the backward cuts the rows into "chunks", a number that depends only on
  the shape (``_jit.num_chunks``), not on the number of threads; each chunk sums into its own row of a
  partial buffer of shape (nchunks, H), each item runs a share of the chunks, and the call that ends the
  run (``_jit.ends_run``) adds the partials up in chunk order. So serial and parallel runs add the same
  numbers in the same order.
* **Wide rows.** For H ≥ ``BLOCK_FROM_H`` = 2048 the two float64 partial rows (32 KiB and more) crowd the
  data rows out of L1, and updating them once per row dominated the backward; there pass 1 runs over
  ``BLOCK_ROWS`` = 4 rows side by side and updates the partials once for all four (measurements, and why
  four rows, in ``_backward_4_rows``). The float32 forward with weight and bias takes two rows at a time
  from H ≥ ``FORWARD_BLOCK_FROM_H`` = 2048: each row's statistics, then one output pass for both, so that
  each load of weight[j] and bias[j] serves two rows (``_forward_2_rows``). It had a kernel of its own for
  that until the fifteenth session, when the fused one-row loop was faster on that session's host; on the
  later one the blocks are faster again from memory.
* **Serial below a threshold.** Each kernel body is compiled once; inputs smaller than
  ``_jit.SERIAL_BELOW`` elements run it serially, in one call, because waking the thread pool costs more
  than the work (measured next to that constant). Larger ones run its items through a small parallel
  launcher that calls the same compiled body (why, and what it saves in compile time: ``_jit.ChunkedKernel``).
* **No fastmath, only reassociation.** ``fastmath=True`` would assume "no NaNs", yet a NaN in one row must
  give NaN in that row's outputs (and, through the sums, in dweight and dbias) and nowhere else. The one
  flag we use, "reassoc", lets LLVM split each row sum into vector lanes; the sums then differ from a
  left-to-right sum by float64 rounding only (measured gain and the reason there is no "contract": _jit.py).
* **Absent weight and bias: arrays and flags.** Numba compiles a specialisation per combination of
  argument types, and None is a type of its own. The wrappers therefore pass an absent weight as ones and
  an absent bias as zeros (cached arrays, ``_jit.shared_ones``), together with the run-time flags
  ``has_weight`` and ``has_bias``: each kernel then compiles once per dtype, not once per
  combination, and GroupNorm's rows (no weight, no bias) share LayerNorm's specialisations. The flags skip
  the multiply by 1 and the add of 0, which cost up to 40% of a kernel's time (measured in _jit.py); they
  are the same in every iteration, and LLVM hoists them out of the loops. Skipping also keeps the results
  of the old None branches (x·1 + 0 would differ from x in the sign of a zero: -0.0 + 0.0 = +0.0).
* **Specialisation on None.** Where None saves real work it remains a compile-time choice: ``if dweight is
  None`` in the backward (no parameter gradient wanted) prunes the partial sums in one specialisation and
  keeps them in the other.
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
    partials_chunks,
    run_on_threads,
    shared_ones,
    shared_zeros,
    shifted_m2,
)

__all__ = [
    "ada_norm_backward",
    "ada_norm_forward",
    "layer_norm_backward",
    "layer_norm_forward",
]

# --- LayerNorm -----------------------------------------------------------------------------------------


@kernel(parallel=False, fastmath=FASTMATH_REASSOC, inline=True)
def _row_pass_2(row, m, eps):
    """Pass 2 of one float64 row whose pass-1 mean m is known: the corrected mean and rstd = 1/sqrt(var + eps)
    (see "Corrected two-pass variance"; float32 rows take one pass instead)."""
    H = row.shape[0]
    # the variance from squared deviations d = x - m (never E[x²] - E[x]²), corrected by their mean cm
    t = np.float64(0.0)  # Σ d
    v = np.float64(0.0)  # Σ d²
    for j in range(H):
        d = np.float64(row[j]) - m
        t += d
        v += d * d
    # eps = 0 and a constant row give 1/0 = inf below, not an exception (error_model="numpy")
    cm = t / H
    return m + cm, 1.0 / np.sqrt(corrected_m2(v, t, cm) / H + eps)


@kernel(parallel=False, inline=True)
def _shifted_mean_rstd(k, s, v, H, eps):
    """mean and rstd = 1/sqrt(var + eps) of a row of H values from its shifted sums s = Σ (x - k) and
    v = Σ (x - k)², k a value of the row (see "One pass for float32 rows")."""
    c = s / H
    return k + c, 1.0 / np.sqrt(shifted_m2(v, s, c) / H + eps)


@kernel(parallel=False, fastmath=FASTMATH_REASSOC, inline=True)
def _row_mean_rstd(row, eps, one_pass):
    """mean and rstd = 1/sqrt(var + eps) of one row, in float64 whatever the dtype of the row: a float32 row in
    one pass of shifted sums, a float64 row in two corrected passes. ``one_pass`` is the caller's ``not
    is_float64(x)``: as an argument it is a constant of the caller's specialisation, so numba types only the
    branch taken (_jit._FoldDtypeTests; ``is_float64(row)`` here would not fold, row being no kernel argument)."""
    H = row.shape[0]
    if one_pass:
        k = np.float64(row[0]) if H > 0 else 0.0
        s = np.float64(0.0)
        v = np.float64(0.0)
        for j in range(H):
            d = np.float64(row[j]) - k
            s += d
            v += d * d
        return _shifted_mean_rstd(k, s, v, H, eps)
    # pass 1: the mean
    s = np.float64(0.0)
    for j in range(H):
        s += np.float64(row[j])
    return _row_pass_2(row, s / H, eps)


@kernel(parallel=False, inline=True)
def _split_mean(m, x):
    """The float64 mean m as m_hi + m_lo, both of x's dtype (see "Split mean"); m_lo = 0 for float64 x."""
    m_hi = x.dtype.type(m)
    return m_hi, x.dtype.type(m - m_hi)


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT64_MAX = float(np.finfo(np.float64).max)


def _range_limit(itemsize, H):
    """limit = largest number of the dtype (float32 or float64, by ``itemsize``) / (4·sqrt(H)), H ≥ 1 ("Range")."""
    return (_FLOAT32_MAX if itemsize == 4 else _FLOAT64_MAX) / (4.0 * np.sqrt(H))


_compiled_range_limit = kernel(parallel=False, inline=True)(_range_limit)  # the same rule, in any_out_of_range


@kernel(parallel=False)
def any_out_of_range(rstd, itemsize, H):
    """Whether any row's rstd is outside [1/limit, limit] or NaN: its pass in x's dtype (by ``itemsize``) may
    have overflowed ("Range"). False for rows of no values (H = 0): nothing in them to redo."""
    if H == 0:
        return False
    limit = _compiled_range_limit(itemsize, H)
    least = 1.0 / limit
    outside = 0  # counted, not a loop that stops at the first: that one is not vectorised (3.5x the time)
    for i in range(rstd.shape[0]):
        outside += not least <= rstd[i] <= limit
    return outside > 0


# Wide rows in the forward: FORWARD_BLOCK_ROWS rows at a time (see _forward_2_rows) from this row length on.
FORWARD_BLOCK_FROM_H = 2048
FORWARD_BLOCK_ROWS = 2


@kernel(parallel=False, fastmath=FASTMATH_REASSOC, inline=True)
def _forward_2_rows(y, mean, rstd, x, weight, bias, eps, i, one_pass):
    """Rows i and i+1 of the forward: each row's statistics (_row_mean_rstd), then one output pass for both.

    Only for float32 rows with both weight and bias (the kernel's test, `one_pass and has_weight and has_bias`,
    settled before typing for float64: _jit._FoldDtypeTests): the block gains by sharing the loads of
    weight[j] and bias[j] between two rows, and each case it covers is compiled code. Compiled cold, it
    added 0.35-0.45 s to the float32 forward (1.30-1.63 against 0.94-1.18 s, six fresh processes alternated)
    and 0.45 s to LayerNorm's warm-up unit; covering float64 (0.79-0.90 of the time there) and the rows
    without weight or bias too cost 0.7-0.8 s per dtype.

    Why, for wide rows. The kernel's fused loop writes row p's output while it sums row p + 1: it reads x[p],
    weight and bias, writes y[p] and reads x[p + 1], five rows' worth (80 KiB at H = 4096) against a 32 KiB
    L1. Here each row's sums stream it from memory on their own, and the output pass then serves two rows
    per load of weight[j] and bias[j]. Measured on the Zen 4 host (22nd session, 7 December) against the
    fused loop, float32, 2 threads, interleaved in one process, both writing the same arrays, 10th percentile
    / median of 20-400 calls, two runs where given: from memory 8192x2048 0.74 / 0.66, 4096x2048 0.94-0.98 /
    0.95, 2048x3072 0.81 / 0.90, 1024x4096 0.81-0.86 / 0.79-0.81, 2048x4096 0.82 / 0.82, 4096x4096 0.79 /
    0.79, 512x8192 0.77 / 0.79; no faster at 2048x2048 (1.00 / 0.99), and slower where x (8 MiB and less)
    stays in the 32 MiB L3 between calls: 1024x2048 1.13 / 1.11, 1024x3072 1.13 / 1.04, 512x4096 1.10 / 1.07,
    256x4096 1.05 / 1.06, 64x4096 1.02 / 1.01. Float64: 0.79-0.90, in cache too. Four rows (a standalone prototype)
    gained more from memory (1024x4096 0.73-0.89 of the kernel's time, 512x8192 0.60-0.72) and lost more in
    L3 (1.47x at 256x4096 and 512x4096). On the Zen 3 host the fused loop had been faster than a two-row
    kernel at every wide shape (0.86-0.95 of its time, see the kernel's docstring).

    The row sums here come from _row_mean_rstd's loop, and those of the last row of an odd N from the fused
    loop; at the shapes measured the two give the same bits (LLVM splits both sums alike), and the kernel
    hands whole blocks to its items, so which loop sums a row depends on N alone, not on the items.
    """
    H = x.shape[1]
    for k in range(i, i + 2):  # a loop, not two calls: numba then inlines _row_mean_rstd once
        mean[k], rstd[k] = _row_mean_rstd(x[k], eps, one_pass)
    m0, m1 = mean[i], mean[i + 1]
    r0, r1 = rstd[i], rstd[i + 1]
    m0_hi, m0_lo = _split_mean(m0, x)
    m1_hi, m1_lo = _split_mean(m1, x)
    r0_x, r1_x = x.dtype.type(r0), x.dtype.type(r1)
    for j in range(H):
        out0 = ((x[i, j] - m0_hi) - m0_lo) * r0_x  # xhat, as in the kernel's output pass
        out1 = ((x[i + 1, j] - m1_hi) - m1_lo) * r1_x
        w, b = weight[j], bias[j]
        y[i, j] = out0 * w + b
        y[i + 1, j] = out1 * w + b


@chunked_kernel(fastmath=FASTMATH_REASSOC, noalias=True)  # outputs never overlap inputs (see below)
def _layer_norm_forward(y, mean, rstd, x, weight, bias, has_weight, has_bias, eps, items, item):
    """The forward of this call's rows, the output pass of each row fused with the next row's first pass
    (float32 wide rows with weight and bias, from H = FORWARD_BLOCK_FROM_H: two rows at a time,
    _forward_2_rows, and only the last N mod 2 row through the fused loop).

    Row by row, the two statistics passes and the output pass would read a row from memory once (pass 1)
    and then work from L1 for two passes, with no read in flight: memory idles for most of each row. Here
    the loop that writes row p's output also sums row p + 1 (pass 1), so the next row streams in while this
    one is written out; for float64, pass 2 (the variance) then runs over that row from L1, and float32 needs
    no pass 2 (its sums are shifted: "One pass for float32 rows"). Measured 7 December (Zen 3,
    float32, 2 threads, in one process, interleaved, both variants writing the same arrays, 10th percentile
    and median of 40 calls) against the unfused kernel and, from H = 2048, the two-row kernel it replaced:
    8192x1024 0.79-0.86, 16384x1024 0.79-0.82, 4096x1024 0.82, 2048x1024 0.86-0.87, 1024x1536 0.81-0.89,
    8192x512 0.90-0.92, 32768x256 0.96-1.03, 2048x2048 0.86, 4096x2048 0.86-0.89, 1024x4096 0.94-0.95,
    512x8192 0.88-0.89; in cache 1.02-1.20 (64x64 4.6 -> 5.4 µs at the 10th percentile, 128x64 1.11-1.20,
    256x256 1.02-1.11), where there is no memory to overlap. A software prefetch of the next row in the
    output pass instead of the loads (standalone kernels) gained nothing with 2 threads (1.03 at H = 1024).

    The first iteration writes row `first` with stand-in statistics (zeros), and the next iteration writes
    it again with its own: so every row's sum, wherever a call's rows begin, comes from this one loop, and a
    parallel run gives the bits of a serial one (LLVM may split a reduction into lanes differently in two
    different loops). ``noalias``: without it a row's bits depended on where NumPy had put the arrays
    (rows of 8-16 float64 values, caught by tests/test_rnn.py). Our reading: LLVM guards a vectorised loop
    that reads x and writes y with a run-time test that the two do not overlap, and where the test fails
    runs a scalar copy of the loop, which sums in another order; noalias removes the test. The callers
    allocate y, mean and rstd themselves, so no output overlaps an input.
    """
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, H = x.shape
    one_pass = not is_float64(x)  # a compile-time constant: float32 rows take "One pass for float32 rows"
    if one_pass and has_weight and has_bias and H >= FORWARD_BLOCK_FROM_H:
        # float32 wide rows with weight and bias (see _forward_2_rows): the items share blocks of
        # FORWARD_BLOCK_ROWS rows, so that which rows go through the block (and which, the last
        # N mod FORWARD_BLOCK_ROWS, through the loop below) depends on N alone
        first, stop = item_share((N + FORWARD_BLOCK_ROWS - 1) // FORWARD_BLOCK_ROWS, items, item)
        first, stop = first * FORWARD_BLOCK_ROWS, min(stop * FORWARD_BLOCK_ROWS, N)
        while first + FORWARD_BLOCK_ROWS <= stop:
            _forward_2_rows(y, mean, rstd, x, weight, bias, eps, first, one_pass)
            first += FORWARD_BLOCK_ROWS
    else:
        first, stop = item_share(N, items, item)
    p = first  # the row whose output the fused loop writes: row i - 1, or `first` with stand-ins
    m_hi = m_lo = r_x = x.dtype.type(0.0)
    for i in range(first, stop):
        # float32: the shift k = x[i, 0]; float64: 0.0, and x - 0.0 folds to x (the pass-1 sum as it was)
        k = np.float64(x[i, 0]) if one_pass and H > 0 else 0.0
        s = np.float64(0.0)  # Σ (x - k)
        v = np.float64(0.0)  # Σ (x - k)², float32 only
        for j in range(H):
            # y = weight * xhat + bias of row p in x's dtype, with the float64 mean split into two parts of
            # that dtype, m = m_hi + m_lo, so that centring stays accurate when |mean| ≫ std: x - m_hi is
            # exact for x near m_hi (Sterbenz), and m_lo brings back what rounding m lost (see "Split mean"
            # in the module docstring). For float64, m_lo = 0.
            out = ((x[p, j] - m_hi) - m_lo) * r_x  # xhat
            if has_weight:  # the same in every iteration: LLVM moves the test out of the loop
                out = out * weight[j]
            if has_bias:
                out = out + bias[j]
            y[p, j] = out
            d = np.float64(x[i, j]) - k  # the statistics of row i, in float64
            s += d
            if one_pass:
                v += d * d
        if one_pass:  # mean and variance from the shifted sums
            m, r = _shifted_mean_rstd(k, s, v, H, eps)
        else:
            m, r = _row_pass_2(x[i], s / H, eps)  # float64: pass 2 from L1, corrected
        mean[i] = m  # (N,) float64
        rstd[i] = r  # (N,) float64
        m_hi, m_lo = _split_mean(m, x)
        r_x = x.dtype.type(r)
        p = i
    if first < stop:
        for j in range(H):  # the output pass of the last row
            out = ((x[p, j] - m_hi) - m_lo) * r_x
            if has_weight:
                out = out * weight[j]
            if has_bias:
                out = out + bias[j]
            y[p, j] = out


@kernel(parallel=False, fastmath=FASTMATH_REASSOC, helper=True)
def _dx_row(dx, dy, x, weight, has_weight, i, m, r, mean_g, mean_gxhat):
    """Pass 2 of row i: dx = rstd * (g - a*mean(g) - b*xhat*mean(g*xhat)), the means already scaled by a, b.

    In x's dtype (see the module docstring). Its rounding error to first order, with u = 2^-24 (float32's
    unit roundoff: one rounding changes a value v by at most u|v|), relative to
    T = |g| + |mean_g| + |xhat * mean_gxhat|:

    * xhat = ((x - m_hi) - m_lo) * rstd: 4u of |xhat| (two differences, a product, rstd rounded);
    * xhat * mean_gxhat: 6u of its size (xhat's 4u, mean_gxhat rounded, the product);
    * g = dy * weight: u of |g|; g - mean_g: 2u (mean_g rounded, the difference);
    * minus xhat * mean_gxhat: u; times the rounded rstd: 2u.

    Every intermediate is at most T in size, so |dx - exact| <= (1 + 2 + 6 + 1 + 2) u * rstd * T
    = 12u * rstd * T. The float64 means it starts from are exact to float64 rounding, negligible next to u.
    """
    H = x.shape[1]
    m_hi, m_lo = _split_mean(m, x)
    r_x = x.dtype.type(r)
    mg = x.dtype.type(mean_g)
    mgx = x.dtype.type(mean_gxhat)
    for j in range(H):
        xhat = ((x[i, j] - m_hi) - m_lo) * r_x
        g = dy[i, j]
        if has_weight:
            g = g * weight[j]
        dx[i, j] = r_x * (g - mg - xhat * mgx)


# Wide rows are handled BLOCK_ROWS rows at a time (see _backward_4_rows) from this row length on. Below it
# the one-row loop is faster (measured there).
BLOCK_FROM_H = 2048
BLOCK_ROWS = 4


# Inlined into its one caller, not called: as a called helper numba compiled it on its own and then again inside
# the backward, which links it in. Inlined, LayerNorm's and RMSNorm's backward (both dtypes, with parameter
# gradients) compiled in 5.5 s against 5.9 s (medians of six rounds alternated in one process), with dx, dγ and
# dβ bit-identical and the same speed (0.96-1.01 of the time from 64x64 to 512x8192, 7 December).
@kernel(parallel=False, fastmath=FASTMATH_REASSOC, inline=True)
def _backward_4_rows(dx, dweight_part, dbias_part, dy, x, mean, rstd, weight, has_weight, a, b, i):
    """Rows i .. i+3 as in the one-row loop of _layer_norm_backward, with one pass 1 for the four rows.

    Per row, the one-row loop reads and writes both float64 partial rows (16 bytes per element). From
    H = 2048 those 2·8·H bytes (32 KiB and more) fill a 32 KiB L1 by themselves, and that read-modify-write
    from L2 dominated the backward. Here pass 1 reads the four rows side by side, adds their shares per column
    in float64 and updates the partials once for all four, while it also gathers each row's Σ g and Σ g·xhat;
    pass 2 (_dx_row) then finds the rows in L1 or L2.

    How many rows depends on the host, and has changed with it. Four on the first host (AVX-512: 1024x4096
    1.29 against 1.85 ms one row at a time). Two on the Zen 3 host of the twelfth to nineteenth sessions
    (AVX2), where four were the slowest choice: two took 0.86-0.97 of their time at every shape measured.
    Four again on the Zen 4 host (AVX-512) of the twentieth session on: against two rows, float32, 2 threads,
    interleaved in one process, both writing the same arrays, 10th percentile / median of 20-200 calls
    (22nd session, 7 December): 1024x4096 0.93 / 0.94, 2048x2048 0.86 / 0.88, 512x8192 0.91 / 0.93,
    4096x2048 0.90 / 0.90, 2048x4096 0.94 / 0.94, 1024x2048 0.94 / 0.92, in cache 256x4096 0.96 / 0.96 and
    64x4096 0.97 / 1.09; float64 0.84-0.98. dx, dγ and dβ kept their float32 bits at those shapes (float64:
    the last bits of the sums move). Compiled cold, LayerNorm's backward with parameter gradients took about
    0.1 s more per dtype (1.11-1.23 against 1.04-1.12 s, four fresh processes alternated). Generated for the
    Zen 3 CPU (``NUMBA_CPU_NAME=znver3``, AVX2 code) and run on the Zen 4 host, four rows still beat two
    (1024x4096 1.35 against 1.61 ms): AVX2 code and its 16 vector registers alone do not explain why two
    rows won on the Zen 3 host; what did is not known (that host was not at hand to measure).

    Why from H = 2048. Four rows from H = 1024 (BLOCK_FROM_H) against from 2048, the same run: 8192x1024
    1.10 / 1.12, 4096x1024 1.15 / 1.10, 2048x1536 1.06 / 1.05, 1024x1024 1.02 / 1.03 of the time, 16384x1024
    0.95 / 0.96. On the Zen 3 host two rows from H = 1024 had likewise been slower than one row at a time
    (one row took 0.77-0.96 of their time below H = 2048) and faster from H = 2048 (1.02-1.12). Below
    H = 1024 row blocks are slower still (1.28-1.59 of one row's time at H = 256-768 for two rows, 10% at
    768 to 2x at 256 for four). (An array of per-row sums instead of the scalars below is not vectorised by
    LLVM and was three times slower.)
    """
    H = x.shape[1]
    m0, m1, m2, m3 = mean[i], mean[i + 1], mean[i + 2], mean[i + 3]
    r0, r1, r2, r3 = rstd[i], rstd[i + 1], rstd[i + 2], rstd[i + 3]
    s0 = s1 = s2 = s3 = np.float64(0.0)  # Σ g per row
    t0 = t1 = t2 = t3 = np.float64(0.0)  # Σ g * xhat per row
    for j in range(H):
        d0, d1 = np.float64(dy[i, j]), np.float64(dy[i + 1, j])
        d2, d3 = np.float64(dy[i + 2, j]), np.float64(dy[i + 3, j])
        xhat0 = (np.float64(x[i, j]) - m0) * r0
        xhat1 = (np.float64(x[i + 1, j]) - m1) * r1
        xhat2 = (np.float64(x[i + 2, j]) - m2) * r2
        xhat3 = (np.float64(x[i + 3, j]) - m3) * r3
        dbias_part[j] += (d0 + d1) + (d2 + d3)
        dweight_part[j] += (d0 * xhat0 + d1 * xhat1) + (d2 * xhat2 + d3 * xhat3)
        if has_weight:
            w = np.float64(weight[j])
            d0, d1, d2, d3 = d0 * w, d1 * w, d2 * w, d3 * w  # g = dy * weight
        s0 += d0
        s1 += d1
        s2 += d2
        s3 += d3
        t0 += d0 * xhat0
        t1 += d1 * xhat1
        t2 += d2 * xhat2
        t3 += d3 * xhat3
    _dx_row(dx, dy, x, weight, has_weight, i, m0, r0, a * (s0 / H), b * (t0 / H))
    _dx_row(dx, dy, x, weight, has_weight, i + 1, m1, r1, a * (s1 / H), b * (t1 / H))
    _dx_row(dx, dy, x, weight, has_weight, i + 2, m2, r2, a * (s2 / H), b * (t2 / H))
    _dx_row(dx, dy, x, weight, has_weight, i + 3, m3, r3, a * (s3 / H), b * (t3 / H))


# noalias: the outputs (dx, the partials, dweight, dbias) never overlap the inputs; why it matters, as in the forward
@chunked_kernel(fastmath=FASTMATH_REASSOC, noalias=True)
def _layer_norm_backward(
    dx, dweight, dbias, dy, x, mean, rstd, weight, has_weight, detach_mean, detach_var, dweight_part, dbias_part,
    items, item
):  # fmt: skip
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, H = x.shape
    a = 0.0 if detach_mean else 1.0  # keep the gradient through mean?
    b = 0.0 if detach_var else 1.0  # keep the gradient through rstd?
    # dweight_part, dbias_part: per-chunk float64 partial sums of dweight and dbias, (nchunks, H) each;
    # none when neither is wanted. A parallel run brings them (they must outlive its calls), and each of
    # its items runs a share of the chunks. A serial run, all in one call, gets empty stand-ins, its
    # `items` is the chunk count, and it allocates the partials here: at 64x64 the NumPy calls that
    # allocated and added them up cost ~1.5 µs, a third of the kernel. np.empty, and each chunk zeroes its
    # own row. Two arrays, not views of one: LLVM cannot tell views of one array apart, and kept the
    # GroupNorm affine backward, which had them, from vectorising (10-40% slower, kernels/batch_norm.py).
    # Without partials the chunks are just the items (their rows are independent).
    nchunks = items
    if dweight is not None:  # resolved at compile time, as every `is None` below
        nchunks = partials_chunks(dweight_part.shape[0], items)
        if must_allocate_partials(dweight_part.shape[0], nchunks, item):
            dweight_part = np.empty((nchunks, H))
            dbias_part = np.empty((nchunks, H))
    first, stop = item_share(nchunks, items, item)
    for c in range(first, stop):
        # chunk c owns rows [row0, row1) and writes only row c of the partials
        row0 = c * N // nchunks
        row1 = (c + 1) * N // nchunks
        i = row0
        if dweight is not None:  # resolved at compile time, as every `is None` below
            for j in range(H):
                dweight_part[c, j] = 0.0
                dbias_part[c, j] = 0.0
            if H >= BLOCK_FROM_H:  # wide rows: four at a time (see _backward_4_rows)
                while i + BLOCK_ROWS <= row1:
                    _backward_4_rows(dx, dweight_part[c], dbias_part[c], dy, x, mean, rstd, weight, has_weight, a, b, i)
                    i += BLOCK_ROWS
        # One row at a time, written out here rather than in a helper: a call per row costs reference counting
        # of its array arguments, which dominated for short rows (GroupNorm runs this on rows of H = 2). As in
        # the forward, pass 2 of row p (dx, from L1) runs in the loop of pass 1 of row k = p + 1 (from memory),
        # and the first row's pass 1 runs in that same loop too, with a stand-in pass 2 that the next
        # iteration redoes: 0.88-1.00 of the unfused kernel's time at 8192x1024 to 32768x256 (7 December).
        p = i
        m_hi = m_lo = r_x = mg = mgx = x.dtype.type(0.0)
        mean_g = mean_gxhat = np.float64(0.0)
        for k in range(i, row1):
            m = mean[k]
            r = rstd[k]
            sum_g = np.float64(0.0)
            sum_gxhat = np.float64(0.0)
            for j in range(H):
                # pass 2 of row p: dx = rstd * (g - a*mean(g) - b*xhat*mean(g*xhat)) in x's dtype, as _dx_row
                xp = ((x[p, j] - m_hi) - m_lo) * r_x
                gp = dy[p, j]
                if has_weight:
                    gp = gp * weight[j]
                dx[p, j] = r_x * (gp - mg - xp * mgx)
                # pass 1 of row k: the row sums Σ g and Σ g * xhat, and this row's share of dweight and dbias
                xhat = (np.float64(x[k, j]) - m) * r
                g = np.float64(dy[k, j])
                if dweight is not None:
                    dbias_part[c, j] += g
                    dweight_part[c, j] += g * xhat
                if has_weight:
                    g = g * weight[j]
                sum_g += g
                sum_gxhat += g * xhat
            mean_g = a * (sum_g / H)
            mean_gxhat = b * (sum_gxhat / H)
            m_hi, m_lo = _split_mean(m, x)
            r_x = x.dtype.type(r)
            mg = x.dtype.type(mean_g)
            mgx = x.dtype.type(mean_gxhat)
            p = k
        if i < row1:  # pass 2 of the chunk's last row (one call per chunk: its reference counting is cheap)
            _dx_row(dx, dy, x, weight, has_weight, p, mean[p], rstd[p], mean_g, mean_gxhat)
    if ends_run(items, item) and dweight is not None:
        # the partials added up in item order (the same for any thread count), rounded once to x.dtype
        add_up_chunks(dweight, dweight_part)
        add_up_chunks(dbias, dbias_part)


def layer_norm_forward(y, mean, rstd, x, weight, bias, eps):
    """y = weight * (x - mean) * rstd + bias, row by row; fills ``y`` (N, H), ``mean`` and ``rstd`` (N,) float64.

    ``x`` is (N, H) C-contiguous float32/float64; ``weight`` and ``bias`` are (H,) of x.dtype or None;
    ``eps`` ≥ 0 is added to the variance inside the square root.
    """
    H = x.shape[1]
    # an absent weight goes in as ones, an absent bias as zeros, and the flags skip them (see _jit.py)
    w = weight if weight is not None else shared_ones(H, x.dtype)  # (H,)
    b = bias if bias is not None else shared_zeros(H, x.dtype)  # (H,)
    _layer_norm_forward.launch(x.size, 0, y, mean, rstd, x, w, b, weight is not None, bias is not None, float(eps))
    if any_out_of_range(rstd, x.itemsize, H):  # rare ("Range")
        _redo_forward_rows(y, mean, rstd, x, weight, bias)


def layer_norm_backward(dx, dweight, dbias, dy, x, mean, rstd, weight, detach_mean=False, detach_var=False):
    """Fill ``dx`` (N, H) and, unless they are None, ``dweight`` and ``dbias`` (H,), all of x.dtype.

    ``mean`` and ``rstd`` are the float64 statistics saved by :func:`layer_norm_forward`; ``weight`` is the
    (H,) gain or None. ``detach_mean``/``detach_var`` drop the gradient through the mean / the std.
    """
    # One specialisation for "no parameter gradients" and one for "both": if only one of dweight and dbias
    # is wanted, the other is computed too (one extra add per element) and thrown away.
    if (dweight is None) != (dbias is None):
        if dweight is None:
            dweight = np.empty_like(dbias)
        else:
            dbias = np.empty_like(dweight)
    N, H = x.shape
    w = weight if weight is not None else shared_ones(H, x.dtype)  # (H,) and a flag, as in the forward
    has_weight = weight is not None
    detach_mean, detach_var = bool(detach_mean), bool(detach_var)
    nchunks = num_chunks(N, H)  # a function of the shape: the sums over chunks are the same on any thread count
    if not _layer_norm_backward.runs_parallel(x.size):
        # a serial run: all chunks in one call, which allocates the partial sums itself
        items, dw_part, db_part = nchunks, NO_PARTIALS, NO_PARTIALS
    else:
        # a share of the chunks per item (_jit.chunk_items); the partial sums must outlive the run's calls,
        # so they come from here
        items = chunk_items(nchunks, x.size)
        if dweight is not None:
            dw_part, db_part = np.empty((nchunks, H)), np.empty((nchunks, H))
        else:
            dw_part = db_part = NO_PARTIALS
    _layer_norm_backward.launch(
        x.size, items, dx, dweight, dbias, dy, x, mean, rstd, w, has_weight, detach_mean, detach_var, dw_part, db_part
    )
    if any_out_of_range(rstd, x.itemsize, H):  # rare ("Range")
        _redo_backward_rows(dx, dy, x, mean, rstd, weight, detach_mean, detach_var)


# --- rows out of range ("Range" in the module docstring), redone in float64 with NumPy --------------------


def _out_of_range_rows(x, rstd):
    """Indices of the rows whose rstd is outside [1/limit, limit] or NaN (the test of any_out_of_range)."""
    limit = _range_limit(x.itemsize, x.shape[1])
    return np.flatnonzero(~((1.0 / limit <= rstd) & (rstd <= limit)))


def _redo_forward_rows(y, mean, rstd, x, weight, bias):
    """y = weight * xhat + bias on the rows out of range, in float64, rounded once to y's dtype."""
    rows = _out_of_range_rows(x, rstd)
    with np.errstate(all="ignore"):  # as the kernel: inf and NaN where float64 gives them, no warnings
        out = (x[rows].astype(np.float64) - mean[rows, None]) * rstd[rows, None]  # (rows, H) xhat
        if weight is not None:
            out = out * weight
        if bias is not None:
            out = out + bias
        y[rows] = out


def _redo_backward_rows(dx, dy, x, mean, rstd, weight, detach_mean, detach_var):
    """Pass 2's dx = rstd * (g - a*mean(g) - b*xhat*mean(g*xhat)) on the rows out of range, in float64."""
    rows = _out_of_range_rows(x, rstd)
    with np.errstate(all="ignore"):
        r = rstd[rows, None]  # (rows, 1)
        xhat = (x[rows].astype(np.float64) - mean[rows, None]) * r  # (rows, H)
        g = dy[rows].astype(np.float64) * (1.0 if weight is None else weight)
        mean_g = 0.0 if detach_mean else g.mean(axis=1, keepdims=True)
        mean_gxhat = 0.0 if detach_var else (g * xhat).mean(axis=1, keepdims=True)
        dx[rows] = r * (g - mean_g - xhat * mean_gxhat)


# --- AdaNorm -------------------------------------------------------------------------------------------


@chunked_kernel(fastmath=FASTMATH_REASSOC)
def _ada_norm_forward(z, mean, rstd, x, C, k, eps, items, item):
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, H = x.shape
    first, stop = item_share(N, items, item)
    one_pass = not is_float64(x)  # a compile-time constant: float32 rows take "One pass for float32 rows"
    for i in range(first, stop):  # this call's rows
        m, r = _row_mean_rstd(x[i], eps, one_pass)
        mean[i] = m
        rstd[i] = r
        for j in range(H):
            y = (np.float64(x[i, j]) - m) * r
            z[i, j] = C * (1.0 - k * y) * y  # z = phi * y with phi = C (1 - k y)


@chunked_kernel(fastmath=FASTMATH_REASSOC)
def _ada_norm_backward(dx, dz, x, mean, rstd, C, k, items, item):
    if item == ON_THREADS:  # a parallel run: this call hands the items to numba's threads (see _jit.py)
        return run_on_threads(items)
    N, H = x.shape
    first, stop = item_share(N, items, item)
    for i in range(first, stop):  # this call's rows
        m = mean[i]
        r = rstd[i]
        # pass 1: Σ g and Σ g * y with g = dz * phi, phi = C (1 - k y) held constant
        sum_g = np.float64(0.0)
        sum_gy = np.float64(0.0)
        for j in range(H):
            y = (np.float64(x[i, j]) - m) * r
            g = np.float64(dz[i, j]) * (C * (1.0 - k * y))
            sum_g += g
            sum_gy += g * y
        mean_g = sum_g / H
        mean_gy = sum_gy / H
        # pass 2: dx = rstd * (g - mean(g) - y * mean(g * y))
        for j in range(H):
            y = (np.float64(x[i, j]) - m) * r
            g = np.float64(dz[i, j]) * (C * (1.0 - k * y))
            dx[i, j] = r * (g - mean_g - y * mean_gy)


def ada_norm_forward(z, mean, rstd, x, C, k, eps):
    """z = C * (1 - k*y) * y with y = (x - mean) * rstd; fills ``z`` (N, H), ``mean`` and ``rstd`` (N,) float64."""
    _ada_norm_forward.launch(x.size, 0, z, mean, rstd, x, float(C), float(k), float(eps))


def ada_norm_backward(dx, dz, x, mean, rstd, C, k):
    """Fill ``dx`` (N, H) of x.dtype; the gradient through phi = C (1 - k*y) is detached (Xu et al. 2019)."""
    _ada_norm_backward.launch(x.size, 0, dx, dz, x, mean, rstd, float(C), float(k))
