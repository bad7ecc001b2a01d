"""How every npnorm kernel is compiled and entered.

Four rules live here so that no kernel file has to repeat them:

* **Compilation.** ``kernel(parallel)`` is ``numba.njit`` with our fixed options: ``nogil=True`` (a running
  kernel lets other Python threads go on), ``error_model="numpy"`` (``1.0 / 0.0`` gives ``inf`` as in NumPy,
  instead of raising ``ZeroDivisionError``; this also lets LLVM vectorise divisions) and no ``fastmath``
  by default (``fastmath=True`` implies "no NaNs", which turns ``isnan`` into ``False`` and NaN propagation
  into undefined behaviour). A kernel may ask for ``FASTMATH_REASSOC``, which only lets LLVM reorder sums.
  Compilation is lazy: nothing compiles until a kernel is first called, and this module itself is imported
  only when a norm first needs a kernel, so ``import npnorm`` never imports numba.
  ``NUMBA_DISABLE_JIT=1`` runs every kernel as plain Python (``numba.prange`` is then ``range``).
  Each compile (or load from the cache) runs with Python's garbage collector paused
  (:func:`_compile_with_collector_paused`): numba's garbage made it a tenth of the compile time. Kernels
  compile through :class:`_KernelCompiler`, numba's pipeline plus one pass: a branch on ``is_float64(x)``,
  x a kernel argument, is settled before typing, so numba types only the code of the specialisation's dtype.

* **One body, serial or parallel.** Each kernel body is compiled once (``ChunkedKernel``), over work items.
  Small inputs run it in one call; large ones hand its items to numba's threads through ``_run_items``, the
  one ``prange`` function of npnorm, which every body reaches through a pointer slot (filled on the first
  parallel run). Compiling a ``prange`` twin of every kernel instead had cost half of a cold warm-up.

* **On-disk cache.** Numba caches compiled code under ``NUMBA_CACHE_DIR`` when that is set, else in
  ``__pycache__`` next to the source file, else (read-only installs) in its per-user cache directory. We
  turn the cache on only if one of these directories is writable (we try to create a temporary file
  there); otherwise kernels compile in every process, after a single warning, never an error. A cached
  kernel is stale once its own file *or this one* changes (numba alone would only look at its own file,
  and keep running helpers compiled from an older version of this one). A load from the cache prepares only
  numba's runtime, not the registries numba needs to compile (:func:`_prepare_to_run_cached_code`): that
  was most of a fresh process's first kernel call.

* **Entry.** Numba's fallback "workqueue" threading layer aborts the whole process when two Python threads
  enter parallel kernels at the same time. ``call_parallel`` therefore holds a module-level lock around every
  parallel run, until the first call has shown that a thread-safe layer ("tbb" or "omp") is running;
  numba can only tell which layer it picked after its thread pool has started. Serial kernels need no lock.
  GNU OpenMP does not survive ``fork()``: a child forked after the parent started numba's OpenMP thread
  pool (npnorm starts it on its first kernel or thread query) is killed when it enters a parallel region,
  so in such a child every kernel runs serially (``_threads.forked_from_unsafe_pool``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import inspect
import operator
import os
import tempfile
import threading
import types
import warnings

import llvmlite.binding as llvm_binding
import numba
import numba.core.compiler
import numpy as np
from llvmlite import ir
from numba import prange
from numba.core import cgutils
from numba.core import ir as numba_ir
from numba.core import types as nbtypes
from numba.core.compiler import DefaultPassBuilder
from numba.core.compiler_machinery import FunctionPass, register_pass
from numba.core.ir_utils import build_definitions, get_definition, guard, mk_unique_var
from numba.core.untyped_passes import InlineInlinables
from numba.extending import intrinsic

from .. import _collector, _threads
from .._threads import get_num_threads, set_num_threads  # the public ones (npnorm.set_num_threads), here too

__all__ = [
    "FASTMATH_REASSOC",
    "num_chunks",
    "row_items",
    "chunk_items",
    "partials_chunks",
    "must_allocate_partials",
    "NO_PARTIALS",
    "item_share",
    "ends_run",
    "ON_THREADS",
    "run_on_threads",
    "chunked_kernel",
    "ChunkedKernel",
    "SERIAL_BELOW",
    "add_up_chunks",
    "call_parallel",
    "get_num_threads",
    "install_launcher",
    "kernel",
    "set_num_threads",
    "shared_empty",
    "shared_ones",
    "shared_zeros",
]

# Below this many elements (N * H) a kernel runs serially. Starting a parallel region costs several
# microseconds (waking the pool, splitting the range, joining), more than the whole job on a small input.
# Measured, LayerNorm forward+backward, float32, 2 cores, "omp" layer, H in {64, 256, 1024}, best of 300:
#     N*H =  4k: serial 10-11 us, parallel 15-17 us      N*H = 32k: serial 33-43 us, parallel 33-35 us
#     N*H = 16k: serial 20-27 us, parallel 22-27 us      N*H = 64k: serial 59-76 us, parallel 49-56 us
# so the two cross between 16k and 32k. (Under the "workqueue" layer a launch costs ~100 us instead.)
SERIAL_BELOW = 32_768

# Fine-grained fastmath: "reassoc" lets LLVM reorder a sum so that it vectorises; a strict left-to-right
# float64 sum cannot use SIMD lanes. Measured (float32, 2 cores, best of 30): a float64 row sum over
# 8192x1024 takes 2.9 ms strict and 0.47 ms with reassoc; LayerNorm forward+backward goes from 15 ms to
# 7 ms (8192x1024) and from 15 ms to 5 ms (32768x256). Sums then differ from the strict ones by float64
# rounding only. We leave out "contract" (fused multiply-add): it may fuse a product in one loop but not in
# its twin, so that e.g. g - mean(g) is no longer exactly 0 for H = 1, and it gained under 10% (within the
# noise of the measurement). Never "nnan"/"ninf" (they make NaN handling undefined), never fastmath=True.
FASTMATH_REASSOC = frozenset({"reassoc"})

_THREAD_SAFE_LAYERS = ("tbb", "omp")


# Cross-row sums (dweight, dbias, batch statistics) go through per-chunk partial buffers of shape
# (nchunks, H) float64, each chunk a block of rows that one call of the kernel body sums. The count is a
# function of the shape alone, so any thread count gives bit-identical sums. At most 16 chunks (the cores of
# a workstation), at least 4 rows and 16384 elements per chunk, and at most 32768 / H chunks so that each
# partial buffer stays within 256 KiB: filling and reducing the partials is work on top of the kernel's.
# Measured for the LayerNorm backward at 1024x4096 (float32, 2 cores): 3.8 ms with 64 chunks (4 MiB of
# partials), 2.0 ms with 8; at 8192x1024, 3.0 ms with 64 and 2.8 ms with 16. The 16384 elements (added on
# 6 December): small inputs had 16 chunks of a few rows each, and zeroing and adding up 16 partial rows per
# output row cost more than the rows themselves. Parallel backward, float32, 2 cores, before → after:
# LayerNorm 64x1024 45 → 30 µs, 128x1024 63 → 57, 128x512 38 → 31, 128x256 21.4 → 17.4, 256x256 34 → 30;
# RMSNorm 64x1024 33 → 26; BatchNorm 64x1024 56 → 42 (2048x1024 and up keep their 16 chunks).
_MAX_CHUNKS = 16
_MIN_ROWS_PER_CHUNK = 4
_MIN_CHUNK_ELEMENTS = 16_384
_MAX_PARTIAL_ELEMENTS = 32_768


def num_chunks(N: int, H: int, size: int | None = None) -> int:
    """Number of row blocks for the cross-row partial sums of an (N, H) kernel (a function of the shape).

    ``size`` (default N·H) is the number of elements the kernel touches. Below :data:`SERIAL_BELOW` the
    serial kernel runs, and a single block leaves nothing to add up afterwards: at 64x64 the sixteen
    blocks cost ~2.5 µs of filling and reducing partials against ~5 µs for the whole backward kernel.
    """
    size = N * H if size is None else size
    if size < SERIAL_BELOW:
        return 1
    return min(
        _MAX_CHUNKS,
        max(1, N // _MIN_ROWS_PER_CHUNK),
        max(2, size // _MIN_CHUNK_ELEMENTS),
        max(2, _MAX_PARTIAL_ELEMENTS // max(H, 1)),
    )


def _add_up_chunks(out, partials):
    """``out[j] = Σ_c partials[c, j]`` in chunk order, in float64, rounded once to out.dtype: how every kernel
    with cross-row sums ends. Each kernel allocates its (nchunks, H) float64 partials itself (np.empty, each
    chunk zeroing its own row) and adds them up here, which saves the NumPy calls that did both around a
    small kernel (~1.5 µs of a 5.7 µs LayerNorm backward at 64x64, ~16 µs of BatchNorm's statistics and
    gradient sums at 64x64).

    Row by row into ``partials[0]`` (the partials are scratch, overwritten here): the inner loop runs along a
    row, over independent columns in contiguous memory, so LLVM vectorises it without reordering any sum;
    each column still adds its chunks in the order c = 0, 1, ..., n-1. Column by column, as this was first
    written, strode through memory and did not vectorise: (16, 1024) partials took 12.1 µs against 1.7 µs
    now, (8, 4096) 10.5 against 5.5 µs, enough to make LayerNorm's parallel backward at 64x1024 slower than
    its serial run.

    Called, not inlined: pasted into a kernel compiled with "reassoc", a loop over chunks took that
    kernel's flags, and LLVM split it into interleaved partial sums (3 of 500 random cases then differed from
    the chunk-order sum in the last bit). On its own, without fastmath, the order is the written one. A call
    per kernel launch costs tens of nanoseconds.
    """
    for c in range(1, partials.shape[0]):
        for j in range(out.shape[0]):
            partials[0, j] += partials[c, j]
    for j in range(out.shape[0]):
        out[j] = partials[0, j]


# --- absent parameters ---------------------------------------------------------------------------------

# Numba compiles one specialisation per combination of argument types, and None is a type of its own: a
# kernel with an optional weight and an optional bias would compile four times per dtype. The
# public wrappers therefore pass an absent weight as ones and an absent bias as zeros, of the right length
# and dtype, so that a kernel only ever sees arrays there, plus a run-time flag (``has_weight``, a bool
# whatever its value: still one specialisation) that lets the kernel skip the multiply by 1 or the add of 0.
# Skipping them pays: multiplying by the ones instead made LayerNorm without weight and bias 20-40% slower
# (forward at 1024x4096, backward at 8192x1024, float32), RMSNorm's backward 20-30%, and GroupNorm's affine
# step with a weight alone 1.7-2.9 times slower. A flag is the same in every iteration, and LLVM hoists it
# out of the loop ("loop unswitching"), so each case gets a vectorised loop of its own: at those sizes the
# kernels run as fast as the separate specialisations did. What the flags cost: ~50 ns per call for numba to
# type each bool, and a branch per row, which shows only for rows of a few elements (5-15% for H = 2).


@functools.lru_cache(maxsize=16)
def shared_ones(n: int, dtype) -> np.ndarray:
    """An (n,) array of ones of ``dtype``, the stand-in for an absent weight γ. Shared: never write to it.

    Cached (the 16 most recent lengths and dtypes), so that a call with weight=None allocates nothing. Not
    marked read-only: numba types a read-only array differently (``readonly array(float32, 1d, C)``), so
    a read-only stand-in would compile specialisations of its own, beside those for the caller's writable
    weights. The kernels only read weight and bias.
    """
    return np.ones(n, dtype=dtype)


@functools.lru_cache(maxsize=16)
def shared_zeros(n: int, dtype) -> np.ndarray:
    """An (n,) array of zeros of ``dtype``, the stand-in for an absent bias β; cached and shared as above."""
    return np.zeros(n, dtype=dtype)


# The partial sums a kernel with cross-row sums gets when it must allocate its own (a serial run) or wants
# none: (0, 0) float64, typed as the real (nchunks, H) partials are, so both share one specialisation.
# Shared by every such kernel; never written.
NO_PARTIALS = np.empty((0, 0))


@functools.lru_cache(maxsize=16)
def shared_empty(ndim: int, dtype) -> np.ndarray:
    """An empty array with ``ndim`` dimensions of length 0, the stand-in for an output nobody wants (GroupNorm's
    g, dγ, dβ; BatchNorm's batch means in evaluation mode), passed with a flag that keeps the kernel from
    touching it. Numba types it as it types the real (C-contiguous, writable) output of that dtype and ndim,
    so both cases share one specialisation. Cached and shared as above; never indexed.
    """
    return np.empty((0,) * ndim, dtype=dtype)


# --- on-disk cache -------------------------------------------------------------------------------------

_cache_warned = False


@functools.cache
def _is_writable_dir(path: str) -> bool:
    """True if we can create ``path`` (if needed) and a temporary file inside it."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError:
        return False
    return True


def _user_cache_dir() -> str | None:
    """Numba's per-user cache directory (e.g. ~/.cache/numba), where it goes when __pycache__ is read-only."""
    try:
        from numba.misc.appdirs import AppDirs

        return AppDirs(appname="numba", appauthor=False).user_cache_dir
    except Exception:  # an internal of numba: if it moves, we just do not use that directory
        return None


def _writable_cache_dir(py_func) -> str | None:
    """The directory numba will write ``py_func``'s cache to, or None if none of its choices is writable."""
    if numba.config.CACHE_DIR:  # NUMBA_CACHE_DIR, the user's explicit choice: that one or none
        return numba.config.CACHE_DIR if _is_writable_dir(numba.config.CACHE_DIR) else None
    in_tree = os.path.join(os.path.dirname(os.path.abspath(inspect.getfile(py_func))), "__pycache__")
    for path in (in_tree, _user_cache_dir()):
        if path is not None and _is_writable_dir(path):
            return path
    return None


def kernel_cache_dir() -> str | None:
    """The directory numba writes the kernels' cache to, or None if it cannot write one (no cache then)."""
    return _writable_cache_dir(kernel_cache_dir)  # any plain function of this folder's (not a functools wrapper)


def _warn_no_cache(where: str) -> None:
    global _cache_warned
    if not _cache_warned:
        _cache_warned = True
        warnings.warn(
            f"npnorm: cannot write the Numba cache ({where}); kernels will be compiled in every process. "
            "Set NUMBA_CACHE_DIR to a writable directory to keep compiled kernels.",
            RuntimeWarning,
            stacklevel=4,
        )


def _source_hash(path: str) -> str | None:
    """SHA-256 of a source file's bytes, recomputed only when its size or modification time changes; None
    if the file cannot be read (e.g. inside a zip), which then stamps nothing beyond numba's own stamp."""
    try:
        st = os.stat(path)
        return _hash_file(path, st.st_mtime_ns, st.st_size)
    except OSError:
        return None


@functools.cache
def _hash_file(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _stamped(locator_class):
    """A subclass of one of numba's cache locators whose source stamp also covers this file."""

    class Stamped(locator_class):
        def get_source_stamp(self):
            return (super().get_source_stamp(), _source_hash(__file__))

    Stamped.__name__ = Stamped.__qualname__ = f"Stamped{locator_class.__name__}"
    return Stamped


def _prepare_to_run_cached_code(target_context) -> None:
    """What code loaded from the cache needs of numba before it runs, and nothing more.

    Numba refreshes its target context before each load from the cache: it installs every typing and
    lowering registry, which imports most of ``numba.np``, ``numba.typed`` and the rest, and
    ``numba.np.arraymath``'s BLAS check imports ``scipy.linalg``. That is 0.45-0.5 s of a fresh process's
    first kernel call (measured on a 2-vCPU EPYC, 0.25-0.3 s on a faster host), and loaded code uses none of
    it: the registries tell numba how to *compile*. Loaded code needs numba's runtime (NRT: the memory
    system's functions, whose symbols and atomic operations ``rtsys.initialize`` publishes to LLVM; without
    them a kernel crashes on its first allocation) and the symbols that modules publish when imported, which
    among the registries only ``numba.cpython.hashing`` does (Python's hash secrets). Threads for parallel
    code are started by the loaded code's own initialisers, as before. Anything numba compiles later still
    refreshes first (its compiler does so itself), so nothing is lost, only deferred to a process that
    compiles. Should either module have moved in a later numba, the load refreshes as numba's own does.
    """
    try:
        import numba.cpython.hashing  # noqa: F401  (publishes _numba_hashsecret_* to LLVM)
        from numba.core.runtime import rtsys
    except ImportError:
        target_context.refresh()
        return
    rtsys.initialize(target_context)


def _load_overload_without_refresh(self, sig, target_context):
    """``numba.core.caching.Cache.load_overload``, with :func:`_prepare_to_run_cached_code` for its refresh."""
    _prepare_to_run_cached_code(target_context)
    with self._guard_against_spurious_io_errors():
        return self._load_overload(sig, target_context)
    return None  # reached when the guard swallowed an I/O error: numba then compiles, as after a miss


@functools.cache
def _stamped_cache_class():
    """numba's FunctionCache with every locator :func:`_stamped`, loading without a refresh of numba's
    registries where numba's cache has the methods that needs; None if numba's internals have moved."""
    try:
        from numba.core.caching import CompileResultCacheImpl, FunctionCache

        class StampedCacheImpl(CompileResultCacheImpl):
            _locator_classes = [_stamped(c) for c in CompileResultCacheImpl._locator_classes]

        class StampedFunctionCache(FunctionCache):
            _impl_class = StampedCacheImpl

    except (ImportError, AttributeError, TypeError):
        return None
    if all(hasattr(FunctionCache, name) for name in ("_guard_against_spurious_io_errors", "_load_overload")):
        StampedFunctionCache.load_overload = _load_overload_without_refresh
    return StampedFunctionCache


def _enable_stamped_cache(dispatcher) -> None:
    """Turn on ``dispatcher``'s on-disk cache, stale whenever this file changes, not only its own file.

    Numba keys a cached kernel to a hash of the kernel's own source file, and loads it as long as that file
    is unchanged: it does not know that the kernel calls (and compiles in) helpers from this file, such as
    :func:`add_up_chunks`. After a change here alone (an edit in a checkout, or an upgrade whose cache
    outlives it: ``NUMBA_CACHE_DIR``, the per-user cache, a ``__pycache__`` that pip leaves behind) every
    kernel would go on running the old helper. The dispatcher therefore gets, in place of the cache that
    ``njit(cache=True)`` would give it, one whose locators (numba's own, in numba's order) stamp a kernel
    with the hashes of both files. Where numba's cache internals are not as expected, it gets numba's cache
    (and that limitation). Raises RuntimeError, as numba does, when no locator can serve the function.
    """
    cache_class = _stamped_cache_class()
    if cache_class is None or not hasattr(dispatcher, "_cache"):
        dispatcher.enable_caching()
    else:
        dispatcher._cache = cache_class(dispatcher.py_func)


# --- compilation ---------------------------------------------------------------------------------------


def _variant(py_func, parallel: bool):
    """A copy of ``py_func`` whose qualified name says whether it is the parallel or the serial variant.

    Numba's cache files are named after the function's qualified name, and its cache key holds the
    signature and a hash of the bytecode but not the ``parallel`` flag. Two dispatchers compiled from one
    Python function would overwrite (and then load!) each other's cached code. A distinct qualname gives
    each variant its own cache file.
    """
    copy = types.FunctionType(
        py_func.__code__, py_func.__globals__, py_func.__name__, py_func.__defaults__, py_func.__closure__
    )
    copy.__qualname__ = f"{py_func.__qualname__}__{'parallel' if parallel else 'serial'}"
    copy.__doc__ = py_func.__doc__
    return copy


def _is_float64(a):
    return a.dtype == np.float64


def _is_float64_type(numba_type) -> bool:
    """:func:`_is_float64` of a value of this numba type, decided from the type alone."""
    return isinstance(numba_type, nbtypes.Array) and numba_type.dtype == nbtypes.float64


@intrinsic
def _is_float64_constant(typingctx, a):
    """:func:`_is_float64` as a constant of each compiled specialisation, so that ``if is_float64(x):`` costs
    nothing at run time: LLVM removes the branch not taken, also inside a loop. On a kernel's own argument
    numba does not even type that branch (:class:`_FoldDtypeTests`)."""
    flag = _is_float64_type(a)

    def codegen(context, builder, signature, llargs):
        return context.get_constant(nbtypes.boolean, flag)

    return nbtypes.boolean(a), codegen


is_float64 = _is_float64 if numba.config.DISABLE_JIT else _is_float64_constant


@register_pass(mutates_CFG=True, analysis_only=False)
class _FoldDtypeTests(FunctionPass):
    """A branch on ``is_float64(x)``, x an argument of the kernel being compiled (or on ``not`` of it, through
    any variables), gets the constant that test is for this specialisation as its condition; numba's next pass,
    dead-branch pruning, then drops the branch not taken before numba types it.

    Kernels whose float32 and float64 rows take different algorithms (LayerNorm's and AdaNorm's forward,
    BatchNorm's statistics: "One pass for float32 rows" in layer_norm.py) had numba type and lower both, and
    LLVM throw one away. The machine code is the same either way for LayerNorm's and AdaNorm's forward and
    BatchNorm's float64 statistics (compared); in its float32 statistics LLVM inlines ``_combine_chunks``
    differently, with the same bits (48 cases compared, NaN and constant channels, one and two threads).
    Measured 7 December (Zen 4), each specialisation compiled cold five or six times in one process,
    alternated with numba's own pipeline, medians: BatchNorm's statistics 1.05 -> 0.80 s (float32) and 1.15 ->
    1.06 s (float64), LayerNorm's forward 0.45 -> 0.41 s and 0.45 -> 0.43 s, AdaNorm's 0.32 -> 0.27 s and 0.34 ->
    0.31 s; as the first of BatchNorm's kernels that a fresh process compiles, its statistics took 0.1-0.2 s
    less (float32) and the same (float64), three runs alternated. About 0.3 s of a cold warm-up's 17-18 s in
    one process, then.

    Only the branches' conditions change: a variable that holds the test keeps its value from the intrinsic, a
    plain bool to numba's typing. (A first version made the variable itself a constant; numba then passed it
    to a called kernel as a literal, which compiled that kernel once per value.) Only the kernel's own
    arguments fold: their types are the call's signature (``state.args``). A helper that numba inlines takes
    the choice as an argument instead (``one_pass`` of layer_norm.py's ``_row_mean_rstd``), which leads back to
    its caller's test. The pass runs after numba has inlined the kernel's ``inline=True`` helpers, so that
    their branches on such an argument go too.
    """

    _name = "npnorm_fold_dtype_tests"

    def __init__(self):  # numba's passes declare __init__ abstract
        FunctionPass.__init__(self)

    def run_pass(self, state):
        func_ir = state.func_ir
        folded = False
        for block in func_ir.blocks.values():
            branch = block.terminator
            if not isinstance(branch, numba_ir.Branch):
                continue
            # numba branches on `$pred = bool(condition)`, which dead-branch pruning reads the same way
            assign = block.find_variable_assignment(branch.cond.name)
            if assign is None:
                continue
            pred = assign.value
            if not (isinstance(pred, numba_ir.Expr) and pred.op == "call" and len(pred.args) == 1):
                continue
            func = guard(get_definition, func_ir, pred.func)
            if not (isinstance(func, numba_ir.Global) and func.value is bool):
                continue
            value = self._value(func_ir, state.args, pred.args[0])
            if value is not None:
                loc = branch.loc
                constant = numba_ir.Var(block.scope, mk_unique_var("$npnorm_dtype_test"), loc)
                block.body.insert(block.body.index(assign), numba_ir.Assign(numba_ir.Const(value, loc), constant, loc))
                pred.args = [constant]  # bool(<the constant>): what dead-branch pruning reads
                folded = True
        if folded:
            func_ir._definitions = build_definitions(func_ir.blocks)
        return folded

    @classmethod
    def _value(cls, func_ir, arg_types, var) -> bool | None:
        """What ``var`` holds if it is ``is_float64(<argument>)`` or ``not`` of such a value, else None."""
        expr = guard(get_definition, func_ir, var)
        if not isinstance(expr, numba_ir.Expr):
            return None
        if expr.op == "call" and len(expr.args) == 1 and not expr.kws and not expr.vararg:
            func = guard(get_definition, func_ir, expr.func)
            if isinstance(func, (numba_ir.Global, numba_ir.FreeVar)) and func.value is is_float64:
                arg = guard(get_definition, func_ir, expr.args[0])
                if isinstance(arg, numba_ir.Arg):
                    return _is_float64_type(arg_types[arg.index])  # as _is_float64_constant decides
        elif expr.op == "unary" and expr.fn == operator.not_:
            operand = cls._value(func_ir, arg_types, expr.value)
            return None if operand is None else not operand
        return None


class _KernelCompiler(numba.core.compiler.Compiler):
    """numba's compiler with :class:`_FoldDtypeTests` after its inlining of ``inline=True`` helpers (numba's
    dead-branch pruning comes right after it). A numba whose pipeline has no such pass gets its own pipeline:
    the same machine code, only a slower compile."""

    def define_pipelines(self):
        pipeline = DefaultPassBuilder.define_nopython_pipeline(self.state)
        try:
            pipeline.add_pass_after(_FoldDtypeTests, InlineInlinables)
        except ValueError:  # "Could not find pass"
            return super().define_pipelines()
        pipeline.finalize()
        return [pipeline]


class _NoAliasCompiler(_KernelCompiler):
    """:class:`_KernelCompiler`, telling LLVM that no two array arguments of the kernel overlap (``noalias``).

    Only for kernels whose callers never pass an output that overlaps an input (arrays that are only read
    may be the same). numba does this itself for the loop body of a ``prange`` kernel when it finds no
    aliasing there, which an item body, an ordinary function, does not get. Without it LLVM checks at run
    time, before each vectorised inner loop, that the output does not overlap the inputs: on BatchNorm and
    GroupNorm's elementwise passes over (N, C, L) with L = 16 that made them 1.2-1.4 times slower
    (measured 6 December, interleaved in one process). It did not help, or hurt, the kernels with partial
    sums (GroupNorm's affine backward 1.15-1.23 times slower at 2048x1024 and 512x256x16), so they go without.
    """

    def define_pipelines(self):
        self.state.flags.noalias = True
        return super().define_pipelines()


class _HelperDispatcher(numba.core.registry.CPUDispatcher):
    """The dispatcher of a ``helper=True`` kernel: other kernels call it, and a call from Python raises.

    Such a kernel has no Python entry point (numba's ``no_cpython_wrapper``), and numba's own dispatcher,
    called from Python anyway, compiled the kernel and then jumped to the missing entry point: a segmentation
    fault. Kernels that call it type and link it through the dispatcher as before; only Python's call
    changes.
    """

    helper_name = ""  # the kernel's module and name, set by kernel()

    def __call__(self, *args, **kwargs):
        raise TypeError(
            f"{self.helper_name} is a helper kernel that only other kernels call: it has no Python entry point"
        )


def kernel(parallel: bool, fastmath=False, inline: bool = False, noalias: bool = False, helper: bool = False):
    """Decorator: compile a kernel with npnorm's options (lazily, on first call).

    ``parallel=True`` turns ``numba.prange`` loops into threaded loops; enter such a kernel through
    :func:`call_parallel`. ``fastmath`` is ``False`` or a set of fine-grained LLVM flags such as
    :data:`FASTMATH_REASSOC`. ``inline=True`` has numba paste the helper's body into its caller. For helpers
    called once per row: a real call reference-counts every array argument, which measured 32 µs against
    12 µs for the LayerNorm forward on 2048 rows of H = 2 (GroupNorm's rows). For a helper with a single
    call site (the backward's row blocks): a called helper is compiled twice, once on its own and again
    inside its caller, whose module links it in. ``noalias=True`` promises that
    no output argument overlaps another argument (see :class:`_NoAliasCompiler`). ``helper=True`` is for
    functions that only other kernels call: numba then builds no Python entry point for them (which cost
    about 0.03 s of compilation per specialisation), and calling one from Python raises TypeError
    (:class:`_HelperDispatcher`).
    """

    def decorate(py_func):
        if numba.config.DISABLE_JIT:
            return _quiet_as_compiled(py_func)  # plain Python; prange is range
        func = _variant(py_func, parallel)
        # numba accepts a bool, dict or set (not a frozenset) for fastmath
        flags = set(fastmath) if fastmath else False
        # no_cfunc_wrapper: numba would also compile a C-callable wrapper of every function, which nothing here
        # calls (Python enters through the CPython wrapper, kernels call each other directly); about 5% of a
        # cold warm-up (16.7 s against 17.7 s of compilation, one process).
        options = dict(parallel=parallel, fastmath=flags, nogil=True, error_model="numpy", no_cfunc_wrapper=True)
        if inline:
            options["inline"] = "always"
        options["pipeline_class"] = _NoAliasCompiler if noalias else _KernelCompiler
        if helper:
            options["no_cpython_wrapper"] = True
        dispatcher = numba.njit(cache=False, **options)(func)
        if helper:
            dispatcher.__class__ = _HelperDispatcher  # same layout: a subclass that only adds __call__
            dispatcher.helper_name = f"{py_func.__module__}.{py_func.__qualname__}"
        if _writable_cache_dir(py_func) is not None:
            try:
                _enable_stamped_cache(dispatcher)  # one cache, built once (njit(cache=True) would build another)
            except RuntimeError:  # numba found no cache locator after all (e.g. source inside a zip)
                _warn_no_cache(f"no cache location for {inspect.getfile(py_func)}")
        else:
            _warn_no_cache("no writable cache directory")
        _compile_with_collector_paused(dispatcher)
        return dispatcher

    return decorate


def _quiet_as_compiled(py_func):
    """``py_func`` as plain Python (``NUMBA_DISABLE_JIT=1``) that, like the compiled kernel, warns about nothing.

    Compiled with ``error_model="numpy"``, a kernel's 0/0 is NaN and its overflow inf without a word; run as
    Python, the same operations on NumPy scalars emit RuntimeWarnings (e.g. the mean of a row of no values,
    which GroupNorm gives for (N, C, 0) inputs), and a caller that turns warnings into errors would fail only
    without the JIT. Results are unchanged.
    """

    @functools.wraps(py_func)
    def quiet(*args, **kwargs):
        with np.errstate(all="ignore"):
            return py_func(*args, **kwargs)

    return quiet


def _compile_with_collector_paused(dispatcher) -> None:
    """Have ``dispatcher`` compile (or load from the cache) with Python's garbage collector paused.

    Numba's ``Dispatcher.compile`` is where a call with new argument types ends up, and where a kernel that
    calls this one compiles it; the wrapper changes nothing else (calls of compiled code never reach it).
    Why (npnorm/_collector.py): measured, BatchNorm and RMSNorm compiled cold on their first calls, in one
    process, 8.2-8.4 s against 8.8-9.1 s (three runs alternated); the first LayerNorm forward+backward
    loading from a warm cache, 0.04 s of collections against 0.06-0.07 s (87 collections against 221).
    """
    compile_now = dispatcher.compile

    @functools.wraps(compile_now)
    def compile(sig):
        with _collector.paused():
            return compile_now(sig)

    dispatcher.compile = compile


# Compiled here, after `kernel`; without fastmath and not inlined (see _add_up_chunks).
add_up_chunks = kernel(parallel=False, helper=True)(_add_up_chunks)


# --- one compiled body, run serially or on numba's threads ---------------------------------------------


def _ends_run(items, item):
    """Whether this call of a chunked body ends the run (adds up the partial sums), see ChunkedKernel."""
    return item < 0 or item == items


def _item_share(total, items, item):
    """This call's share of ``total`` units of work (rows, chunks, (sample, channel) pairs) split evenly over
    ``items`` items: (first, stop); all of them for item -1, none for the closing call (see ChunkedKernel)."""
    if item < 0:
        return 0, total
    if item >= items:  # the closing call: no units
        return 0, 0
    return item * total // items, (item + 1) * total // items


@intrinsic
def _item_share_instructions(typingctx, total, items, item):
    """:func:`_item_share` written as a few LLVM instructions at each call site (see ``item_share`` below)."""
    if not all(isinstance(t, nbtypes.Integer) for t in (total, items, item)):
        return None
    int64 = nbtypes.int64

    def codegen(context, builder, signature, llargs):
        total, items, item = (context.cast(builder, v, t, int64) for v, t in zip(llargs, signature.args))
        zero, one = total.type(0), total.type(1)
        is_item = builder.icmp_signed(">=", item, zero)
        is_closing = builder.icmp_signed(">=", item, items)
        # Divide by `items` only for an item's own share (0 <= item < items), by 1 otherwise (the result is then
        # not used). Every operand is >= 0 there, so LLVM's truncating division is Python's floor division.
        divisor = builder.select(builder.and_(is_item, builder.not_(is_closing)), items, one)
        first = builder.sdiv(builder.mul(item, total), divisor)
        stop = builder.sdiv(builder.mul(builder.add(item, one), total), divisor)
        first = builder.select(is_item, builder.select(is_closing, zero, first), zero)
        stop = builder.select(is_item, builder.select(is_closing, zero, stop), total)
        return context.make_tuple(builder, signature.return_type, (first, stop))

    return nbtypes.UniTuple(int64, 2)(total, items, item), codegen


# item_share is called in every kernel body. As a numba function inlined into each (inline="always"), numba
# typed its body and pasted its IR once per body and dtype, which was half of what numba's inlining pass
# took in a cold warm-up (0.66 s of it; 0.36 s now), and more again in type inference and lowering. Measured
# 6 December, cold `npnorm warmup` on 2 cores, five runs alternated with the inlined version: 8.63-9.21 s
# against 9.04-10.05 s, faster in all five. The kernels' machine code is the same (the same vector
# instructions and calls in every kernel, compared in the assembly). As a called numba function instead
# (not inlined) it compiled about as fast, but LLVM then kept reference counting of the array arguments
# that it otherwise removes. tests/test_kernels_layer_norm.py checks it against the Python rule, which is
# what runs without the JIT.
item_share = _item_share if numba.config.DISABLE_JIT else _item_share_instructions


def _corrected_m2(v, t, cm):
    """M2 = Σ d² − Σ d · mean(d): the corrected two-pass sum of squares about the corrected mean m + mean(d),
    from the sums of d = x − m (norms/_moments.py). Below 0 only by rounding, where the spread is within an ulp
    of the mean: then 0. NaN stays NaN (it compares False). A Σ d² that overflowed stays inf: the correction,
    t·cm, is then inf too, and inf − inf would be a NaN that the callers' overflow check (rstd = 0) misses."""
    if v == np.inf:
        return v
    m2 = v - t * cm
    return 0.0 if m2 < 0.0 else m2


corrected_m2 = kernel(parallel=False, inline=True)(_corrected_m2)  # LayerNorm's and BatchNorm's second pass


def _shifted_m2(q, s, m):
    """M2 = Σ d² − Σ d · mean(d) from one pass of sums of d = x − k, k a value of the data (float32's one-pass
    statistics, kernels/layer_norm.py and kernels/batch_norm.py); m = mean(d). Below 0 only by rounding: then 0.
    NaN stays NaN. Unlike :data:`corrected_m2` an inf Σ d² is not kept: float64 sums of float32 values cannot
    overflow, so it comes from an inf input, whose variance stays NaN (inf − inf), as in the two-pass kernels."""
    m2 = q - s * m
    return 0.0 if m2 < 0.0 else m2


shifted_m2 = kernel(parallel=False, inline=True)(_shifted_m2)


def _partials_chunks(rows, items):
    """The chunk count of a body whose chunk count is not passed in (LayerNorm's and RMSNorm's backward): a
    parallel run's partial sums carry it in their ``rows``; a serial run, given an empty stand-in, runs all
    its chunks in one call, and its ``items`` is the chunk count."""
    return rows if rows > 0 else items


def _must_allocate_partials(rows, nchunks, item):
    """Whether this call of a body with cross-row sums allocates its (nchunks, ·) partial sums itself: a serial
    run (item -1) given an empty stand-in does. A parallel run's items cannot (the partials must outlive
    their calls, so its caller brings them): an item without them raises instead of summing into nothing."""
    if rows >= nchunks:
        return False
    if item >= 0:
        raise ValueError("npnorm: a parallel run needs its partial sums from the caller")
    return True


ends_run = kernel(parallel=False, inline=True)(_ends_run)
partials_chunks = kernel(parallel=False, inline=True)(_partials_chunks)
must_allocate_partials = kernel(parallel=False, inline=True)(_must_allocate_partials)

ON_THREADS = -2  # the `item` of the call that hands a body's items to numba's threads (see ChunkedKernel)

# How the pieces of a parallel run call each other, in LLVM terms. An "item function" is compiled into each
# kernel body's own module: int32 f(i8* packed_args, int64 item) calls the body on one item, 1 if it went
# well. The launcher, compiled once for all kernels, takes (item function, packed arguments, items) as
# three int64. The bodies reach it through a pointer slot, a global variable of this process whose address
# llvmlite's symbol table holds under the name below (registered at import, before any body can load); the
# slot is filled on the first parallel run (install_launcher), so that processes that run only small
# inputs never load the launcher, and a cold `npnorm warmup` compiles it once, not once per process.
_I8_PTR = ir.IntType(8).as_pointer()
_ITEM_FUNCTION = ir.FunctionType(ir.IntType(32), [_I8_PTR, ir.IntType(64)])
_LAUNCHER_SLOT_SYMBOL = "npnorm_run_items_slot"
_LAUNCHER_ARGS = (nbtypes.int64, nbtypes.int64, nbtypes.int64)
_launcher_slot = ctypes.c_void_p(None)  # the launcher's address once installed; bodies read it
_launcher_lock = threading.Lock()


@intrinsic
def _call_item(typingctx, item_function, packed_args, item):
    """``item_function(packed_args, item)``, both given as addresses; True unless the body failed."""

    def codegen(context, builder, signature, llargs):
        function = builder.inttoptr(llargs[0], _ITEM_FUNCTION.as_pointer())
        ok = builder.call(function, [builder.inttoptr(llargs[1], _I8_PTR), llargs[2]])
        return builder.icmp_signed("!=", ok, ok.type(0))

    return nbtypes.boolean(item_function, packed_args, item), codegen


def _run_items(item_function, packed_args, items):
    """Items 0 .. items-1 of one kernel call on numba's threads; returns how many of them failed.

    The one parallel function of npnorm: every kernel body hands its items to it (see ChunkedKernel).
    """
    ok = np.empty(items, dtype=np.bool_)  # one flag per item: a prange reduction would cost ~1 µs per run
    for i in prange(items):
        ok[i] = _call_item(item_function, packed_args, i)
    failed = 0
    for i in range(items):
        if not ok[i]:
            failed += 1
    return failed


_launcher = kernel(parallel=True)(_run_items)


def _register_launcher_slot() -> None:
    """Publish the slot's address under ``_LAUNCHER_SLOT_SYMBOL``; costs nothing, compiles nothing.

    Must run before any kernel body is compiled or loaded: LLVM resolves the bodies' reference to the slot
    when it links them, and an unresolved symbol there aborts the process.
    """
    if not numba.config.DISABLE_JIT:
        llvm_binding.add_symbol(_LAUNCHER_SLOT_SYMBOL, ctypes.addressof(_launcher_slot))


def install_launcher() -> None:
    """Compile (or load from the cache) the launcher and put its address in the slot; at once if it is there.

    ``ChunkedKernel.parallel`` calls it before a parallel run; `npnorm warmup` calls it first thing, so that
    its other process finds the launcher in the cache. A body run on threads without it raises RuntimeError.
    """
    if _launcher_slot.value is not None or numba.config.DISABLE_JIT:
        return
    with _launcher_lock:
        if _launcher_slot.value is None:
            _launcher.compile(_LAUNCHER_ARGS)
            result = _launcher.overloads[_LAUNCHER_ARGS]
            _launcher_slot.value = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)


def compile_shared() -> None:
    """Compile (or load from the cache) the functions that every kernel module needs: the launcher
    (:func:`install_launcher`) and :data:`add_up_chunks` for both output dtypes, float32 then float64.

    `npnorm warmup` calls it first thing in its first process, so that its other processes, which only read
    these functions' cache entries (:func:`read_shared_from_cache_only`), find them there. Kernels that sum in
    float64 (BatchNorm's gradient sums) use add_up_chunks' float64 entry from their float32 input on, the
    others (dweight of x's dtype) the float32 one.
    """
    install_launcher()
    if numba.config.DISABLE_JIT:
        return
    for out in (nbtypes.float32, nbtypes.float64):
        add_up_chunks.compile((out[::1], nbtypes.float64[:, ::1]))


def read_shared_from_cache_only() -> None:
    """The functions of :func:`compile_shared` go on loading compiled code from the on-disk cache in this
    process, but no longer write to it.

    For `npnorm warmup`'s other processes; the first writes these functions. Numba rewrites a function's
    whole index when it saves an entry and names the data file by the first free number: two processes that
    save different entries of one function at the same moment can leave an index that gives one signature
    the other's code. A process that does not find an entry compiles its own and keeps it in memory. Without
    the JIT (no cache), nothing to do.
    """
    for dispatcher in (_launcher, add_up_chunks):
        _read_cache_only(dispatcher)


def _read_cache_only(dispatcher) -> None:
    """``dispatcher`` loads from its on-disk cache but saves nothing there (no cache without the JIT)."""
    cache = getattr(dispatcher, "_cache", None)
    if cache is not None:
        cache.save_overload = _save_nothing


def _save_nothing(sig, data) -> None:
    """The ``save_overload`` of a cache that is only read (:func:`_read_cache_only`)."""


def _packed_type(params):
    """The LLVM struct that holds a body's arguments (numba's lowered form of them) for its item calls."""
    return ir.LiteralStructType([param.type for param in params])


def _item_function(context, module, body):
    """The item function of ``body`` (see _ITEM_FUNCTION), defined once in the body's own LLVM module.

    It unpacks the arguments that :func:`run_on_threads` packed, puts its ``item`` in place of the body's
    last argument and calls the body by numba's calling convention: (return slot, exception slot, *args),
    an int32 status. A few LLVM instructions: milliseconds of compilation, where a numba-compiled launcher
    per body specialisation cost 0.35-0.5 s.
    """
    function = cgutils.get_or_insert_function(module, _ITEM_FUNCTION, f"{body.name}.item")
    if not function.is_declaration:
        return function
    function.linkage = "internal"
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    params = context.call_conv.get_arguments(body)
    packed = builder.bitcast(function.args[0], _packed_type(params).as_pointer())
    args = [builder.load(cgutils.gep_inbounds(builder, packed, 0, i)) for i in range(len(params))]
    args[-1] = function.args[1]  # the body's last argument is `item`, an int64
    return_type, exception_type = (arg.type.pointee for arg in body.args[:2])
    return_slot = cgutils.alloca_once_value(builder, cgutils.get_null_value(return_type))
    exception_slot = cgutils.alloca_once(builder, exception_type)
    code = builder.call(body, [return_slot, exception_slot, *args])
    status = context.call_conv._get_return_status(builder, code, builder.load(exception_slot))
    builder.ret(builder.zext(status.is_ok, ir.IntType(32)))
    return function


def _launcher_slot_global(module):
    """The declaration of the launcher's slot (an i8*, defined in this process) in a body's LLVM module."""
    slot = module.globals.get(_LAUNCHER_SLOT_SYMBOL)
    if slot is None:
        slot = ir.GlobalVariable(module, _I8_PTR, _LAUNCHER_SLOT_SYMBOL)
        slot.linkage = "external"
    return slot


def _launcher_thunk(context, module, slot):
    """A function of the launcher's own type, in the body's module, that calls whatever the slot points to: so
    that the call itself goes through numba's calling convention (``call_function``) like any other."""
    launcher_type = context.call_conv.get_function_type(nbtypes.int64, _LAUNCHER_ARGS)
    thunk = cgutils.get_or_insert_function(module, launcher_type, f"{_LAUNCHER_SLOT_SYMBOL}.call")
    if thunk.is_declaration:
        thunk.linkage = "internal"
        builder = ir.IRBuilder(thunk.append_basic_block("entry"))
        launcher = builder.bitcast(builder.load(slot), launcher_type.as_pointer())
        builder.ret(builder.call(launcher, thunk.args))
    return thunk


@intrinsic
def run_on_threads(typingctx, items):
    """Only as ``return run_on_threads(items)`` at the top of a kernel body, for ``item == ON_THREADS``:
    run items 0 .. items-1 of this very call on numba's threads, then its closing call (``item = items``)
    in this thread; raise RuntimeError if any of them raised. See ChunkedKernel.
    """

    def codegen(context, builder, signature, llargs):
        body = builder.function  # the kernel body this intrinsic is compiled into
        params = context.call_conv.get_arguments(body)
        if [param.name for param in params[-2:]] != ["arg.items", "arg.item"]:  # numba names them "arg.<name>"
            raise TypeError(f"run_on_threads: {body.name} must end with the parameters items, item (int)")
        packed = cgutils.alloca_once(builder, _packed_type(params))
        for i, value in enumerate(params):  # the arguments of this call, item included (it is replaced)
            builder.store(value, cgutils.gep_inbounds(builder, packed, 0, i))
        packed = builder.bitcast(packed, _I8_PTR)
        item_function = _item_function(context, builder.module, body)
        n = context.cast(builder, llargs[0], signature.args[0], nbtypes.int64)
        slot = _launcher_slot_global(builder.module)
        with builder.if_then(cgutils.is_null(builder, builder.load(slot)), likely=False):
            message = "npnorm: a parallel run before the launcher was installed (run kernels through launch())"
            context.call_conv.return_user_exc(builder, RuntimeError, (message,))
        launcher = _launcher_thunk(context, builder.module, slot)
        as_int = [builder.ptrtoint(item_function, n.type), builder.ptrtoint(packed, n.type), n]
        status, failed = context.call_conv.call_function(builder, launcher, nbtypes.int64, _LAUNCHER_ARGS, as_int)
        items_ok = builder.and_(status.is_ok, builder.icmp_signed("==", failed, failed.type(0)))
        closed = cgutils.alloca_once_value(builder, ir.IntType(32)(0))
        with builder.if_then(items_ok):  # the closing call (adding up the partials) only after good items
            builder.store(builder.call(item_function, [packed, n]), closed)
        with builder.if_then(builder.icmp_signed("==", builder.load(closed), ir.IntType(32)(0)), likely=False):
            message = "npnorm: a kernel failed in a parallel run (one of its work items raised)"
            context.call_conv.return_user_exc(builder, RuntimeError, (message,))
        return context.get_dummy_value()

    return nbtypes.none(items), codegen


# Items of a parallel run over independent rows, a function of the size only: 2 at SERIAL_BELOW elements,
# one more per 16k elements, at most 64. numba's static schedule hands each thread a contiguous run of
# items; 64 keeps the imbalance on two threads under 2% and a call per item costs tens of nanoseconds.
# (Asking numba for its thread count instead costs 0.7 µs per call from Python, and inside a kernel it
# keeps numba from caching that kernel.)
_ROW_ITEM_ELEMENTS = 16_384
_MAX_ROW_ITEMS = 64


def row_items(size: int) -> int:
    """Items of a parallel run of ``size`` elements whose rows are independent (see ``_MAX_ROW_ITEMS``)."""
    return min(_MAX_ROW_ITEMS, max(2, size // _ROW_ITEM_ELEMENTS))


def chunk_items(nchunks: int, size: int) -> int:
    """Items of a parallel run over ``nchunks`` chunks of ``size`` elements, each item a share of the chunks.

    As many as independent rows of that size would get, at most one per chunk. A call per item costs up to
    ~0.1 µs, more with more array arguments: one item per chunk (16 at 128x256-256x256) cost LayerNorm's
    backward 1-2.5 µs of 23-35 µs, and 16 items against 2 cost BatchNorm's gradient sums 1.2 µs more at
    256x256 (measured).
    """
    return min(nchunks, row_items(size))


class ChunkedKernel:
    """A kernel body compiled once and run either serially, for small inputs, or on numba's threads.

    The body is written as ``body(*args, items, item)``: ``item`` in 0 .. items-1 runs that work item, an
    even share of the body's units of work (rows; chunks of rows; (chunk, channel) pairs); ``item == items``
    runs only what ends the run (adding up the partial sums); ``item == -1`` runs all items and then that.
    :func:`item_share` and :func:`ends_run` read these for the body. A unit touches only its own rows and
    its own row of the partials, so items may run at once. Where sums cross rows, the rows go into chunks
    whose number depends only on the shape (:func:`num_chunks`), each chunk summed whole by one call, so that
    any number of items or threads gives the same bits. ``items = 0`` asks for :func:`row_items` items in a
    parallel run and one in a serial run. Every body starts with::

        if item == ON_THREADS:
            return run_on_threads(items)

    * Serial run: one call, ``body(*args, items, -1)``.
    * Parallel run: one call, ``body(*args, items, ON_THREADS)``. The body packs its own arguments and hands
      them to the launcher (:func:`_run_items`, the one ``prange`` loop of npnorm), which calls the body's
      item function once per item on numba's threads; then the body makes the closing call itself. Every
      item runs the same code either way, so both runs give the same bits.

    Why not a ``prange`` loop in each body, compiled twice (serial and parallel): numba compiles the loop
    body of a parallel kernel as a function of its own, links it into the kernel and optimises it all again,
    so a parallel specialisation cost 2-3 times its serial twin. Measured, LayerNorm forward float32, cold:
    1.36 s for the prange kernel against 0.30 s for the body. A numba-compiled launcher per kernel, which
    called the body by its address, still cost 0.35-0.5 s per specialisation (half of a cold warm-up, 14 s
    of 30 s); the item function compiled into the body costs milliseconds. Results are bit-identical to
    the prange kernels'; run times equal at large shapes, and 0.2-3 µs more per call at small and threshold
    sizes (measured in docs/performance.md, "Start-up").
    """

    def __init__(self, py_func, fastmath=False, noalias=False):
        self.py_func = py_func
        self.body = kernel(parallel=False, fastmath=fastmath, noalias=noalias)(py_func)
        functools.update_wrapper(self, py_func)

    def serial(self, items: int, *args):
        """Run the body on all items in one call, in this thread."""
        return self.body(*args, items or 1, -1)

    def parallel(self, items: int, *args):
        """Run ``items`` (> 0) items on numba's threads; enter only through :func:`call_parallel`."""
        install_launcher()  # on the first parallel run in this process
        if numba.config.DISABLE_JIT:  # plain Python: the items one after another, as the launcher orders them
            try:  # the body is then py_func, as quiet as compiled code (_quiet_as_compiled)
                for i in range(items):
                    self.body(*args, items, i)
                return self.body(*args, items, items)
            except Exception as exc:  # as a compiled body reports a failing item: the same error either way
                raise RuntimeError(f"npnorm: kernel {self.py_func.__qualname__} failed in a parallel run") from exc
        return self.body(*args, items, ON_THREADS)

    def runs_parallel(self, size: int) -> bool:
        """Whether :meth:`launch` runs ``size`` elements on numba's threads (callers that allocate for it)."""
        return size >= SERIAL_BELOW and not _serial_only

    def launch(self, size: int, items: int, *args):
        """Serial below ``SERIAL_BELOW`` elements (``size``), else parallel (see the class for ``items``)."""
        # the test of runs_parallel(size), written out: this is every small kernel call's path
        if size < SERIAL_BELOW or _serial_only:
            return self.body(*args, items or 1, -1)  # = self.serial(...), one Python call fewer
        if _layer_is_thread_safe:  # = call_parallel(self.parallel, ...) once numba's pool takes any thread
            return self.body(*args, items or row_items(size), ON_THREADS)
        return call_parallel(self.parallel, items or row_items(size), *args)

    @property
    def dispatchers(self):
        """The numba dispatchers of this kernel: its body (the launcher is shared, ``_jit._launcher``)."""
        return (self.body,)

    def __repr__(self) -> str:
        return f"<ChunkedKernel {self.py_func.__qualname__}>"


def chunked_kernel(fastmath=False, noalias=False):
    """Decorator: ``@chunked_kernel()`` turns a kernel body into a :class:`ChunkedKernel` (options: :func:`kernel`)."""

    def decorate(py_func):
        return ChunkedKernel(py_func, fastmath=fastmath, noalias=noalias)

    return decorate


# --- entry ---------------------------------------------------------------------------------------------

_parallel_entry = threading.Lock()
_layer_is_thread_safe = False  # becomes True once numba reports "tbb" or "omp"
# True in a child forked after its parent started GNU OpenMP's pool: it must not enter OpenMP (a module
# global, not a call, as it is read on every launch). Set here too, for a child that imports this module
# after the fork, its parent having started the pool through npnorm.get_num_threads() alone.
_serial_only = _threads.forked_from_unsafe_pool()


def _reset_after_fork() -> None:
    """In a forked child: a fresh lock, and serial kernels only if the parent's pool does not survive fork.

    A child forked while another thread held the lock would otherwise inherit it locked, forever. And GNU
    OpenMP kills a forked child that enters a parallel region after its parent started the pool
    (_threads.forked_from_unsafe_pool, whose handler was registered first and has run by now).
    """
    global _parallel_entry, _serial_only
    _parallel_entry = threading.Lock()
    _serial_only = _threads.forked_from_unsafe_pool()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _check_threading_layer() -> None:
    global _layer_is_thread_safe
    if numba.config.DISABLE_JIT:
        # Plain Python: parallel runs must keep going through ChunkedKernel.parallel, which runs the items
        # in turn. The shortcut in ChunkedKernel.launch would hand them to the launcher's intrinsic, which
        # cannot run in Python; numba's pool can still start here (numba.set_num_threads starts it).
        return
    try:
        layer = numba.threading_layer()
    except ValueError:  # no thread pool started yet: keep locking
        return
    _layer_is_thread_safe = layer in _THREAD_SAFE_LAYERS


def call_parallel(parallel_kernel, *args):
    """Call a ``parallel=True`` kernel, one Python thread at a time unless numba's layer is thread-safe."""
    if _layer_is_thread_safe:
        return parallel_kernel(*args)
    with _parallel_entry:
        result = parallel_kernel(*args)
        _check_threading_layer()
    return result


# Last, once everything above exists: numba's threads (started by npnorm, with short OpenMP spins: see
# npnorm/_threads.py), then the launcher's slot, which every kernel body links against.
_threads.start_numba_threads()
_register_launcher_slot()
