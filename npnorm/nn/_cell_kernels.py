"""When the fused recurrent cells (``_lstm_cell.py``, ``_gru_cell.py``) can run their backward kernels.

Each cell's backward has a Numba kernel (``npnorm/kernels/lstm_cell.py``, ``gru_cell.py``) and a NumPy twin
that gives the same bits; the kernel runs where numba can run it (``kernels.load_compiled``) and the arrays
fit its one specialisation per dtype (:func:`ready`), the twin everywhere else.
"""

from __future__ import annotations

import numpy as np


def ready(first: np.ndarray, *others: np.ndarray) -> bool:
    """True if the arrays fit the kernels' one specialisation per dtype: all C-contiguous, writable (numba
    types read-only arrays apart) and of ``first``'s dtype (a gradient of another dtype, which the NumPy
    twins would promote, goes to them)."""
    dtype = first.dtype
    for a in (first, *others):
        if a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable:
            return False
    return True
