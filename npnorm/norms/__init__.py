"""One file per norm: its math, its NumPy reference, its engine binding, its composed variant."""

from ._dispatch import IMPLS

__all__ = ["IMPLS"]
