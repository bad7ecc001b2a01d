"""Numba only; mirrors norms/ (plus Adam's update and the LSTM and GRU cells' backward); never imports Tensor
or autograd.

Each module here holds fused CPU kernels for one norm: pure functions on C-contiguous ndarrays, out-params
first, allocated by the caller. Importing this package imports nothing else (but npnorm/_collector.py, which
needs only the standard library): numba is imported (and kernels
compiled) only when :func:`load` first hands out a kernel module, which takes a noticeable fraction of a
second, so it happens on the first call that needs a kernel, never when npnorm is imported. Where numba
cannot be imported at all, :func:`load` returns None after a single warning, and the callers fall back to
their NumPy twins.
"""

from __future__ import annotations

import importlib
import sys
import warnings

from .. import _collector

_modules: dict = {}  # name -> loaded module, or None where numba is missing
_warned_no_numba = False


def load(name: str):
    """The module npnorm.kernels.<name>, or None (after one warning) when numba cannot be imported."""
    global _warned_no_numba
    if name in _modules:
        return _modules[name]
    before = None if "numba" in sys.modules else set(sys.modules)
    try:
        # Importing numba makes some hundred thousand objects that live as long as the process; collecting
        # garbage among them while they are made only walks them again and again (npnorm/_collector.py).
        # Measured, the first LayerNorm forward+backward from a warm cache: 8 collections, 0.024-0.028 s,
        # against 87 collections, 0.036-0.040 s, with the collector on during this import.
        with _collector.paused():
            module = importlib.import_module(f"{__name__}.{name}")
    except KeyboardInterrupt:
        if before is not None:
            _forget_modules_since(before)
        raise
    except ImportError as exc:
        if not _is_missing_numba(exc):
            raise
        module = None
        if not _warned_no_numba:
            _warned_no_numba = True
            warnings.warn(
                f"npnorm: numba cannot be imported ({exc}); impl='numba' falls back to the NumPy reference",
                RuntimeWarning,
                stacklevel=3,
            )
    _modules[name] = module
    return module


# Packages imported before numba whose C extensions must not be imported twice in one process.
_NEVER_FORGOTTEN = ("numpy",)


def _forget_modules_since(before: set) -> None:
    """Drop the modules imported since ``before`` from ``sys.modules``: a Ctrl-C in the first kernel call lands
    in numba's import most of the time (it takes a few tenths of a second), and left numba and its dependencies
    half-initialised in sys.modules, so that every later numba call in the process failed ("module 'numba' has
    no attribute 'core'"). Forgotten, they are imported afresh by the next call, which then works."""
    for module_name in [m for m in sys.modules if m not in before]:
        if module_name.partition(".")[0] not in _NEVER_FORGOTTEN:
            del sys.modules[module_name]


def load_compiled(name: str):
    """The module npnorm.kernels.<name>, or None where numba is missing or NUMBA_DISABLE_JIT is set.

    For the kernels that have a NumPy twin giving the same bits (Adam's update, the recurrent cells'
    backward): under NUMBA_DISABLE_JIT such a kernel would run as a Python loop over every element, and the
    twin is the faster way to the same numbers. Each such module sets ``JIT_DISABLED``.
    """
    module = load(name)
    if module is None or module.JIT_DISABLED:
        return None
    return module


def _is_missing_numba(exc: ImportError) -> bool:
    missing = getattr(exc, "name", None) or ""
    return missing.split(".")[0] in ("numba", "llvmlite")
