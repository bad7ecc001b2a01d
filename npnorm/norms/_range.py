"""Statistics that overflow float64: a clear error instead of an output of zeros.

A finite float64 input overflows a sum of squares once its values spread beyond about 1.3e154, the square
root of float64's largest number: LayerNorm's, AdaNorm's, GroupNorm's and BatchNorm's variance, RMSNorm's
mean square, weight norm's squared norm. Normalized by that infinite spread, every value of the row would
come out 0 (LayerNorm's output would be β), an answer that looks plausible and is wrong; PyTorch returns NaN
for LayerNorm and 0 for RMSNorm there. float32 inputs never get there: their statistics are formed in float64,
where the square of any float32 is finite. Inputs holding inf or NaN are not refused: their variance is NaN
(their mean square or norm inf, which the callers tell apart by looking at the row), and NaN flows on to the
output as it should.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def row(i: int) -> str:
    """How an error names unit i by default."""
    return f"row {i}"


def refuse_overflow(who: str, stat: str, overflowed: np.ndarray, unit: Callable[[int], str] = row) -> None:
    """OverflowError naming the first unit (row, group, channel: ``unit(flat index)``) where ``overflowed``."""
    if overflowed.any():
        i = int(np.flatnonzero(overflowed.reshape(-1))[0])
        raise OverflowError(
            f"{who}: the {stat} of {unit(i)} overflows float64 (values beyond about 1e154 in size or spread), "
            "so it would normalize to 0; scale the input down"
        )


def refuse_overflow_of_finite(
    who: str, stat: str, infinite: np.ndarray, values: np.ndarray, axes, unit: Callable[[int], str] = row
) -> None:
    """The same for a sum of squares (a mean square, a squared norm), which is infinite also for a unit that
    holds ±inf: no error, NaN flows on from there. ``infinite`` flags the units whose statistic is infinite, in
    any layout of ``values`` reduced over ``axes`` (kept or dropped); only those whose values are all finite
    overflowed. ``values`` is looked at only when some unit is flagged."""
    if infinite.any():
        refuse_overflow(who, stat, infinite.reshape(-1) & np.isfinite(values).all(axis=axes).reshape(-1), unit)


_FLOAT64 = np.dtype(np.float64)  # the one native float64 dtype, which every float64 Tensor holds


def refuse_overflowed_rstd(who: str, stat: str, rstd: np.ndarray, eps: float, dtype, unit=row, rows=None) -> None:
    """The same, from a float64 input's 1/sqrt(stat + eps): 0 exactly where the statistic overflowed (eps
    finite; an infinite eps scales every row to 0 by itself). Skipped for float32 inputs, which cannot get there.
    A mean square is also infinite for a row holding ±inf, which is no error: pass the (N, H) `rows` to
    leave those out.

    On every norm call, so the cheapest tests first: 0.1 µs for a float32 call, 1.6 µs for a float64 one
    (`rstd.all()`, NaN counting as true), the mask only once that finds a zero.
    """
    if dtype is _FLOAT64 and eps < math.inf and not rstd.all():
        if rows is None:
            refuse_overflow(who, stat, rstd == 0, unit)
        else:
            refuse_overflow_of_finite(who, stat, rstd == 0, rows, 1, unit)
