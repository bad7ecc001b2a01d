"""Python's cyclic garbage collector, paused while numba compiles.

Numba makes and drops several hundred thousand objects per compiled kernel (IR, types, LLVM wrappers), many
of them in reference cycles, so during a compile the collector runs hundreds of times, and its full
collections walk every object numba holds. That was about a tenth of a compile: 1.0-1.2 s of one warm-up
process's 9-10 s (timed with ``gc.callbacks``). Nothing in a compile depends on when garbage is collected.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused"]


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off for the block, and afterwards as it was before (also after an error).

    The garbage of the block stays until the next collection after it. A caller that disabled the collector
    itself keeps it disabled.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
