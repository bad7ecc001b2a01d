"""`npnorm.set_num_threads(n)` and `npnorm.get_num_threads()`: how many threads the Numba kernels use.

Only parallel kernel runs (inputs of at least `kernels._jit.SERIAL_BELOW` elements) use more than one
thread; everything else runs in the calling thread. The number is numba's:

* numba reads the environment variable ``NUMBA_NUM_THREADS`` once, when it is first imported. It is both
  the default and the upper limit (the size of the thread pool), so ``NUMBA_NUM_THREADS=1`` makes every
  kernel single-threaded, and ``set_num_threads`` can lower the number but never raise it above that.
* ``set_num_threads`` applies to the calling Python thread (numba keeps the setting per thread); a thread
  started later begins with the default again. Call it in each thread that runs kernels.

The results do not depend on the number of threads beyond floating-point reassociation: kernels split
rows into chunks that depend only on the input's shape (see kernels/layer_norm.py), never on the threads.

npnorm starts numba's threads itself (:func:`start_numba_threads`, before its first kernel or thread
query), so that GNU OpenMP's idle threads spin only briefly: see the measurements there.

Like the kernels, this module imports numba only when one of its functions is called, so ``import npnorm``
stays fast. Without numba (where impl="numba" falls back to the NumPy reference) there are no kernel
threads: ``get_num_threads()`` is 1 and ``set_num_threads`` only checks its argument.
"""

from __future__ import annotations

import numbers
import os
import sys
import threading

__all__ = ["get_num_threads", "set_num_threads", "start_numba_threads"]

# GNU OpenMP's idle threads spin before they sleep: 300,000 rounds by default, a fraction of a millisecond
# after every parallel region. NumPy's OpenBLAS has a thread pool of its own, and a training loop alternates
# matrix products (OpenBLAS threads) and norm kernels (numba's OpenMP threads). With both pools spinning
# against each other for 2 cores, each parallel region waited for a core to come free: the benchmark's MLP
# training step (64-256-256-10, LayerNorm at 128x256, batch 128, Adam) took 26-30 ms at the default thread
# counts, against 1.0-1.4 ms with either pool limited to one thread (measured 6 December, 2 cores, OpenBLAS
# 0.3.31 pthreads, numba's "omp" layer; the same clash as OpenBLAS issue #3187). GOMP_SPINCOUNT, measured in
# the same way (MLP step | LayerNorm forward+backward at 128x256 | at 1024x1024, ms, two runs each):
#     default (300000)  26-28    | 0.053-0.055 | 0.53-0.63       1000     1.0-1.2 | 0.038-0.041 | 0.55-0.59
#     0 (sleep at once) 1.0      | 0.075-0.077 | 0.66-0.82       3000     1.2-1.6 | 0.038-0.047 | 0.53-0.56
#     300               1.0-1.1  | 0.103-0.105 | 0.61-0.62       100000   19-20   | 0.039-0.054 | 0.55-0.61
# 1000 rounds keep the threads awake across back-to-back kernels (tens of µs) and give the cores back soon
# after. BatchNorm's forward+backward, four kernels with Python in between, read the same with 1000, 2000
# and 3000 rounds (six alternated processes each: medians 0.080-0.082 ms at 256x256, 1.72-1.80 ms at
# 2048x1024) as with the default (0.079-0.126, 1.56-2.35 ms). libgomp reads the setting once, as it is
# loaded, which numba does when it starts its threads.
_GOMP_SPINCOUNT = "1000"
_OPENMP_WAIT_SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")  # either one set: the user's choice stands
_started = False
_start_lock = threading.Lock()
_spin_setting: str | None = None  # what start_numba_threads found and did, see openmp_spin_setting()


# Threading layers whose thread pool survives fork(): a child may start parallel kernels of its own.
_FORK_SAFE_LAYERS = ("tbb", "workqueue")
_forked_from_unsafe_pool = False  # see forked_from_unsafe_pool()


def forked_from_unsafe_pool() -> bool:
    """True in a process forked from one whose numba thread pool was running under a layer that does not
    survive fork(): GNU OpenMP ("omp") kills such a child ("fork() called from a process already using GNU
    OpenMP, this is unsafe") as soon as it enters a parallel region, so the child must run every kernel
    serially. The pool counts from the moment it started, parallel region or not: npnorm starts it on its
    first kernel or thread query (start_numba_threads)."""
    return _forked_from_unsafe_pool


def _after_fork_in_child() -> None:
    global _forked_from_unsafe_pool
    numba = sys.modules.get("numba")  # the parent's numba, if it had one: its pool state is the parent's
    if numba is None or _forked_from_unsafe_pool:
        return
    try:
        layer = numba.threading_layer()
    except ValueError:  # the parent never started the pool: the child may
        return
    _forked_from_unsafe_pool = layer not in _FORK_SAFE_LAYERS


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def start_numba_threads() -> None:
    """Start numba's threading layer (once), with GOMP_SPINCOUNT=1000 unless the user set a wait policy.

    The variable is set only while the layer starts (libgomp reads it as it loads) and removed again, so
    that subprocesses do not inherit it. Without effect if GNU OpenMP was loaded before (torch, for one,
    brings a libgomp.so.1 of its own, which numba then shares: call ``npnorm.get_num_threads()`` before
    ``import torch``, or set GOMP_SPINCOUNT=1000 before Python starts), or if numba's layer is not GNU OpenMP ("tbb" and
    "workqueue" do not read it). Nothing to start without numba or with NUMBA_DISABLE_JIT=1.
    """
    if _started:
        return
    with _start_lock:  # two threads' first kernels at once: one starts the threads, the other waits for it
        _start_once()


def _start_once() -> None:
    global _started, _spin_setting
    if _started:
        return
    try:
        _spin_setting = _start()
    finally:
        _started = True  # only now: another thread's first kernel must not start numba's threads before us


def _start() -> str:
    """Start the threads (see start_numba_threads); what the OpenMP spin setting is now."""
    numba = _numba_module()
    if numba is None or numba.config.DISABLE_JIT:
        return "no threads"
    users = [f"{name}={os.environ[name]}" for name in _OPENMP_WAIT_SETTINGS if name in os.environ]
    if users:
        return f"the user's ({', '.join(users)})"
    if _gnu_openmp_loaded():
        return "GNU OpenMP's default (libgomp was loaded before npnorm started numba's threads)"
    os.environ["GOMP_SPINCOUNT"] = _GOMP_SPINCOUNT
    try:
        numba.get_num_threads()  # starts the threading layer (and loads libgomp) if it is not running yet
    finally:
        del os.environ["GOMP_SPINCOUNT"]
    return f"GOMP_SPINCOUNT={_GOMP_SPINCOUNT} (npnorm's)"


def _gnu_openmp_loaded() -> bool:
    """Whether this process has a libgomp.so.1 loaded already (False where that cannot be asked)."""
    import ctypes

    if not hasattr(os, "RTLD_NOLOAD"):
        return False
    try:
        ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
    except OSError:
        return False
    return True


def openmp_spin_setting() -> str | None:
    """How long GNU OpenMP's idle threads spin in this process, as :func:`start_numba_threads` left it: npnorm's
    setting, the user's, or the default of a libgomp loaded before; None before numba's threads started."""
    return _spin_setting


def _numba_module():
    try:
        import numba
    except ImportError:
        return None
    return numba


def _numba():
    """The numba module with its threads started (:func:`start_numba_threads`), or None without numba."""
    start_numba_threads()
    return _numba_module()


def get_num_threads() -> int:
    """The number of threads a parallel kernel launched from this thread uses (1 without numba)."""
    numba = _numba()
    if numba is None:
        return 1
    return int(numba.get_num_threads())


def set_num_threads(n: int) -> None:
    """Use `n` threads (1 ≤ n ≤ NUMBA_NUM_THREADS) for the parallel kernels launched from this thread."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: n must be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be at least 1, got {n}")
    numba = _numba()
    if numba is None:
        return  # no kernels, no threads: the NumPy fallback runs in the calling thread
    limit = int(numba.config.NUMBA_NUM_THREADS)
    if n > limit:
        raise ValueError(
            f"set_num_threads: n must be between 1 and {limit} (NUMBA_NUM_THREADS, the size of numba's thread "
            f"pool, fixed when numba is imported), got {n}"
        )
    numba.set_num_threads(int(n))
