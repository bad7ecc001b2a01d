"""Large kernel outputs come from a pool of buffers that are reused once nobody can see them any more.

Why: a fresh NumPy array of more than a few hundred KiB is mapped fresh from the operating system (glibc's
malloc uses mmap for large blocks and unmaps them on free), so the first write to each page faults and the
kernel zeroes it. For a 32 MiB float32 output that costs more than the normalization itself: measured here,
``x.copy()`` into a new 64 MiB array runs at 22 GB/s against 40 GB/s into an existing one, and LayerNorm
forward+backward at 8192x1024 spent about 3 ms of its 7.4 ms in page faults of y and dx. A training loop
asks for the same shapes at every step, and the output of step t is usually garbage by step t+1.

How: the pool keeps the arrays that own the memory and hands out a fresh view of one (``buffer.view()``). A
buffer is free again when the pool's reference is the only one left. Every NumPy view holds a reference to
the array that owns the memory (a view of a view points at the owner, not at the middle array), and so does
every Tensor, saved tensor and gradient; so "the pool is the only holder" means no Python object can read or
write those bytes, and handing them out again is invisible. A view per call, not the owner itself, so that what
a caller does to the array object it got (a weak reference to it, ``setflags(write=False)``) stays with that
object: handing out the owner again, a weak reference to an earlier result came back to life holding another
call's output, and a result made read-only broke the next kernel writing into it. Until then the buffer is
simply not reused. Reused buffers hold stale values, exactly like ``np.empty``: only outputs that a kernel
overwrites completely come from here.

Limits: only arrays of at least :data:`MIN_BYTES` (smaller ones come from malloc's reusable heap anyway) and
at most :data:`MAX_POOL_BYTES` held in all; when a new buffer does not fit, free buffers are dropped, oldest
first, and if it still does not fit it is allocated outside the pool. ``NPNORM_BUFFER_POOL=0`` turns the pool
off (every call is then a plain ``np.empty``); :func:`clear` drops every free buffer.
"""

from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np

__all__ = ["MAX_POOL_BYTES", "MIN_BYTES", "clear", "empty", "empty_like", "held_bytes"]

MIN_BYTES = 1 << 20  # 1 MiB
MAX_POOL_BYTES = 1 << 30  # 1 GiB held (in use or free) at most

_enabled = os.environ.get("NPNORM_BUFFER_POOL", "1") != "0"
_lock = threading.Lock()
_pool: list[np.ndarray] = []  # oldest first
_held = 0  # bytes of the buffers in _pool


def _refs_when_free() -> int:
    """sys.getrefcount of a pooled array that nothing but the pool's list refers to, as _take counts it."""
    probe = [np.empty(1)]
    return sys.getrefcount(probe[0])


_FREE_REFS = _refs_when_free()


def empty(shape, dtype) -> np.ndarray:
    """An uninitialized C-contiguous array, like ``np.empty(shape, dtype)``, from the pool if large."""
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if not _enabled or nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        return _take(shape, dtype, nbytes)


def empty_like(a: np.ndarray) -> np.ndarray:
    """``empty(a.shape, a.dtype)``."""
    if a.nbytes < MIN_BYTES:
        return np.empty(a.shape, a.dtype)
    return empty(a.shape, a.dtype)


def _take(shape: tuple, dtype: np.dtype, nbytes: int) -> np.ndarray:
    global _held
    for i in range(len(_pool)):
        if _pool[i].shape == shape and _pool[i].dtype == dtype and sys.getrefcount(_pool[i]) == _FREE_REFS:
            return _pool[i].view()
    # no free buffer of this shape: make room by dropping free buffers of other shapes, oldest first
    i = 0
    while _held + nbytes > MAX_POOL_BYTES and i < len(_pool):
        if sys.getrefcount(_pool[i]) == _FREE_REFS:
            _held -= _pool.pop(i).nbytes
        else:
            i += 1
    buffer = np.empty(shape, dtype)
    if _held + nbytes <= MAX_POOL_BYTES:
        _pool.append(buffer)
        _held += nbytes
        return buffer.view()
    return buffer


def clear() -> None:
    """Drop every free buffer (buffers still in use stay until they are free and then get reused or dropped)."""
    global _held
    with _lock:
        i = 0
        while i < len(_pool):
            if sys.getrefcount(_pool[i]) == _FREE_REFS:
                _held -= _pool.pop(i).nbytes
            else:
                i += 1


def held_bytes() -> int:
    """Bytes of the buffers the pool refers to, in use or free."""
    return _held


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
