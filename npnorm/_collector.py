"""Python's cyclic garbage collector, paused while numba compiles.

Numba makes and drops several hundred thousand objects per compiled kernel (IR, types, LLVM wrappers), many
of them in reference cycles, so during a compile the collector runs hundreds of times, and its full
collections walk every object numba holds. That was about a tenth of a compile: 1.0-1.2 s of one warm-up
process's 9-10 s (timed with ``gc.callbacks``). Nothing in a compile depends on when garbage is collected.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

__all__ = ["paused"]

# The collector is one switch for the whole process, and threads may compile at once: the first block in
# turns it off and the last one out restores it. Each block reading and restoring the switch on its own lost
# it: a block entered while another had it off read "off", and left it off for good.
_lock = threading.Lock()
_depth = 0  # blocks inside now, in all threads
_restore = False  # whether the collector was on when the first of them entered
_local = threading.local()  # .depth: the blocks this thread is inside (a fork child keeps only its own)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off for the block, and afterwards as it was before (also after an error).

    The garbage of the block stays until the next collection after it. A caller that disabled the collector
    itself keeps it disabled. Blocks in several threads at once keep it off until the last one leaves.
    """
    global _depth, _restore
    with _lock:
        if _depth == 0:
            _restore = gc.isenabled()
            gc.disable()
        _depth += 1
        _local.depth = _blocks_of_this_thread() + 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            _local.depth -= 1
            if _depth == 0 and _restore:
                gc.enable()


def _after_fork_in_child() -> None:
    """A fork child has only the forking thread: blocks that other threads were inside (compiling) will never
    be left there, and would keep the child's collector off for good. Blocks of the forking thread itself stay
    counted; their exits restore the collector as usual. (The lock is new: another thread may have held it.)"""
    global _lock, _depth, _restore
    _lock = threading.Lock()
    ours = _blocks_of_this_thread()
    if _depth and not ours and _restore:
        gc.enable()
    _depth = ours


def _blocks_of_this_thread() -> int:
    return getattr(_local, "depth", 0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
