"""`WeightNormLinear`: a Linear layer whose weight is re-parametrised as w = g · v/‖v‖, row by row.

The math lives in npnorm/norms/weight_norm.py (Salimans & Kingma 2016); here are only the parameters, their
initialisation and the forward y = x wᵀ + b.
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from . import _checks, init
from .module import Module, Parameter


class WeightNormLinear(Module):
    """y = x wᵀ + b with w_i = g_i · v_i/‖v_i‖ for each output unit i (PyTorch's `weight_norm(Linear)`, dim=0).

    Parameters, with PyTorch's names: `weight_g` g of shape (out_features, 1), `weight_v` v of shape
    (out_features, in_features), and `bias` b of shape (out_features,) (absent with bias=False). v and b are
    drawn as Linear draws its weight and bias (uniform in ±1/√in_features, v first), so the same `rng` gives
    v equal to a Linear's weight; g starts as the row norms ‖v_i‖, so w starts equal to v, as in PyTorch.
    The attribute `weight` is w, recomputed (with its graph) on every read. A zero row of v raises
    ValueError in forward (PyTorch returns NaN). `impl`: "numba" (fused kernels), "numpy" (hand-derived
    reference) or "composed"; None reads NPNORM_IMPL.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, dtype=np.float32, rng=None, impl=None
    ):
        super().__init__()
        who = "WeightNormLinear"
        # in_features = 0 would make every row of v empty, with norm 0 and no direction.
        self.in_features = _checks.size(who, "in_features", in_features, minimum=1)
        self.out_features = _checks.size(who, "out_features", out_features, minimum=0)
        self.impl = _checks.impl(who, impl)
        dtype = _checks.float_dtype(who, dtype)
        self.weight_g = Parameter(np.empty((self.out_features, 1), dtype=dtype))
        self.weight_v = Parameter(np.empty((self.out_features, self.in_features), dtype=dtype))
        if _checks.flag(who, "bias", bias):
            self.bias = Parameter(np.empty(self.out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters(rng)

    def reset_parameters(self, rng=None) -> None:
        gen = _checks.generator("WeightNormLinear", rng)
        bound = 1 / math.sqrt(self.in_features)
        init.uniform_(self.weight_v, -bound, bound, rng=gen)  # v first, then bias: Linear's order of draws
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound, rng=gen)
        v64 = self.weight_v.data.astype(np.float64)
        self.weight_g.data[...] = np.sqrt((v64 * v64).sum(axis=1, keepdims=True))  # g = ‖v‖: w starts as v

    @property
    def weight(self) -> Tensor:
        """w = g · v/‖v‖, shape (out_features, in_features), differentiable in g and v."""
        return F.weight_norm(self.weight_v, self.weight_g, 0, impl=self.impl)

    def forward(self, x) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        if self.impl is not None:
            s += f", impl={self.impl!r}"
        return s
