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

Like the kernels, this module imports numba only when one of its functions is called, so ``import npnorm``
stays fast. Without numba (where impl="numba" falls back to the NumPy reference) there are no kernel
threads: ``get_num_threads()`` is 1 and ``set_num_threads`` only checks its argument.
"""

from __future__ import annotations

import numbers

__all__ = ["get_num_threads", "set_num_threads"]


def _numba():
    """The numba module, or None where it cannot be imported."""
    try:
        import numba
    except ImportError:
        return None
    return numba


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
